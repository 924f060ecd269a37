//go:build cuda

package cuda

import (
	"context"
	"reflect"
	"testing"

	"github.com/lukv/lukv/generate"
	"github.com/lukv/lukv/model"
)

// TestGenerateBatchOnGPU: on the GPU, sequences decoded together in batches of up to 8
// (the matrix-vector kernel's rows) give the same tokens as each decoded alone, which is
// what lets the evaluation runner batch its methods without changing any answer.
func TestGenerateBatchOnGPU(t *testing.T) {
	b := testBackend(t)
	m := loadTiny(t, b)
	tok := tinyTokenizer(t)
	g := &generate.Generator{Model: m, Tokenizer: tok}
	var prompts [][]int
	var cached []int
	for i := 0; i < 11; i++ {
		ctx := tok.Encode("The grass is green. The sky is blue. One of the special magic numbers for "+
			[]string{"apple", "pear", "plum", "fig", "lime", "kiwi", "date", "peach", "grape", "melon", "lemon"}[i]+
			" is: "+[]string{"1", "22", "333", "4444", "55555", "123456", "7654321", "98", "4321", "80808", "31415"}[i]+". The sun is yellow.", true)
		q := tok.Encode("\nWhat is the special magic number? The special magic number is", false)
		prompts = append(prompts, append(append([]int(nil), ctx...), q...))
		cached = append(cached, len(ctx))
	}
	prefilled := func(i int) generate.Options {
		c := m.NewCache(len(prompts[i]) + 24)
		if _, err := m.Forward(context.Background(), prompts[i][:cached[i]], 0, c, model.ForwardOptions{}); err != nil {
			t.Fatal(err)
		}
		return generate.Options{MaxNewTokens: 16 + i, Cache: c, Cached: cached[i]}
	}
	var want [][]int
	for i := range prompts {
		r, err := g.Generate(context.Background(), prompts[i], prefilled(i))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, r.Tokens)
	}
	var reqs []generate.Request
	for i := range prompts {
		reqs = append(reqs, generate.Request{Prompt: prompts[i], Options: prefilled(i)})
	}
	got, err := g.GenerateBatch(context.Background(), reqs, 8)
	if err != nil {
		t.Fatal(err)
	}
	for i := range prompts {
		if !reflect.DeepEqual(got[i].Tokens, want[i]) {
			t.Errorf("sequence %d: batched %v, alone %v", i, got[i].Tokens, want[i])
		}
	}
}
