// Package tests checks lukv end to end against outside implementations: Hugging Face
// transformers' logits and greedy continuations for small random-weight checkpoints of
// each supported architecture (made by scripts/make_goldens.py on the GPU machine).
package tests

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/lukv/lukv/backend/backendtest"
	"github.com/lukv/lukv/backend/cpu"
	"github.com/lukv/lukv/generate"
	"github.com/lukv/lukv/model"
	"github.com/lukv/lukv/tests/golden"
	"github.com/lukv/lukv/tokenizer"
)

var archs = []string{"llama3", "qwen2", "qwen3", "mistral"}

// readGolden reads a checkpoint's goldens or fails the test.
func readGolden(t *testing.T, dir string) (*golden.Golden, []float32, int) {
	t.Helper()
	g, logits, vocab, err := golden.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	return g, logits, vocab
}

// maxRelErr is max|got-want| / max|want|, as the conformance suite measures it.
func maxRelErr(got, want []float32) float64 { return backendtest.RelErr(got, want) }

func TestGoldenLogitsAndGreedy(t *testing.T) {
	for _, arch := range archs {
		t.Run(arch, func(t *testing.T) { checkGolden(t, filepath.Join("testdata", "models", arch)) })
	}
}

// configVariants are the config variants of scripts/make_goldens.py (RoPE scaling types,
// sliding window, Llama attention biases).
var configVariants = []string{"rope-linear", "rope-dynamic", "rope-yarn", "mistral-sliding", "llama-bias"}

// TestGoldenConfigVariants runs each variant whose goldens are in testdata; they are made on
// the GPU machine with
//
//	python3 scripts/make_goldens.py --only rope-linear,rope-dynamic,rope-yarn,mistral-sliding,llama-bias --out tests/testdata
func TestGoldenConfigVariants(t *testing.T) {
	for _, name := range configVariants {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join("testdata", "models", name)
			if _, err := os.Stat(filepath.Join(dir, "golden.json")); errors.Is(err, fs.ErrNotExist) {
				t.Skipf("no goldens in %s (made by scripts/make_goldens.py --only %s on the GPU machine)", dir, name)
			}
			checkGolden(t, dir)
		})
	}
}

// checkGolden compares lukv's CPU logits of the golden prompt (max relative error 1e-4),
// its prompt tokens and its greedy continuation with transformers'.
func checkGolden(t *testing.T, dir string) {
	g, want, vocab := readGolden(t, dir)
	m, err := model.Load(dir, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	cache := m.NewCache(len(g.PromptIDs))
	got, err := m.Forward(context.Background(), g.PromptIDs, 0, cache, model.ForwardOptions{AllLogits: true})
	if err != nil {
		t.Fatal(err)
	}
	for r, pos := range g.LogitPositions {
		e := maxRelErr(got[pos*vocab:(pos+1)*vocab], want[r*vocab:(r+1)*vocab])
		if e > 1e-4 {
			t.Errorf("position %d: max relative error %.2e > 1e-4", pos, e)
		}
	}

	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	if ids := tok.Encode(g.Prompt, true); !slices.Equal(ids, g.PromptIDs) {
		t.Errorf("prompt tokens differ from transformers'\n got %v\nwant %v", ids, g.PromptIDs)
	}
	gen := &generate.Generator{Model: m, Tokenizer: tok}
	res, err := gen.Generate(context.Background(), g.PromptIDs, generate.Options{MaxNewTokens: len(g.GreedyIDs), IgnoreEOS: true})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Tokens, g.GreedyIDs) {
		t.Errorf("greedy continuation differs from transformers'\n got %v\nwant %v", res.Tokens, g.GreedyIDs)
	}
}

// TestDefaultModelGolden pins the embedded default model, lukv-tiny, against transformers:
// logits of a needle prompt (float64 in transformers) and its greedy continuation.
func TestDefaultModelGolden(t *testing.T) { checkModelGolden(t, "lukv-tiny") }

// TestSmallModelGolden pins lukv-small (issue 16: 12 layers, trained at 32k with chat
// tokens; scripts/small-model.sh wrote these goldens with transformers on the H200).
func TestSmallModelGolden(t *testing.T) { checkModelGolden(t, "lukv-small") }

func checkModelGolden(t *testing.T, name string) {
	g, want, vocab := readGolden(t, filepath.Join("testdata", name))
	m, tok := loadDir(t, filepath.Join("..", "models", name))
	if ids := tok.Encode(g.Prompt, true); !slices.Equal(ids, g.PromptIDs) {
		t.Fatalf("prompt tokens differ from transformers'")
	}
	got, err := m.Forward(context.Background(), g.PromptIDs, 0, m.NewCache(len(g.PromptIDs)), model.ForwardOptions{AllLogits: true})
	if err != nil {
		t.Fatal(err)
	}
	for r, pos := range g.LogitPositions {
		if e := maxRelErr(got[pos*vocab:(pos+1)*vocab], want[r*vocab:(r+1)*vocab]); e > 1e-4 {
			t.Errorf("position %d: max relative error %.2e > 1e-4", pos, e)
		}
	}
	res, err := (&generate.Generator{Model: m, Tokenizer: tok}).Generate(context.Background(), g.PromptIDs, generate.Options{MaxNewTokens: len(g.GreedyIDs), IgnoreEOS: true})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Tokens, g.GreedyIDs) {
		t.Errorf("greedy continuation differs from transformers'\n got %v\nwant %v", res.Tokens, g.GreedyIDs)
	}
}
