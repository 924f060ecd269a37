package eviction_test

import (
	"context"
	"fmt"
	"log"

	"github.com/lukv/lukv"
	"github.com/lukv/lukv/backend/cpu"
	"github.com/lukv/lukv/eviction"
	"github.com/lukv/lukv/model"
)

// Score a prefilled context with a Collector, then let a Method split the budget across
// heads and compact the cache; every head then holds its own number of tokens.
func ExampleMethod_Compress() {
	g, err := lukv.LoadDefault(cpu.New())
	if err != nil {
		log.Fatal(err)
	}
	m := g.Model
	ids := g.Tokenizer.Encode("The grass is green. One of the special magic numbers for apple is: 482910. The sky is blue. The sun is bright today.", true)

	scorer, err := eviction.NewScorer("keydiff")
	if err != nil {
		log.Fatal(err)
	}
	collector := eviction.NewCollector(m, scorer) // scores every layer as the prefill runs
	cache := m.NewCache(len(ids) + 8)
	if _, err := m.Forward(context.Background(), ids, 0, cache, model.ForwardOptions{Observer: collector}); err != nil {
		log.Fatal(err)
	}
	method := eviction.Method{Scorer: scorer, Allocator: eviction.UniformAllocator{}, Ratio: 0.75, Sink: 4, Window: 1}
	if err := method.Compress(cache, collector.Scores, 8); err != nil { // room for 8 more tokens
		log.Fatal(err)
	}
	held := 0
	for l := range cache.Layers() {
		for h := range cache.KVHeads() {
			held += cache.Len(l, h)
		}
	}
	heads := cache.Layers() * cache.KVHeads()
	fmt.Printf("%s: %d tokens, %d heads, %d held per head after eviction\n", method, len(ids), heads, held/heads)
	// Output: keydiff/uniform@0.75: 34 tokens, 32 heads, 8 held per head after eviction
}

// Profile an LU-KV budget curve: prefill a calibration context, decode a few tokens after
// each question to see which context tokens the future attends to, and solve each
// head's budget at every compression ratio.
func ExampleProfiler() {
	g, err := lukv.LoadDefault(cpu.New())
	if err != nil {
		log.Fatal(err)
	}
	cal := &eviction.Calibration{
		Context: "The grass is green. One of the special magic numbers for apple is: 482910. The sky is blue. " +
			"One of the special magic numbers for pear is: 771203. The sun is bright today.",
		Questions: []string{"What is the special magic number for apple?", "What is the special magic number for pear?"},
	}
	scorer, err := eviction.NewScorer("expected-attention")
	if err != nil {
		log.Fatal(err)
	}
	p := &eviction.Profiler{Model: g.Model, Tokenizer: g.Tokenizer, Scorer: scorer, Horizon: 4,
		Options: eviction.ProfileOptions{Sink: 4, Window: 1, MinKeepFraction: eviction.DefaultMinKeepFraction}}
	curve, err := p.Profile(context.Background(), cal)
	if err != nil {
		log.Fatal(err)
	}
	row, err := curve.Row(0.5) // every head's prune ratio at 50% compression
	if err != nil {
		log.Fatal(err)
	}
	// One global budget: heads differ, their mean is the ratio.
	lo, hi, sum := 1.0, 0.0, 0.0
	for _, r := range row {
		lo, hi, sum = min(lo, r), max(hi, r), sum+r
	}
	fmt.Printf("%d ratios x %d layers x %d KV heads; horizon %d, %d questions\n",
		curve.Ratios, curve.Layers, curve.KVHeads, curve.Meta.Horizon, curve.Meta.Questions)
	fmt.Printf("at 50%%: mean prune ratio %.2f, heads differ: %v\n", sum/float64(len(row)), hi-lo > 0.1)
	// Output:
	// 99 ratios x 8 layers x 4 KV heads; horizon 4, 2 questions
	// at 50%: mean prune ratio 0.50, heads differ: true
}
