package generate

import "github.com/lukv/lukv/tokenizer"

// TextStream is Generate's token-to-text step on its own, for callers that run the model
// themselves (the server's scheduler): it decodes tokens, holds back text that could
// still become a stop string, and reports when one has appeared.
type TextStream struct{ s *stopStream }

// NewTextStream decodes with tok (skipping special tokens) and streams final pieces of
// text to onText (may be nil).
func NewTextStream(tok *tokenizer.Tokenizer, stops []string, onText func(piece string)) *TextStream {
	return &TextStream{newStopStream(tok.NewStreamDecoder(true), stops, onText)}
}

// Push adds a generated token; it reports whether a stop string has appeared (the
// generation should end; the text is cut before it).
func (t *TextStream) Push(id int) bool { return t.s.push(id) }

// Finish flushes what was held back and returns the whole text, cut at a stop string.
func (t *TextStream) Finish() string { return t.s.finish() }
