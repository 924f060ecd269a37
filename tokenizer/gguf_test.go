package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lukv/lukv/loader"
)

// A byte-level tokenizer.json taken to GGUF's lists and back encodes and decodes the
// Hugging Face goldens exactly as tokenizer.json does.
func TestGGUFTokenizerMatchesGoldens(t *testing.T) {
	for name, pre := range map[string]string{"bytelevel_gpt2": "gpt-2", "bytelevel_llama3": "llama-bpe", "bytelevel_qwen2": "qwen2"} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join("..", "tests", "testdata", "tokenizers")
			data, err := os.ReadFile(filepath.Join(dir, name+".tokenizer.json"))
			if err != nil {
				t.Fatal(err)
			}
			v, err := GGUFVocabFromJSON(data, name)
			if err != nil {
				t.Fatal(err)
			}
			if v.Pre != pre || v.Model != "gpt2" {
				t.Errorf("model %q pre %q, want gpt2 %q", v.Model, v.Pre, pre)
			}
			tok, err := FromGGUF(v, name+".gguf")
			if err != nil {
				t.Fatal(err)
			}
			var golden struct {
				Cases []struct {
					Text       string `json:"text"`
					IDs        []int  `json:"ids"`
					IDsSpecial []int  `json:"ids_special"`
					Decoded    string `json:"decoded"`
				} `json:"cases"`
			}
			g, err := os.ReadFile(filepath.Join(dir, name+".golden.json"))
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(g, &golden); err != nil {
				t.Fatal(err)
			}
			for _, c := range golden.Cases {
				if got := tok.Encode(c.Text, false); !slices.Equal(got, c.IDs) {
					t.Errorf("%q: %v, want %v", c.Text, got, c.IDs)
				}
				if got := tok.Encode(c.Text, true); !slices.Equal(got, c.IDsSpecial) {
					t.Errorf("%q with specials: %v, want %v", c.Text, got, c.IDsSpecial)
				}
				if got := tok.Decode(c.IDs, false); got != c.Decoded {
					t.Errorf("decode %v: %q, want %q", c.IDs, got, c.Decoded)
				}
			}
		})
	}
}

func TestGGUFTokenizerErrors(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "tests", "testdata", "tokenizers", "sp_bytefallback.tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := GGUFVocabFromJSON(data, "sp"); err == nil || !strings.Contains(err.Error(), "byte-level") {
		t.Errorf("SentencePiece-style tokenizer.json: %v, want an error saying it is not byte-level", err)
	}
	ok := func() *loader.GGUFVocab {
		return &loader.GGUFVocab{Model: "gpt2", Pre: "gpt-2", Tokens: []string{"a", "b", "ab"}, Merges: []string{"a b"}, BOS: -1}
	}
	yes := true
	for _, c := range []struct {
		edit func(v *loader.GGUFVocab)
		says string
	}{
		{func(v *loader.GGUFVocab) { v.Model = "llama" }, "tokenizer.ggml.scores: 0 scores for 3 tokens"}, // SentencePiece needs scores
		{func(v *loader.GGUFVocab) { v.Model = "bert" }, `tokenizer.ggml.model "bert"`},
		{func(v *loader.GGUFVocab) { v.Pre = "deepseek-llm" }, `tokenizer.ggml.pre "deepseek-llm"`},
		{func(v *loader.GGUFVocab) { v.Tokens = []string{"a", "a"} }, "appears twice"},
		{func(v *loader.GGUFVocab) { v.Merges = []string{"ab"} }, "merges[0]"},
		{func(v *loader.GGUFVocab) { v.AddBOS = &yes }, "bos_token_id"},
		{func(v *loader.GGUFVocab) { v.Types = []int32{1} }, "token types"},
	} {
		v := ok()
		c.edit(v)
		if _, err := FromGGUF(v, "x.gguf"); err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: error %v", c.says, err)
		}
	}
	tok, err := FromGGUF(ok(), "x.gguf")
	if err != nil {
		t.Fatal(err)
	}
	if got := tok.Encode("ab", true); !slices.Equal(got, []int{2}) {
		t.Errorf("gpt-2 without add_bos_token: %v, want [2]", got)
	}
}
