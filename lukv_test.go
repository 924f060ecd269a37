package lukv

import (
	"context"
	"strings"
	"testing"

	"github.com/lukv/lukv/backend/cpu"
	"github.com/lukv/lukv/eviction"
	"github.com/lukv/lukv/generate"
)

// TestEvictionApply: each When wires the hooks it says (AfterContext splits the
// prefill, AfterQuestion does not, DuringDecode keeps the cache near its budget while
// decoding), and bad requests are errors.
func TestEvictionApply(t *testing.T) {
	g, err := LoadDefault(cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	ctxIDs := g.Tokenizer.Encode("The grass is green. One of the special magic numbers for apple is: 482910. The sky is blue. The sun is bright.", true)
	prompt := append(append([]int(nil), ctxIDs...), g.Tokenizer.Encode(" What is the magic number for apple?", false)...)
	scorer, err := eviction.NewScorer("keydiff")
	if err != nil {
		t.Fatal(err)
	}
	method := eviction.Method{Scorer: scorer, Allocator: eviction.UniformAllocator{}, Ratio: 0.5, Sink: 4, Window: 1}
	for _, c := range []struct {
		at       When
		prefill  int // tokens in the cache when eviction runs
		heldWant int // tokens per head right after it
	}{
		{AfterContext, len(ctxIDs), len(ctxIDs) / 2},
		// The question is protected like the window: half the context plus the question.
		{AfterQuestion, len(prompt), len(prompt) / 2},
		{DuringDecode, len(prompt), len(prompt) / 2},
	} {
		opt := generate.Options{MaxNewTokens: 24, IgnoreEOS: true}
		e := Eviction{Method: method, At: c.at, Every: 4, Buffer: 4}
		if err := e.Apply(&opt, g.Model, len(ctxIDs), len(prompt)); err != nil {
			t.Fatal(err)
		}
		if (opt.ContextTokens != 0) != (c.at == AfterContext) || (opt.AfterStep != nil) != (c.at == DuringDecode) {
			t.Errorf("%s: ContextTokens %d, AfterStep set %v", c.at, opt.ContextTokens, opt.AfterStep != nil)
		}
		res, err := g.Generate(context.Background(), prompt, opt)
		if err != nil {
			t.Fatal(err)
		}
		bytesPerToken := res.KVLivePrefill / int64(c.prefill)
		held := int(res.KVLiveCompressed / bytesPerToken)
		if c.at == AfterQuestion {
			// At least the question's tokens and the context's half are kept.
			if held < len(prompt)-len(ctxIDs) || held > len(prompt)/2+1 {
				t.Errorf("%s: %d tokens per head after eviction of %d", c.at, held, len(prompt))
			}
		} else if held != c.heldWant {
			t.Errorf("%s: %d tokens per head after eviction, want %d", c.at, held, c.heldWant)
		}
		// 23 tokens are decoded into the cache (after the question, for AfterContext):
		// DuringDecode cuts it back to its budget every 4 steps, the others keep them all.
		live, want := int(res.KVLive/bytesPerToken), held+23
		if c.at == AfterContext {
			want += len(prompt) - len(ctxIDs)
		}
		if c.at == DuringDecode && live > held+4 || c.at != DuringDecode && live != want {
			t.Errorf("%s: %d tokens per head at the end, %d after eviction", c.at, live, held)
		}
	}
	bad := []Eviction{{Method: method, At: "later"}, {Method: method, At: DuringDecode, Every: 2, Buffer: 4}}
	for _, e := range bad {
		opt := generate.Options{MaxNewTokens: 4}
		if err := e.Apply(&opt, g.Model, len(ctxIDs), len(prompt)); err == nil {
			t.Errorf("%+v: no error", e)
		}
	}
	if err := (Eviction{Method: method, At: AfterContext}).Apply(&generate.Options{}, g.Model, len(prompt)+1, len(prompt)); err == nil || !strings.Contains(err.Error(), "context tokens") {
		t.Errorf("a context longer than the prompt: %v", err)
	}
}

// TestProfilerRefusesNoHorizon: a profile that decodes nothing after the questions would
// measure nothing; it is an error, not a degenerate curve.
func TestProfilerRefusesNoHorizon(t *testing.T) {
	g, err := LoadDefault(cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	scorer, _ := eviction.NewScorer("keydiff")
	cal := &eviction.Calibration{Context: "The grass is green. The sky is blue. The sun is bright today.", Questions: []string{"What colour is the sky?"}}
	for _, h := range []int{0, -1} {
		p := &eviction.Profiler{Model: g.Model, Tokenizer: g.Tokenizer, Scorer: scorer, Horizon: h, Options: eviction.ProfileOptions{Sink: 4, Window: 1}}
		if _, err := p.Profile(context.Background(), cal); err == nil || !strings.Contains(err.Error(), "horizon") {
			t.Errorf("horizon %d: %v, want an error naming the horizon", h, err)
		}
	}
}
