package tokenizer

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"github.com/lukv/lukv/loader"
)

// spmVocab is a small SentencePiece vocabulary as Llama 2's is laid out: <unk>, <s>,
// </s>, the 256 byte tokens, then pieces with scores (higher merges first).
func spmVocab() (tokens []string, scores []float32, types []int32) {
	add := func(tok string, score float32, typ int32) {
		tokens, scores, types = append(tokens, tok), append(scores, score), append(types, typ)
	}
	add("<unk>", 0, loader.GGUFTokenUnknown)
	add("<s>", 0, loader.GGUFTokenControl)
	add("</s>", 0, loader.GGUFTokenControl)
	for b := range 256 {
		add(fmt.Sprintf("<0x%02X>", b), 0, loader.GGUFTokenByte)
	}
	for _, p := range []struct {
		piece string
		score float32
	}{
		{"▁", -1}, {"t", -2}, {"h", -3}, {"e", -4}, {"l", -5}, {"o", -6}, {"c", -7}, {"a", -7.5},
		{"ho", -8.5}, {"he", -9}, {"th", -10}, {"▁th", -11}, {"the", -12}, {"▁the", -13},
		{"▁c", -16}, {"at", -17},
	} {
		add(p.piece, p.score, loader.GGUFTokenNormal)
	}
	return
}

// writeSPM writes the vocabulary as a GGUF file's tokenizer metadata (with the GGUF
// writer) and reads it back as lukv-run does.
func writeSPM(t *testing.T, extra ...loader.GGUFKV) *Tokenizer {
	t.Helper()
	tokens, scores, types := spmVocab()
	path := filepath.Join(t.TempDir(), "spm.gguf")
	kvs := append([]loader.GGUFKV{
		{Key: "general.architecture", Value: "llama"},
		{Key: "tokenizer.ggml.model", Value: "llama"},
		{Key: "tokenizer.ggml.tokens", Value: tokens},
		{Key: "tokenizer.ggml.scores", Value: scores},
		{Key: "tokenizer.ggml.token_type", Value: types},
		{Key: "tokenizer.ggml.bos_token_id", Value: uint32(1)},
		{Key: "tokenizer.ggml.eos_token_id", Value: uint32(2)},
		{Key: "tokenizer.ggml.unknown_token_id", Value: uint32(0)},
	}, extra...)
	if err := loader.WriteGGUF(path, kvs, nil); err != nil {
		t.Fatal(err)
	}
	g, err := loader.OpenGGUF(path)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	v, err := g.Vocab()
	if err != nil {
		t.Fatal(err)
	}
	tok, err := FromGGUF(v, path)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// The expectations are derived by hand from SentencePiece's rule (merge the adjacent
// pair whose merged piece scores highest, until none is in the vocabulary):
//
//	"the cat" -> ▁the▁cat -> ▁ t h e ▁ c a t; he (-9) first: ▁ t he ▁ c a t; then the
//	(-12): ▁ the ▁ c a t; ▁the (-13); ▁c (-16); at (-17): ▁the ▁c at
//	"tho" -> ▁ t h o; ho (-8.5) beats th (-10): ▁ t ho, and no ▁t or tho: ▁ t ho
//	"tü" -> ▁ t ü; ü is not a piece: its UTF-8 bytes C3 BC as byte tokens
func TestSentencePieceGGUF(t *testing.T) {
	tok := writeSPM(t)
	id := func(piece string) int {
		i, ok := tok.TokenID(piece)
		if !ok {
			t.Fatalf("no token %q", piece)
		}
		return i
	}
	for _, c := range []struct {
		text string
		want []int
	}{
		{"the cat", []int{1, id("▁the"), id("▁c"), id("at")}},
		{"tho", []int{1, id("▁"), id("t"), id("ho")}},
		{"tü", []int{1, id("▁"), id("t"), id("<0xC3>"), id("<0xBC>")}},
		{"the</s>", []int{1, id("▁the"), 2}},
	} {
		got := tok.Encode(c.text, true)
		if !slices.Equal(got, c.want) {
			t.Errorf("Encode(%q) = %v, want %v", c.text, got, c.want)
		}
		if back := tok.Decode(got, true); back != c.text && c.text != "the</s>" {
			t.Errorf("Decode(Encode(%q)) = %q", c.text, back)
		}
	}
	if got := tok.Decode([]int{id("▁the"), id("▁"), id("▁c"), id("at")}, false); got != "the  cat" {
		t.Errorf("decode with a lone ▁: %q, want %q", got, "the  cat")
	}

	// Without the space prefix "the" is one word with no ▁ in front.
	noPrefix := writeSPM(t, loader.GGUFKV{Key: "tokenizer.ggml.add_space_prefix", Value: false})
	if got, want := noPrefix.Encode("the", false), []int{id("the")}; !slices.Equal(got, want) {
		t.Errorf("without add_space_prefix: Encode(\"the\") = %v, want %v", got, want)
	}
}

func TestSentencePieceGGUFErrors(t *testing.T) {
	tokens, scores, types := spmVocab()
	for name, v := range map[string]*loader.GGUFVocab{
		"no scores": {Model: "llama", Tokens: tokens, Types: types, BOS: -1},
		"no types":  {Model: "llama", Tokens: tokens, Scores: scores, BOS: -1},
		"bad model": {Model: "wordpiece", Tokens: tokens, Scores: scores, Types: types, BOS: -1},
	} {
		if _, err := FromGGUF(v, "x.gguf"); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
