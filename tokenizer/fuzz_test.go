package tokenizer

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/lukv/lukv/loader"
)

// FuzzParse: arbitrary bytes never make Parse panic, and whatever it
// accepts can encode, decode and stream-decode without panicking, with the
// stream equal to Decode. Seeds: testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		tok, err := Parse(data, "fuzz.json")
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz.json") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		ids := tok.Encode("Hi <s> there, it's 12345 \u00e9\u65e5\U0001F600\n\t  <|x|>", true)
		for _, id := range ids {
			if id < 0 || id >= tok.VocabSize() {
				t.Fatalf("Encode produced id %d outside [0, %d)", id, tok.VocabSize())
			}
		}
		// Ids from the input bytes, to reach arbitrary tokens.
		for k := 0; k+1 < len(data) && k < 64; k += 2 {
			ids = append(ids, int(data[k])<<8|int(data[k+1])-1)
		}
		for _, skip := range []bool{false, true} {
			want := tok.Decode(ids, skip)
			got, _ := streamDecode(tok, ids, skip)
			if got != want {
				t.Fatalf("stream %q != Decode %q", got, want)
			}
		}
	})
}

// FuzzEncodeDecode: byte-level tokenizers give back any valid UTF-8 text,
// and stream decoding equals Decode. Seeds: testdata/fuzz/FuzzEncodeDecode.
func FuzzEncodeDecode(f *testing.F) {
	names := []string{"gpt2_tiny", "llama3_tiny"}
	toks := []*Tokenizer{loadFixture(f, names[0], nil), loadFixture(f, names[1], nil)}
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			return
		}
		for k, tok := range toks {
			ids := tok.Encode(s, false)
			if got := tok.Decode(ids, false); got != s {
				t.Fatalf("%s: %q decodes back to %q (ids %v)", names[k], s, got, ids)
			}
			if got, _ := streamDecode(tok, ids, false); got != s {
				t.Fatalf("%s: %q stream-decodes to %q", names[k], s, got)
			}
		}
	})
}

// FuzzSentencePieceGGUF builds SentencePiece vocabularies from arbitrary pieces, scores
// and types (a GGUF file's tokenizer.ggml.* lists) and encodes and decodes text with
// them: an error naming the file or ids in range, never a panic.
func FuzzSentencePieceGGUF(f *testing.F) {
	f.Add("▁\nt\nh\ne\nhe\nthe\n▁the", []byte{1, 2, 3, 4, 5, 6, 7}, "the the")
	f.Add("<unk>\n<s>\n<0x41>\na\nab", []byte{2, 3, 6, 1, 4}, "abA b")
	f.Fuzz(func(t *testing.T, pieces string, meta []byte, text string) {
		v := &loader.GGUFVocab{Model: "llama", BOS: -1}
		for i, p := range strings.Split(pieces, "\n") {
			if i >= 512 {
				break
			}
			b := byte(i)
			if i < len(meta) {
				b = meta[i]
			}
			v.Tokens = append(v.Tokens, p)
			v.Scores = append(v.Scores, float32(int8(b)))
			v.Types = append(v.Types, int32(b%7))
		}
		tok, err := FromGGUF(v, "fuzz.gguf")
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz.gguf") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		ids := tok.Encode(text, true)
		for _, id := range ids {
			if id < 0 || id >= tok.VocabSize() {
				t.Fatalf("Encode produced id %d outside [0, %d)", id, tok.VocabSize())
			}
		}
		tok.Decode(ids, false)
	})
}
