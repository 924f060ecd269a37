package tests

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/backend/cpu"
	"github.com/lukv/lukv/eviction"
	"github.com/lukv/lukv/generate"
	"github.com/lukv/lukv/model"
	"github.com/lukv/lukv/tokenizer"
)

func loadTiny(t *testing.T, arch string) (*model.Model, *tokenizer.Tokenizer) {
	t.Helper()
	return loadDir(t, filepath.Join("testdata", "models", arch))
}

// loadDir loads a checkpoint folder and its tokenizer on the CPU backend.
func loadDir(t *testing.T, dir string) (*model.Model, *tokenizer.Tokenizer) {
	t.Helper()
	m, err := model.Load(dir, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	return m, tok
}

const evictContext = "The old lighthouse keeper climbed the spiral stairs every evening at dusk. " +
	"He counted the steps, one hundred and twelve of them, and wrote the number in his log. " +
	"Ships passed in the night; some of them answered his light with a horn, others did not."

// TestContextCompression: every scorer with every allocator compresses a prefilled
// context so that each layer keeps about (1 - rho) of its tokens, the memory shrinks by
// that share, and generation continues.
func TestContextCompression(t *testing.T) {
	m, tok := loadTiny(t, "llama3")
	ctx := tok.Encode(evictContext, true)
	question := tok.Encode(" How many steps?", false)
	prompt := append(append([]int(nil), ctx...), question...)
	curve := eviction.NewBudgetCurve(m.Config.NumLayers, m.Config.NumKVHeads)
	for i := 0; i < curve.Ratios; i++ { // a valid curve: head 0 prunes more than head 1
		for l := 0; l < curve.Layers; l++ {
			r := float64(i+1) / 100
			curve.Prune[(i*curve.Layers+l)*curve.KVHeads] = min(1, r*1.2)
			curve.Prune[(i*curve.Layers+l)*curve.KVHeads+1] = max(0, r*0.8)
		}
	}
	for _, scorerName := range eviction.ScorerNames() {
		for _, allocName := range eviction.AllocatorNames() {
			scorer, err := eviction.NewScorer(scorerName)
			if err != nil {
				t.Fatal(err)
			}
			alloc, err := eviction.NewAllocator(allocName, curve)
			if err != nil {
				t.Fatal(err)
			}
			method := eviction.Method{Scorer: scorer, Allocator: alloc, Ratio: 0.8, Sink: 4, Window: 1}
			collector := eviction.NewCollector(m, scorer)
			var live [2]int64
			opt := generate.Options{MaxNewTokens: 4, ContextTokens: len(ctx), Observer: collector, IgnoreEOS: true,
				AfterPrefill: func(cache backend.KVCache, n int) error {
					live[0] = cache.LiveBytes()
					err := method.Compress(cache, collector.Scores, len(question)+4)
					live[1] = cache.LiveBytes()
					return err
				}}
			g := &generate.Generator{Model: m, Tokenizer: tok}
			res, err := g.Generate(context.Background(), prompt, opt)
			if err != nil {
				t.Fatalf("%s/%s: %v", scorerName, allocName, err)
			}
			kept := float64(live[1]) / float64(live[0])
			// Pyramid gives 2 layers 190%/10% of the budget, so only the total is 20%.
			if kept < 0.15 || kept > 0.26 {
				t.Errorf("%s/%s: kept %.1f%% of the live KV bytes, want about 20%%", scorerName, allocName, 100*kept)
			}
			if res.KVBytesCompressed >= res.KVBytesPrefill/2 {
				t.Errorf("%s/%s: allocated KV bytes %d -> %d: memory was not released", scorerName, allocName, res.KVBytesPrefill, res.KVBytesCompressed)
			}
			if len(res.Tokens) != 4 {
				t.Errorf("%s/%s: generated %d tokens after compression", scorerName, allocName, len(res.Tokens))
			}
		}
	}
}

// TestDecodeTimeEviction keeps every head within its post-prompt budget while generating.
func TestDecodeTimeEviction(t *testing.T) {
	m, tok := loadTiny(t, "qwen2")
	prompt := tok.Encode(evictContext, true)
	for _, name := range []string{"snapkv", "expected-attention", "keydiff", "tova", "h2o"} {
		scorer, _ := eviction.NewScorer(name)
		method := eviction.Method{Scorer: scorer, Allocator: eviction.UniformAllocator{}, Ratio: 0.5, Sink: 2, Window: 1}
		collector := eviction.NewCollector(m, scorer)
		ev, err := eviction.NewDecodeEvictor(m, method, 8, 8)
		if err != nil {
			t.Fatal(err)
		}
		var budget, maxLen int
		opt := generate.Options{MaxNewTokens: 40, IgnoreEOS: true, Observer: collector, DecodeObserver: ev,
			AfterPrefill: func(cache backend.KVCache, n int) error {
				if err := method.Compress(cache, collector.Scores, 8); err != nil {
					return err
				}
				ev.SetBudgets(cache)
				budget = cache.Len(0, 0)
				return nil
			},
			AfterStep: func(cache backend.KVCache, generated int) error {
				if err := ev.AfterStep(cache, generated); err != nil {
					return err
				}
				maxLen = max(maxLen, cache.Len(1, 1))
				return nil
			}}
		g := &generate.Generator{Model: m, Tokenizer: tok}
		if _, err := g.Generate(context.Background(), prompt, opt); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if budget != len(prompt)/2 {
			t.Errorf("%s: budget %d, want %d", name, budget, len(prompt)/2)
		}
		if maxLen > budget+8 || ev.Evictions == 0 {
			t.Errorf("%s: a head grew to %d with budget %d (evictions %d)", name, maxLen, budget, ev.Evictions)
		}
	}
}

// TestProfileTiny runs the whole LU-KV profiler on a tiny model and checks the curve.
func TestProfileTiny(t *testing.T) {
	m, tok := loadTiny(t, "mistral")
	cal := &eviction.Calibration{Context: strings.Repeat(evictContext+" ", 2), Questions: []string{"How many steps?", "What colour was the door?"}}
	p := &eviction.Profiler{Model: m, Tokenizer: tok, Scorer: &eviction.KeyDiffScorer{}, Horizon: 6, Temperature: 0.7, Seed: 1,
		Options: eviction.ProfileOptions{Sink: 4, Window: 1, MinKeepFraction: eviction.DefaultMinKeepFraction}}
	var calls int
	p.Progress = func(done, total int) { calls++ }
	curve, err := p.Profile(context.Background(), cal)
	if err != nil {
		t.Fatal(err)
	}
	if curve.Layers != m.Config.NumLayers || curve.KVHeads != m.Config.NumKVHeads || curve.Meta.Questions != 2 || calls != 2 {
		t.Fatalf("curve %dx%d from %d questions (%d progress calls)", curve.Layers, curve.KVHeads, curve.Meta.Questions, calls)
	}
	if err := curve.Validate(); err != nil {
		t.Fatal(err)
	}
	// The average prune ratio of row i is (i+1)% (to within one token per head).
	T := float64(curve.Meta.ContextTokens)
	for _, i := range []int{19, 49, 79} {
		var sum float64
		for l := 0; l < curve.Layers; l++ {
			for h := 0; h < curve.KVHeads; h++ {
				sum += curve.At(i, l, h)
			}
		}
		mean := sum / float64(curve.Layers*curve.KVHeads)
		if d := mean - float64(i+1)/100; d > 1/T || d < -1/T {
			t.Errorf("row %d: mean prune ratio %.4f, want %.2f", i, mean, float64(i+1)/100)
		}
	}
}
