package tests

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/lukv/lukv/backend/cpu"
	"github.com/lukv/lukv/generate"
	"github.com/lukv/lukv/loader"
	"github.com/lukv/lukv/model"
	"github.com/lukv/lukv/tokenizer"
)

// maxRelLogitErr bounds a quantized type's logit error on the default model: the largest
// logit difference over the golden prompt's positions, divided by the largest logit
// there; minSameTokens is how many of the 16 greedy tokens must equal the safetensors
// model's. Measured 2026-12-04 on this CPU (see the log lines): Q8_0 1.2e-2 and 16 tokens,
// Q6_K 2.7e-2 and 16, Q4_K 0.20 and 8 (lukv's plain min/max k-quant encoder on every
// matrix, the tied embedding and LM head included; down_proj's rows of 704 values are not
// whole 256-value blocks and fall back to Q8_0). The bounds leave room for kernels that
// sum in another order.
var (
	maxRelLogitErr = map[loader.GGMLType]float64{loader.GGMLQ8_0: 3e-2, loader.GGMLQ6_K: 6e-2, loader.GGMLQ4_K: 0.35}
	minSameTokens  = map[loader.GGMLType]int{loader.GGMLQ8_0: 16, loader.GGMLQ6_K: 16, loader.GGMLQ4_K: 4}
)

// TestGGUFRoundTrip converts the default model to GGUF with lukv-run convert's library
// call and runs it from the file: F32 and BF16 (the checkpoint is bf16) give bit-identical
// logits, F16 the same greedy tokens, Q8_0, Q6_K and Q4_K logits within maxRelLogitErr. The tokenizer
// stored in the file encodes the prompt as tokenizer.json does.
func TestGGUFRoundTrip(t *testing.T) {
	dir := filepath.Join("..", "models", "lukv-tiny")
	g, _, _ := readGolden(t, filepath.Join("testdata", "lukv-tiny"))
	ref, refTok := loadDir(t, dir)
	ctx := context.Background()
	forward := func(m *model.Model) []float32 {
		t.Helper()
		out, err := m.Forward(ctx, g.PromptIDs, 0, m.NewCache(len(g.PromptIDs)), model.ForwardOptions{AllLogits: true})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	greedy := func(m *model.Model, tok *tokenizer.Tokenizer) []int {
		t.Helper()
		res, err := (&generate.Generator{Model: m, Tokenizer: tok}).Generate(ctx, g.PromptIDs, generate.Options{MaxNewTokens: 16, IgnoreEOS: true})
		if err != nil {
			t.Fatal(err)
		}
		return res.Tokens
	}
	want, wantTokens := forward(ref), greedy(ref, refTok)
	data, err := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	vocab, err := tokenizer.GGUFVocabFromJSON(data, "lukv-tiny")
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []loader.GGMLType{loader.GGMLF32, loader.GGMLBF16, loader.GGMLF16, loader.GGMLQ8_0, loader.GGMLQ6_K, loader.GGMLQ4_K} {
		t.Run(typ.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "lukv-tiny."+typ.String()+".gguf")
			if err := loader.ConvertToGGUF(dir, path, typ, vocab); err != nil {
				t.Fatal(err)
			}
			m, err := model.Load(path, cpu.New())
			if err != nil {
				t.Fatal(err)
			}
			tok, err := tokenizer.LoadGGUF(path)
			if err != nil {
				t.Fatal(err)
			}
			if ids := tok.Encode(g.Prompt, true); !slices.Equal(ids, g.PromptIDs) {
				t.Errorf("the GGUF tokenizer encodes the prompt differently")
			}
			if !slices.Equal(m.Config.EOSTokenIDs, ref.Config.EOSTokenIDs) || m.Config.BOSTokenID != ref.Config.BOSTokenID || !m.Config.TieWordEmbeddings {
				t.Errorf("config from GGUF: eos %v bos %d tied %v", m.Config.EOSTokenIDs, m.Config.BOSTokenID, m.Config.TieWordEmbeddings)
			}
			got := forward(m)
			var maxDiff, maxLogit float64
			for i := range want {
				maxDiff = math.Max(maxDiff, math.Abs(float64(got[i]-want[i])))
				maxLogit = math.Max(maxLogit, math.Abs(float64(want[i])))
			}
			st, _ := os.Stat(path)
			t.Logf("%s: %d bytes; over %d positions: max |logit difference| %.3g, max |logit| %.3g, relative %.3g",
				typ, st.Size(), len(g.PromptIDs), maxDiff, maxLogit, maxDiff/maxLogit)
			switch typ {
			case loader.GGMLF32, loader.GGMLBF16:
				if maxDiff != 0 {
					t.Errorf("logits differ by up to %g; the weights are the same numbers", maxDiff)
				}
			default:
				if bound, ok := maxRelLogitErr[typ]; ok && maxDiff/maxLogit > bound {
					t.Errorf("relative logit error %.3g > %.3g", maxDiff/maxLogit, maxRelLogitErr[typ])
				}
			}
			gotTokens := greedy(m, tok)
			_, quantized := maxRelLogitErr[typ]
			if !quantized && !slices.Equal(gotTokens, wantTokens) {
				t.Errorf("greedy tokens differ from the safetensors model's\n got %v\nwant %v", gotTokens, wantTokens)
			}
			if quantized {
				same := 0
				for same < len(gotTokens) && same < len(wantTokens) && gotTokens[same] == wantTokens[same] {
					same++
				}
				t.Logf("%s greedy: the first %d of %d tokens equal the safetensors model's", typ, same, len(wantTokens))
				if same < minSameTokens[typ] {
					t.Errorf("%s greedy: only the first %d tokens equal the safetensors model's, want at least %d", typ, same, minSameTokens[typ])
				}
			}
		})
	}
}
