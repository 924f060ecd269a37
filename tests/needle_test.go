package tests

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/eviction"
	"github.com/lukv/lukv/generate"
	"github.com/lukv/lukv/models"
)

// TestNeedleWithLUKV: the embedded default model answers a needle question with its
// context compressed by 80% (ExpectedAttention scores, the committed LU-KV curve), and
// the cache holds 20% of the context's tokens.
func TestNeedleWithLUKV(t *testing.T) {
	dir, err := models.DefaultDir()
	if err != nil {
		t.Fatal(err)
	}
	m, tok := loadDir(t, dir)
	curve, err := eviction.ReadNPY(filepath.Join("..", "models", models.DefaultName, "curves", "expected-attention.npy"))
	if err != nil {
		t.Fatal(err)
	}
	hay := strings.Repeat("The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ", 12)
	text := "Some special magic numbers are hidden within the following text. Make sure to memorize it. " +
		"I will quiz you about the numbers afterwards.\n" + hay + "One of the special magic numbers for quiet-harbor is: 6038215. " + hay +
		"\nWhat are all the special magic numbers for quiet-harbor mentioned in the provided text?"
	ctx := tok.Encode(text, true)
	prompt := append(ctx, tok.Encode(" The special magic numbers for quiet-harbor mentioned in the provided text are", false)...)

	scorer, _ := eviction.NewScorer("expected-attention")
	method := eviction.Method{Scorer: scorer, Allocator: eviction.LUKVAllocator{Curve: curve}, Ratio: 0.8, Sink: 4, Window: 1}
	collector := eviction.NewCollector(m, scorer)
	opt := generate.Options{MaxNewTokens: 6, ContextTokens: len(ctx), Observer: collector,
		AfterPrefill: func(cache backend.KVCache, n int) error {
			return method.Compress(cache, collector.Scores, len(prompt)-len(ctx)+6)
		}}
	res, err := (&generate.Generator{Model: m, Tokenizer: tok}).Generate(context.Background(), prompt, opt)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(res.Text, "6038215") {
		t.Errorf("answer %q lacks the needle 6038215", res.Text)
	}
	held := 1 - float64(res.KVLiveCompressed)/float64(res.KVLivePrefill)
	if held < 0.795 || held > 0.805 {
		t.Errorf("eviction dropped %.1f%% of the context's tokens, want 80%%", 100*held)
	}
	t.Logf("answer %q; KV bytes %d -> %d (%.1f%% fewer tokens)", res.Text, res.KVBytesPrefill, res.KVBytesCompressed, 100*held)
}
