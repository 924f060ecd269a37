// Package tokenizer reads Hugging Face tokenizer.json files and encodes and
// decodes text the way the Python `tokenizers` library does, for the BPE
// tokenizers of the Llama family: byte-level BPE (GPT-2, Llama-3, Qwen2/3)
// and SentencePiece-style BPE with byte fallback (Llama-2, Mistral).
//
// Encoding follows HF's pipeline: added tokens are cut out of the raw text
// first (and never split), the rest is normalized, pre-tokenized into
// words, and every word goes through the BPE model; the post-processor adds
// BOS and the like when asked to. Decoding runs HF's decoder chain. Offsets,
// truncation, padding and pairs of sequences are not implemented: the
// runtime needs ids and text only.
//
// gotokenizers (github.com/nlpodyssey/gotokenizers) provides the BPE merge
// table; the parts it cannot serve are written here, and each says why
// (patterns.go, bpe.go).
package tokenizer

import (
	"fmt"
	"os"
	"strings"
)

// Tokenizer is a loaded tokenizer.json. It is safe for concurrent use.
type Tokenizer struct {
	// idToToken[id] is the token string of id (added token content first,
	// then the model vocabulary); known[id] tells whether id exists.
	idToToken []string
	known     []bool
	// special[id]: id's string is the content of a special added token.
	special  []bool
	addedIDs map[string]int // added token content -> id

	rawAdded   *addedMatcher // added tokens matched in the raw text
	normAdded  *addedMatcher // added tokens matched in the normalized text
	normalizer normalizer    // nil: none
	preTok     preTokenizer  // nil: the whole piece is one word
	model      *bpeModel
	// template: the ids around the sequence when addSpecial is set; nil
	// (no post-processor, or ByteLevel) adds nothing.
	template *template
	decoders []decoderStep
}

// template is a single-sequence post-processing template: prefix, the
// sequence, suffix.
type template struct {
	prefix, suffix []int
}

// Load reads and parses a tokenizer.json file.
func Load(path string) (*Tokenizer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	return Parse(data, path)
}

// VocabSize returns the size of the id space: one more than the largest id
// of the model vocabulary and the added tokens.
func (t *Tokenizer) VocabSize() int { return len(t.idToToken) }

// TokenID returns the id of a token string (an added token's content or a
// model vocabulary entry).
func (t *Tokenizer) TokenID(token string) (int, bool) {
	if id, ok := t.addedIDs[token]; ok {
		return id, true
	}
	id, ok := t.model.vocab[token]
	return id, ok
}

// Token returns the string of id, "" if id is unknown.
func (t *Tokenizer) Token(id int) string {
	if id < 0 || id >= len(t.idToToken) {
		return ""
	}
	return t.idToToken[id]
}

// IsSpecial reports whether id is a special token (an added token marked
// special, such as BOS, EOS or chat markers). Decode and StreamDecoder skip
// these when asked to.
func (t *Tokenizer) IsSpecial(id int) bool {
	return id >= 0 && id < len(t.special) && t.special[id]
}

// Encode returns the ids of text. With addSpecial the post-processor's
// template is applied (e.g. BOS in front for Llama), as Python's
// add_special_tokens=True.
func (t *Tokenizer) Encode(text string, addSpecial bool) []int {
	var ids []int
	if addSpecial && t.template != nil {
		ids = append(ids, t.template.prefix...)
	}
	segs := t.rawAdded.split(text, true, nil)
	var normSegs []segment
	var pieces []piece
	for _, sg := range segs {
		if sg.tok != nil {
			ids = append(ids, sg.tok.id)
			continue
		}
		s := sg.text
		if t.normalizer != nil {
			s = t.normalizer.normalize(s)
		}
		normSegs = t.normAdded.split(s, sg.first, normSegs[:0])
		for _, ns := range normSegs {
			if ns.tok != nil {
				ids = append(ids, ns.tok.id)
				continue
			}
			pieces = append(pieces[:0], piece{ns.text, ns.first})
			if t.preTok != nil {
				pieces = t.preTok.preTokenize(pieces)
			}
			for _, p := range pieces {
				ids = t.model.tokenize(p.text, ids)
			}
		}
	}
	if addSpecial && t.template != nil {
		ids = append(ids, t.template.suffix...)
	}
	return ids
}

// tokenOf returns the token string that Decode works on for id; unknown ids
// are dropped, and special ones with skipSpecial (as HF).
func (t *Tokenizer) tokenOf(id int, skipSpecial bool) (string, bool) {
	if id < 0 || id >= len(t.idToToken) || !t.known[id] || (skipSpecial && t.special[id]) {
		return "", false
	}
	return t.idToToken[id], true
}

// Decode returns the text of ids, as Python's decode(ids,
// skip_special_tokens=skipSpecial). Unknown ids are ignored.
func (t *Tokenizer) Decode(ids []int, skipSpecial bool) string {
	tokens := make([]string, 0, len(ids))
	for _, id := range ids {
		if tok, ok := t.tokenOf(id, skipSpecial); ok {
			tokens = append(tokens, tok)
		}
	}
	for _, d := range t.decoders {
		tokens = d.decodeChain(tokens)
	}
	return strings.Join(tokens, "")
}

// StreamDecoder turns ids into text one id at a time, for streaming
// generation. Next returns only text that is final: an incomplete UTF-8
// sequence (half an emoji across byte-level tokens, or a run of "<0xNN>"
// byte-fallback tokens) and anything a decoder may still strip is held back
// until later ids settle it, or until Flush. The concatenation of all Next
// results and Flush equals Decode of the whole sequence. Not safe for
// concurrent use.
type StreamDecoder struct {
	t           *Tokenizer
	skipSpecial bool
	stages      []streamStage
	emit        []emitFunc // emit[k] feeds stage k; emit[len(stages)] collects output
	out         []byte
}

// NewStreamDecoder returns a StreamDecoder for a new sequence.
func (t *Tokenizer) NewStreamDecoder(skipSpecial bool) *StreamDecoder {
	d := &StreamDecoder{t: t, skipSpecial: skipSpecial}
	d.reset()
	return d
}

func (d *StreamDecoder) reset() {
	n := len(d.t.decoders)
	d.stages = make([]streamStage, n)
	for k, dec := range d.t.decoders {
		d.stages[k] = dec.stream()
	}
	d.emit = make([]emitFunc, n+1)
	d.emit[n] = func(f fragment) { d.out = append(d.out, f.text...) }
	for k := n - 1; k >= 0; k-- {
		stage, next := d.stages[k], d.emit[k+1]
		d.emit[k] = func(f fragment) { stage.push(f, next) }
	}
}

// Next adds one id and returns the text that became final.
func (d *StreamDecoder) Next(id int) string {
	tok, ok := d.t.tokenOf(id, d.skipSpecial)
	if !ok {
		return ""
	}
	d.out = d.out[:0]
	d.emit[0](fragment{tok, true, true})
	return string(d.out)
}

// Flush ends the sequence and returns all text still held back. The decoder
// is then ready for a new sequence.
func (d *StreamDecoder) Flush() string {
	d.out = d.out[:0]
	for k, s := range d.stages {
		s.flush(d.emit[k+1])
	}
	text := string(d.out)
	d.reset()
	return text
}
