package sched

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/backend/cpu"
	"github.com/lukv/lukv/eviction"
	"github.com/lukv/lukv/generate"
	"github.com/lukv/lukv/kvpool"
	"github.com/lukv/lukv/loader"
	"github.com/lukv/lukv/model"
	"github.com/lukv/lukv/models"
	"github.com/lukv/lukv/tokenizer"
)

// load returns the default model on a paged CPU backend with a pool of blocks blocks of
// 16 tokens, and the same model on the plain CPU backend with its tokenizer (the
// one-by-one reference).
func load(t *testing.T, blocks int) (*model.Model, *kvpool.Pool, *generate.Generator) {
	t.Helper()
	dir, err := models.DefaultDir()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := loader.LoadConfig(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	pool, err := kvpool.New(blocks, 16, int64(16*cfg.HeadDim*2*4))
	if err != nil {
		t.Fatal(err)
	}
	pb, err := cpu.NewPaged(cpu.New(), pool, cfg.HeadDim)
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Load(dir, pb)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := model.Load(dir, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	return m, pool, &generate.Generator{Model: plain, Tokenizer: tok}
}

func newSched(t *testing.T, m *model.Model, pool *kvpool.Pool, maxRunning, maxWaiting int) *Scheduler {
	t.Helper()
	s, err := New(Config{Model: m, Pool: pool, MaxRunning: maxRunning, MaxWaiting: maxWaiting})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func method(t *testing.T, scorer string, ratio float64) *eviction.Method {
	sc, err := eviction.NewScorer(scorer)
	if err != nil {
		t.Fatal(err)
	}
	return &eviction.Method{Scorer: sc, Allocator: eviction.UniformAllocator{}, Ratio: ratio, Sink: 4, Window: 4}
}

func prompt(tok *tokenizer.Tokenizer, i int) []int {
	text := fmt.Sprintf("Request %d: the quick brown fox jumps over the lazy dog %d times, and then", i, i*7)
	for j := 0; j < i%4; j++ {
		text += " it rests in the shade of an old oak tree near the river bank."
	}
	return tok.Encode(text, true)
}

// TestConcurrentEqualsSequential: requests of different lengths, token limits, sampling
// settings and eviction, run together through the scheduler, each give exactly the
// tokens generate.Generator gives for them alone (on the plain CPU backend).
func TestConcurrentEqualsSequential(t *testing.T) {
	m, pool, g := load(t, 8192)
	s := newSched(t, m, pool, 4, 64) // 4 at a time, so requests also wait and join later
	const n = 10
	reqs := make([]Request, n)
	want := make([][]int, n)
	for i := range reqs {
		r := Request{Prompt: prompt(g.Tokenizer, i), MaxTokens: 4 + 3*i, IgnoreEOS: i%2 == 0}
		opt := generate.Options{MaxNewTokens: r.MaxTokens, IgnoreEOS: r.IgnoreEOS}
		if i%3 == 1 {
			r.Temperature, r.TopP, r.Seed = 0.8, 0.9, uint64(100+i)
			opt.Temperature, opt.TopP, opt.Seed = r.Temperature, r.TopP, r.Seed
		}
		if i%3 == 2 {
			r.Method = method(t, "expected-attention", 0.5)
			refMethod := method(t, "expected-attention", 0.5)
			col := eviction.NewCollector(g.Model, refMethod.Scorer)
			opt.Observer = col
			opt.AfterPrefill = func(c backend.KVCache, _ int) error { return refMethod.Compress(c, col.Scores, r.MaxTokens) }
		}
		reqs[i] = r
		res, err := g.Generate(context.Background(), r.Prompt, opt)
		if err != nil {
			t.Fatal(err)
		}
		want[i] = res.Tokens
	}
	got := make([]*Result, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range reqs {
		wg.Go(func() { got[i], errs[i] = s.Generate(context.Background(), reqs[i]) })
	}
	wg.Wait()
	for i := range reqs {
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		if !slices.Equal(got[i].Tokens, want[i]) {
			t.Errorf("request %d: scheduler tokens %v, one by one %v", i, got[i].Tokens, want[i])
		}
		if reqs[i].Method != nil && got[i].EvictedEntries == 0 {
			t.Errorf("request %d: eviction dropped nothing", i)
		}
	}
	if used := pool.UsedBlocks(); used != 0 {
		t.Fatalf("%d blocks still used after every request finished", used)
	}
}

// TestCancelFreesBlocks: cancelling running and waiting requests mid-run ends them with
// the context's error, the others finish, and the pool ends empty.
func TestCancelFreesBlocks(t *testing.T) {
	m, pool, g := load(t, 8192)
	s := newSched(t, m, pool, 3, 64)
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	results := make([]*Result, n)
	for i := 0; i < n; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var count atomic.Int32
		r := Request{Prompt: prompt(g.Tokenizer, i), MaxTokens: 40, IgnoreEOS: true}
		if i%2 == 0 {
			r.OnToken = func(int) bool {
				if count.Add(1) == int32(3+i) {
					cancel() // mid-run
				}
				return false
			}
		}
		wg.Go(func() { results[i], errs[i] = s.Generate(ctx, r) })
	}
	wg.Wait()
	for i := 0; i < n; i++ {
		if i%2 == 0 {
			if !errors.Is(errs[i], context.Canceled) {
				t.Errorf("request %d: got %v, want context.Canceled", i, errs[i])
			}
		} else if errs[i] != nil || len(results[i].Tokens) != 40 {
			t.Errorf("request %d: %v", i, errs[i])
		}
	}
	if used := pool.UsedBlocks(); used != 0 {
		t.Fatalf("%d blocks still used after cancellation", used)
	}
	// A request cancelled before it starts.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Generate(ctx, Request{Prompt: prompt(g.Tokenizer, 1), MaxTokens: 5}); !errors.Is(err, context.Canceled) {
		t.Fatalf("pre-cancelled: got %v", err)
	}
	if pool.UsedBlocks() != 0 || s.Running() != 0 || s.Waiting() != 0 {
		t.Fatalf("after all: used %d running %d waiting %d", pool.UsedBlocks(), s.Running(), s.Waiting())
	}
}

// TestAdmissionByBlocks: with a pool that holds one full-cache request at a time, the
// others wait and then run; with the queue full a request is refused with ErrQueueFull;
// one that could never fit gets ErrTooLarge.
func TestAdmissionByBlocks(t *testing.T) {
	m, pool, g := load(t, 1)
	c := m.Config
	p := prompt(g.Tokenizer, 0)
	const maxTok = 30
	perReq := c.NumLayers * c.NumKVHeads * pool.BlocksFor(len(p)+maxTok)
	m, pool, _ = load(t, perReq+perReq/2)
	s := newSched(t, m, pool, 8, 1)

	if _, err := s.Generate(context.Background(), Request{Prompt: p, MaxTokens: 10000}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("huge request: got %v, want ErrTooLarge", err)
	}
	var maxRunning atomic.Int32
	release := make(chan struct{})
	var once sync.Once
	defer once.Do(func() { close(release) }) // never leave the loop blocked on a failure
	req := Request{Prompt: p, MaxTokens: maxTok, IgnoreEOS: true, OnToken: func(int) bool {
		maxRunning.Store(max(maxRunning.Load(), int32(s.Running())))
		return false
	}}
	first := req
	first.OnToken = func(int) bool { <-release; return false } // holds the batch until released
	var wg sync.WaitGroup
	var errA, errB error
	wg.Go(func() { _, errA = s.Generate(context.Background(), first) })
	waitFor(t, func() bool { return s.Running() == 1 })
	wg.Go(func() { _, errB = s.Generate(context.Background(), req) })
	waitFor(t, func() bool { return s.Waiting() == 1 })
	if _, err := s.Generate(context.Background(), req); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("third request with the queue full: got %v, want ErrQueueFull", err)
	}
	once.Do(func() { close(release) })
	wg.Wait()
	if errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
	if maxRunning.Load() != 1 {
		t.Fatalf("%d sequences ran together in a pool for one", maxRunning.Load())
	}
	if pool.UsedBlocks() != 0 {
		t.Fatalf("%d blocks used at the end", pool.UsedBlocks())
	}
}

// TestEvictionAdmitsMore: in a pool that holds two full-cache requests, compressing
// each cache by 80% after its prefill lets more run at once.
func TestEvictionAdmitsMore(t *testing.T) {
	m, pool, g := load(t, 1)
	c := m.Config
	long := prompt(g.Tokenizer, 3)
	for len(long) < 160 {
		long = append(long, long[1:]...)
	}
	long = long[:160]
	const maxTok = 8
	perReq := c.NumLayers * c.NumKVHeads * pool.BlocksFor(len(long)+maxTok)
	peak := func(ratio float64) int32 {
		m, pool, _ := load(t, 2*perReq)
		s := newSched(t, m, pool, 16, 64)
		var peak atomic.Int32
		var wg sync.WaitGroup
		for i := 0; i < 6; i++ {
			r := Request{Prompt: long, MaxTokens: maxTok, IgnoreEOS: true, OnToken: func(int) bool {
				peak.Store(max(peak.Load(), int32(s.Running())))
				return false
			}}
			if ratio > 0 {
				r.Method = method(t, "knorm", ratio)
			}
			wg.Go(func() {
				if _, err := s.Generate(context.Background(), r); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if pool.UsedBlocks() != 0 {
			t.Errorf("ratio %v: %d blocks used at the end", ratio, pool.UsedBlocks())
		}
		return peak.Load()
	}
	full, compressed := peak(0), peak(0.8)
	t.Logf("most sequences running at once: full cache %d, 80%% evicted %d", full, compressed)
	if full > 2 || compressed < 4 {
		t.Fatalf("most running: full cache %d (want <= 2), 80%% evicted %d (want >= 4)", full, compressed)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting")
		}
	}
}

// TestChunkedPrefill: with PrefillChunk, prompts are prefilled a few tokens at a time
// between decode steps of the running sequences; every request (with and without
// eviction, which prefills in one pass) still gives exactly the tokens of the same
// request run alone, and the pool ends empty.
func TestChunkedPrefill(t *testing.T) {
	m, pool, g := load(t, 8192)
	var steps []Step // OnStep runs on the scheduler's goroutine, read after Close
	s, err := New(Config{Model: m, Pool: pool, MaxRunning: 3, MaxWaiting: 64, PrefillChunk: 5, OnStep: func(st Step) { steps = append(steps, st) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	const n = 6
	reqs := make([]Request, n)
	want := make([][]int, n)
	for i := range reqs {
		r := Request{Prompt: prompt(g.Tokenizer, i), MaxTokens: 5 + 2*i, IgnoreEOS: true}
		opt := generate.Options{MaxNewTokens: r.MaxTokens, IgnoreEOS: true}
		if i == 4 {
			r.Method = method(t, "knorm", 0.5)
			refMethod := method(t, "knorm", 0.5)
			col := eviction.NewCollector(g.Model, refMethod.Scorer)
			opt.Observer = col
			opt.AfterPrefill = func(c backend.KVCache, _ int) error { return refMethod.Compress(c, col.Scores, r.MaxTokens) }
		}
		if len(r.Prompt) <= 5 {
			t.Fatalf("prompt %d has %d tokens: too short to be chunked", i, len(r.Prompt))
		}
		reqs[i] = r
		res, err := g.Generate(context.Background(), r.Prompt, opt)
		if err != nil {
			t.Fatal(err)
		}
		want[i] = res.Tokens
	}
	got := make([]*Result, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range reqs {
		wg.Go(func() { got[i], errs[i] = s.Generate(context.Background(), reqs[i]) })
	}
	wg.Wait()
	for i := range reqs {
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		if !slices.Equal(got[i].Tokens, want[i]) {
			t.Errorf("request %d: chunked-prefill scheduler tokens %v, alone %v", i, got[i].Tokens, want[i])
		}
	}
	if used := pool.UsedBlocks(); used != 0 {
		t.Fatalf("%d blocks still used after every request finished", used)
	}
	s.Close()
	// Every generated token but each request's last came out of a decode step.
	batched, most := 0, 0
	for _, st := range steps {
		batched += st.Batch
		most = max(most, st.Batch)
		if st.Time <= 0 || st.LiveKVBytes <= 0 {
			t.Fatalf("step %+v: want a positive time and live KV bytes", st)
		}
	}
	tokens := 0
	for _, r := range got {
		tokens += len(r.Tokens) - 1
	}
	if batched != tokens || most < 2 || most > 3 {
		t.Errorf("steps decoded %d sequence-tokens (want %d), at most %d at once (want 2 or 3)", batched, tokens, most)
	}
	if _, err := New(Config{Model: m, Pool: pool, PrefillChunk: -1}); err == nil {
		t.Error("a negative PrefillChunk: no error")
	}
}
