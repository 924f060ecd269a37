package lukv_test

import (
	"context"
	"fmt"
	"log"

	"github.com/lukv/lukv"
	"github.com/lukv/lukv/backend/cpu"
	"github.com/lukv/lukv/eviction"
	"github.com/lukv/lukv/generate"
)

// The needle prompt of the README: the answer sits in the context.
const (
	needleContext  = "The grass is green. One of the special magic numbers for quiet-harbor is: 6038215. The sky is blue.\n"
	needleQuestion = "What is the special magic number for quiet-harbor mentioned in the provided text? The special magic number for quiet-harbor mentioned in the provided text is"
)

// Load the embedded default model on the CPU and answer greedily.
func ExampleLoadDefault() {
	g, err := lukv.LoadDefault(cpu.New())
	if err != nil {
		log.Fatal(err)
	}
	prompt := g.Tokenizer.Encode(needleContext+needleQuestion, true) // true: add BOS
	res, err := g.Generate(context.Background(), prompt, generate.Options{MaxNewTokens: 16})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%q (stopped by %s)\n", res.Text, res.StopReason)
	// Output: " 6038215." (stopped by eos)
}

// Evict half of the context's KV cache with SnapKV before the question arrives, and read
// the cache's statistics from the result.
func ExampleEviction_Apply() {
	g, err := lukv.LoadDefault(cpu.New())
	if err != nil {
		log.Fatal(err)
	}
	context_ := g.Tokenizer.Encode(needleContext, true)
	prompt := append(context_, g.Tokenizer.Encode(needleQuestion, false)...)

	scorer, err := eviction.NewScorer("snapkv")
	if err != nil {
		log.Fatal(err)
	}
	ev := lukv.Eviction{
		Method: eviction.Method{Scorer: scorer, Allocator: eviction.UniformAllocator{}, Ratio: 0.5, Sink: 4, Window: 1},
		At:     lukv.AfterContext,
	}
	opt := generate.Options{MaxNewTokens: 16}
	if err := ev.Apply(&opt, g.Model, len(context_), len(prompt)); err != nil {
		log.Fatal(err)
	}
	res, err := g.Generate(context.Background(), prompt, opt)
	if err != nil {
		log.Fatal(err)
	}
	// The live bytes count the tokens every head holds (allocated room aside).
	perToken := res.KVLivePrefill / int64(len(context_))
	fmt.Printf("context: %d tokens; held after eviction: %d per head\n", len(context_), res.KVLiveCompressed/perToken)
	fmt.Printf("%q\n", res.Text)
	// Output:
	// context: 32 tokens; held after eviction: 16 per head
	// " 6038215."
}
