package generate

import (
	"context"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/backend/cpu"
	"github.com/lukv/lukv/model"
	"github.com/lukv/lukv/models"
	"github.com/lukv/lukv/tokenizer"
)

// TestGenerateBatchMatchesGenerate: sequences generated together (batches of 2 and of 8)
// give exactly what each gives alone, with greedy and seeded sampling, a stop string,
// end of sequence and different token limits, from caches of different lengths.
func TestGenerateBatchMatchesGenerate(t *testing.T) {
	dir, err := models.DefaultDir()
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Load(dir, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	g := &Generator{Model: m, Tokenizer: tok}
	contexts := []string{
		"The grass is green. One of the special magic numbers for apple is: 482910. The sky is blue.",
		"In the beginning was the word, and the word was with God.",
		"Memorize and track the chain of variable assignment. VAR AB = 12345. VAR CD = VAR AB.",
	}
	questions := []string{"\nWhat is the special magic number for apple? The special magic number for apple is",
		"\nAnd then", "\nQuestion: Find all variables that are assigned the value 12345. Answer:"}
	opts := []Options{
		{MaxNewTokens: 12},
		{MaxNewTokens: 20, Temperature: 0.9, TopP: 0.9, Seed: 5},
		{MaxNewTokens: 16, StopStrings: []string{"variable"}},
	}
	type job struct {
		prompt []int
		cached int
		opt    Options
	}
	var jobs []job
	for i := range contexts {
		ctx := tok.Encode(contexts[i], true)
		prompt := append(append([]int(nil), ctx...), tok.Encode(questions[i], false)...)
		jobs = append(jobs, job{prompt, len(ctx), opts[i]})
	}
	prefilled := func(j job) Options {
		c := m.NewCache(len(j.prompt) + j.opt.MaxNewTokens)
		if _, err := m.Forward(context.Background(), j.prompt[:j.cached], 0, c, model.ForwardOptions{}); err != nil {
			t.Fatal(err)
		}
		o := j.opt
		o.Cache, o.Cached = c, j.cached
		return o
	}
	var want []*Result
	for _, j := range jobs {
		r, err := g.Generate(context.Background(), j.prompt, prefilled(j))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, r)
	}
	for _, batch := range []int{2, 8} {
		var reqs []Request
		for _, j := range jobs {
			reqs = append(reqs, Request{Prompt: j.prompt, Options: prefilled(j)})
		}
		got, err := g.GenerateBatch(context.Background(), reqs, batch)
		if err != nil {
			t.Fatal(err)
		}
		for i := range jobs {
			if got[i].Text != want[i].Text || !reflect.DeepEqual(got[i].Tokens, want[i].Tokens) || got[i].StopReason != want[i].StopReason {
				t.Errorf("batch %d, request %d: got %q (%s), alone %q (%s)", batch, i, got[i].Text, got[i].StopReason, want[i].Text, want[i].StopReason)
			}
		}
	}
	// The cases must reach the stops they are there for.
	if want[2].StopReason != "stop_string" {
		t.Errorf("request 2 stopped by %s (%q), want its stop string", want[2].StopReason, want[2].Text)
	}
	if _, err := g.GenerateBatch(context.Background(), []Request{{Prompt: jobs[0].prompt, Options: Options{MaxNewTokens: 1}}}, 4); err == nil {
		t.Error("a request without a prefilled cache: no error")
	}
	if _, err := g.GenerateBatch(context.Background(), nil, 0); err == nil {
		t.Error("batch size 0: no error")
	}
}

// TestBatchOfOneHooks: a batch of one keeps the hooks of a single sequence (AfterStep
// runs once per decode step, DecodeObserver sees every layer of each step) and gives
// Generate's result; a batch of two refuses them.
func TestBatchOfOneHooks(t *testing.T) {
	dir, err := models.DefaultDir()
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Load(dir, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	g := &Generator{Model: m, Tokenizer: tok}
	prompt := tok.Encode("The lighthouse keeper walked to the shore and", true)
	prefilled := func() Options {
		c := m.NewCache(len(prompt) + 8)
		if _, err := m.Forward(context.Background(), prompt[:4], 0, c, model.ForwardOptions{}); err != nil {
			t.Fatal(err)
		}
		return Options{MaxNewTokens: 6, IgnoreEOS: true, Cache: c, Cached: 4}
	}
	var steps []int
	obs := &countObserver{}
	opt := prefilled()
	opt.AfterStep = func(_ backend.KVCache, generated int) error { steps = append(steps, generated); return nil }
	opt.DecodeObserver = obs
	got, err := g.GenerateBatch(context.Background(), []Request{{Prompt: prompt, Options: opt}}, 4)
	if err != nil {
		t.Fatal(err)
	}
	// 6 tokens: the first from the prefill, 5 decode steps (the last token is not run).
	if !reflect.DeepEqual(steps, []int{1, 2, 3, 4, 5}) || obs.layers != 5*m.Config.NumLayers {
		t.Errorf("AfterStep saw %v, the observer %d layers; want [1 2 3 4 5] and %d", steps, obs.layers, 5*m.Config.NumLayers)
	}
	want, err := g.Generate(context.Background(), prompt, prefilled())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got[0].Tokens, want.Tokens) {
		t.Errorf("batch of one %v, Generate %v", got[0].Tokens, want.Tokens)
	}
	two := []Request{{Prompt: prompt, Options: opt}, {Prompt: prompt, Options: prefilled()}}
	if _, err := g.GenerateBatch(context.Background(), two, 4); err == nil || !strings.Contains(err.Error(), "batch of one") {
		t.Errorf("AfterStep in a batch of two: %v, want a refusal", err)
	}
}

type countObserver struct{ layers int }

func (o *countObserver) ObserveLayer(int, []int, backend.Tensor, backend.Tensor, backend.Tensor, backend.Tensor) {
	o.layers++
}
