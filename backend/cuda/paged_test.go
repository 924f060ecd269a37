//go:build cuda

package cuda

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"sync"
	"testing"

	"gorgonia.org/cu"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/backend/backendtest"
	"github.com/lukv/lukv/backend/cpu"
	"github.com/lukv/lukv/eviction"
	"github.com/lukv/lukv/generate"
	"github.com/lukv/lukv/kvpool"
	"github.com/lukv/lukv/sched"
)

// anyDimPaged runs the conformance suite, whose cases use several head dims, over paged
// caches: one pool and PagedBackend per head dim, all on one device backend.
type anyDimPaged struct {
	*Backend
	t           *testing.T
	prefillRows int
	stores      map[int]*PagedBackend
}

func (a *anyDimPaged) NewKVCache(layers, kvHeads, headDim, reserve int) backend.KVCache {
	p, ok := a.stores[headDim]
	if !ok {
		// Blocks of one token, so that Bytes counts tokens exactly as the suite expects of
		// a contiguous cache (reserve included).
		pool, err := kvpool.ForBudget(32<<20, 1, headDim, a.Backend.KVElemBytes())
		if err != nil {
			a.t.Fatal(err)
		}
		if p, err = NewPaged(a.Backend, pool, headDim); err != nil {
			a.t.Fatal(err)
		}
		p.PrefillRows = a.prefillRows
		a.stores[headDim] = p
		a.t.Cleanup(p.Release)
	}
	return p.NewKVCache(layers, kvHeads, headDim, reserve)
}

func (a *anyDimPaged) Attention(out, q, k, v backend.Tensor, cache backend.KVCache, layer int, scale float32) {
	a.stores[cache.HeadDim()].Attention(out, q, k, v, cache, layer, scale)
}

// TestPagedConformance: the paged caches pass the backend suite at the float32
// tolerance, with every attention through the paged kernel, and with prefills of 16
// rows or more through the contiguous scratch cache.
func TestPagedConformance(t *testing.T) {
	for _, rows := range []int{1 << 30, 16} {
		t.Run(fmt.Sprintf("prefillRows%d", rows), func(t *testing.T) {
			backendtest.Run(t, &anyDimPaged{Backend: testBackend(t), t: t, prefillRows: rows, stores: map[int]*PagedBackend{}}, f32Tol)
		})
	}
}

var (
	pagedBF16Once sync.Once
	pagedBF16     *Backend
)

// newPagedPair makes a CPU paged backend and a CUDA one over pools of the same shape
// (blocks of bt tokens), float32 or bf16 KV on the GPU.
func newPagedPair(t *testing.T, blocks, bt, hd int, kvBF16 bool) (*cpu.PagedBackend, *PagedBackend) {
	t.Helper()
	cpool, err := kvpool.New(blocks, bt, int64(bt*hd*2*4))
	if err != nil {
		t.Fatal(err)
	}
	cb, err := cpu.NewPaged(cpu.New(), cpool, hd)
	if err != nil {
		t.Fatal(err)
	}
	b := testBackend(t)
	if kvBF16 {
		pagedBF16Once.Do(func() { pagedBF16 = kvBF16Backend(t) })
		b = pagedBF16
	}
	gpool, err := kvpool.New(blocks, bt, int64(bt*hd*2*b.KVElemBytes()))
	if err != nil {
		t.Fatal(err)
	}
	gb, err := NewPaged(b, gpool, hd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gb.Release)
	return cb, gb
}

// pagedCase is one random scenario: sequences prefilled to their lengths, evicted, then
// decoded together.
type pagedCase struct {
	heads, kvHeads, hd, bt int
	prompts                []int // prompt length per sequence
	keepFrac               float64
	steps                  int
	prefillRows            int
}

// TestPagedAttentionAgainstCPU: sequences of odd lengths (around block boundaries, one
// long enough for the split-K) are prefilled, compacted to random per-head keep lists
// (heads of 0 and 1 entries included) and decoded together in batched steps on the GPU
// (one launch per layer step); every output equals the CPU paged cache's attention of
// the same rows, the caches hold the same entries bit for bit, and the pools the same
// number of blocks. With a bf16 GPU cache the CPU is fed the bf16-rounded keys and
// values, so both attend over the same numbers.
func TestPagedAttentionAgainstCPU(t *testing.T) {
	cases := []pagedCase{
		{heads: 4, kvHeads: 2, hd: 16, bt: 4, prompts: []int{1, 3, 4, 5, 9}, keepFrac: 0.5, steps: 6, prefillRows: 1 << 30},
		{heads: 8, kvHeads: 2, hd: 64, bt: 16, prompts: []int{15, 16, 17, 33, 100}, keepFrac: 0.3, steps: 20, prefillRows: 64},
		{heads: 32, kvHeads: 8, hd: 128, bt: 16, prompts: []int{2000, 31, 257}, keepFrac: 0.2, steps: 5, prefillRows: 64},
		{heads: 16, kvHeads: 2, hd: 36, bt: 8, prompts: []int{7, 70, 700}, keepFrac: 0.6, steps: 9, prefillRows: 1 << 30},
		{heads: 8, kvHeads: 4, hd: 256, bt: 16, prompts: []int{600, 1}, keepFrac: 0.1, steps: 4, prefillRows: 64},
		{heads: 4, kvHeads: 4, hd: 128, bt: 32, prompts: []int{1300}, keepFrac: 1, steps: 3, prefillRows: 1 << 30},
	}
	for _, bf := range []bool{false, true} {
		for ci, pc := range cases {
			t.Run(fmt.Sprintf("bf16_%v/case%d", bf, ci), func(t *testing.T) { runPagedCase(t, pc, bf, uint64(ci)) })
		}
	}
}

func runPagedCase(t *testing.T, pc pagedCase, kvBF16 bool, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 77))
	layers := 2
	cb, gb := newPagedPair(t, 4096, pc.bt, pc.hd, kvBF16)
	gb.PrefillRows = pc.prefillRows
	scale := float32(1 / math.Sqrt(float64(pc.hd)))
	qc, kc := pc.heads*pc.hd, pc.kvHeads*pc.hd
	round := func(x []float32) []float32 {
		if kvBF16 {
			return backendtest.RoundBF16(x)
		}
		return x
	}
	// step runs n rows per sequence through layer on both sides and compares.
	type pair struct{ c, g backend.KVCache }
	var seqs []pair
	for range pc.prompts {
		seqs = append(seqs, pair{cb.NewKVCache(layers, pc.kvHeads, pc.hd, 0), gb.NewKVCache(layers, pc.kvHeads, pc.hd, 0)})
	}
	step := func(what string, rows []int, idx []int, layer int) {
		total := 0
		for _, n := range rows {
			total += n
		}
		q, k, v := randn(r, total*qc), randn(r, total*kc), randn(r, total*kc)
		var want []float32
		r0 := 0
		for i, n := range rows {
			out := cb.Alloc(n, qc)
			cb.Attention(out, backendtest.Upload(t, cb, q[r0*qc:(r0+n)*qc], n, qc), backendtest.Upload(t, cb, round(k[r0*kc:(r0+n)*kc]), n, kc),
				backendtest.Upload(t, cb, round(v[r0*kc:(r0+n)*kc]), n, kc), seqs[idx[i]].c, layer, scale)
			want = append(want, cb.Read(out)...)
			r0 += n
		}
		out := gb.Alloc(total, qc)
		caches := make([]backend.KVCache, len(idx))
		for i, s := range idx {
			caches[i] = seqs[s].g
		}
		qt, kt, vt := backendtest.Upload(t, gb, q, total, qc), backendtest.Upload(t, gb, k, total, kc), backendtest.Upload(t, gb, v, total, kc)
		if len(idx) == 1 {
			gb.Attention(out, qt, kt, vt, caches[0], layer, scale)
		} else {
			gb.AttentionBatch(out, qt, kt, vt, caches, rows, layer, scale)
		}
		backendtest.Check(t, what, gb.Read(out), want, f32Tol)
	}
	// Prefill each sequence alone.
	for s, n := range pc.prompts {
		for layer := 0; layer < layers; layer++ {
			step(fmt.Sprintf("prefill seq %d (%d rows) layer %d", s, n, layer), []int{n}, []int{s}, layer)
		}
	}
	// Evict: per head a random keep list; head 0 keeps nothing, head 1 one entry.
	if pc.keepFrac < 1 {
		for s := range seqs {
			for layer := 0; layer < layers; layer++ {
				keep := make([][]int, pc.kvHeads)
				n := seqs[s].c.Len(layer, 0)
				for h := range keep {
					for j := 0; j < n; j++ {
						if (h == 1 && j == n-1) || (h > 1 && r.Float64() < pc.keepFrac) {
							keep[h] = append(keep[h], j)
						}
					}
				}
				if pc.kvHeads == 1 {
					keep[0] = []int{n - 1}
				}
				reserve := r.IntN(2 * pc.bt)
				if err := seqs[s].c.Compact(layer, keep, reserve); err != nil {
					t.Fatal(err)
				}
				if err := seqs[s].g.Compact(layer, keep, reserve); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	// Decode every sequence together, one row each; then two rows each (a speculative-like
	// step through the paged kernel) when the prefill path is not forced.
	all := make([]int, len(seqs))
	ones := make([]int, len(seqs))
	for i := range all {
		all[i], ones[i] = i, 1
	}
	for st := 0; st < pc.steps; st++ {
		for layer := 0; layer < layers; layer++ {
			step(fmt.Sprintf("decode step %d layer %d", st, layer), ones, all, layer)
		}
	}
	twos := make([]int, len(seqs))
	for i := range twos {
		twos[i] = 1 + i%3
	}
	step("batched rows 1..3", twos, all, 1)
	for s, sq := range seqs {
		backendtest.SameCache(t, fmt.Sprintf("sequence %d", s), sq.g, sq.c)
		if g, c := sq.g.Bytes()/gb.Pool().BlockBytes(), sq.c.Bytes()/cb.Pool().BlockBytes(); g != c {
			t.Errorf("sequence %d: %d blocks on the GPU, %d on the CPU", s, g, c)
		}
	}
	for _, sq := range seqs {
		sq.g.Reset()
	}
	if u := gb.Pool().UsedBlocks(); u != 0 {
		t.Errorf("after Reset of every cache the pool has %d blocks in use", u)
	}
}

// TestPagedPoolFullAndRelease: an append the pool cannot hold panics with an error
// wrapping backend.ErrOutOfMemory and leaves the cache and the pool as they were;
// Compact and Reset give blocks back.
func TestPagedPoolFullAndRelease(t *testing.T) {
	const bt, hd, kvHeads, heads = 4, 16, 2, 4
	_, gb := newPagedPair(t, 10, bt, hd, false)
	r := rand.New(rand.NewPCG(5, 6))
	c := gb.NewKVCache(1, kvHeads, hd, 0)
	feed := func(n int) (err error) {
		defer func() {
			if x := recover(); x != nil {
				e, ok := x.(error)
				if !ok {
					panic(x)
				}
				err = e
			}
		}()
		gb.Attention(gb.Alloc(n, heads*hd), backendtest.Upload(t, gb, randn(r, n*heads*hd), n, heads*hd),
			backendtest.Upload(t, gb, randn(r, n*kvHeads*hd), n, kvHeads*hd), backendtest.Upload(t, gb, randn(r, n*kvHeads*hd), n, kvHeads*hd), c, 0, 0.25)
		return nil
	}
	if err := feed(18); err != nil { // 5 blocks per head
		t.Fatal(err)
	}
	keys, keys0 := c.Keys(0, 1), c.Keys(0, 0)
	err := feed(3) // head needs 6 blocks each: 12 > 10
	if !errors.Is(err, backend.ErrOutOfMemory) {
		t.Fatalf("append past the pool: %v, want ErrOutOfMemory", err)
	}
	if c.Len(0, 0) != 18 || gb.Pool().UsedBlocks() != 10 || !reflect.DeepEqual(c.Keys(0, 1), keys) {
		t.Fatalf("after a refused append: length %d, %d blocks used; want 18, 10 and the same keys", c.Len(0, 0), gb.Pool().UsedBlocks())
	}
	if err := c.Compact(0, [][]int{{0, 17}, {}}, 0); err != nil {
		t.Fatal(err)
	}
	if u := gb.Pool().UsedBlocks(); u != 1 {
		t.Fatalf("after compaction to 2 and 0 entries: %d blocks used, want 1", u)
	}
	if got, want := c.Keys(0, 0), append(append([]float32(nil), keys0[:hd]...), keys0[17*hd:]...); !reflect.DeepEqual(got, want) {
		t.Fatalf("compacted head 0 holds other keys than entries 0 and 17")
	}
	if err := feed(3); err != nil {
		t.Fatal(err)
	}
	c.Reset()
	if u := gb.Pool().UsedBlocks(); u != 0 {
		t.Fatalf("after Reset: %d blocks used", u)
	}
}

// TestPagedServeOnGPU: the continuous-batching scheduler over the paged GPU cache (the
// default model, float32 KV, batched decode through AttentionBatch) gives every one of
// 6 concurrent greedy requests exactly the tokens of the same request generated alone on
// the plain GPU backend; requests with eviction run and evict; every block comes back.
func TestPagedServeOnGPU(t *testing.T) {
	b := testBackend(t)
	plain := loadTiny(t, b)
	cfg := plain.Config
	pool, err := kvpool.New(4096, 16, int64(16*cfg.HeadDim*2*4))
	if err != nil {
		t.Fatal(err)
	}
	pb, err := NewPaged(b, pool, cfg.HeadDim)
	if err != nil {
		t.Fatal(err)
	}
	defer pb.Release()
	m := loadTiny(t, pb)
	tok := tinyTokenizer(t)
	s, err := sched.New(sched.Config{Model: m, Pool: pool, MaxRunning: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	g := &generate.Generator{Model: plain, Tokenizer: tok}
	const n = 6
	prompts := make([][]int, n)
	for i := range prompts {
		prompts[i] = tok.Encode(fmt.Sprintf("Request %d: the quick brown fox jumps over the lazy dog %d times, and the dog said", i, 3*i+1), true)
	}
	got := make([][]int, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range prompts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := s.Generate(context.Background(), sched.Request{Prompt: prompts[i], MaxTokens: 12 + i, IgnoreEOS: true})
			if err == nil {
				got[i] = res.Tokens
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i := range prompts {
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		want, err := g.Generate(context.Background(), prompts[i], generate.Options{MaxNewTokens: 12 + i, IgnoreEOS: true})
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got[i], want.Tokens) {
			t.Errorf("request %d: scheduled on the paged GPU cache %v, alone %v", i, got[i], want.Tokens)
		}
	}
	// Eviction through the scheduler on the GPU: the device scores, the host plans, the
	// paged cache compacts (Compact) and gives the blocks back.
	for _, scorer := range []string{"expected-attention", "knorm"} {
		sc, err := eviction.NewScorer(scorer)
		if err != nil {
			t.Fatal(err)
		}
		meth := &eviction.Method{Scorer: sc, Allocator: eviction.UniformAllocator{}, Ratio: 0.5, Sink: 2, Window: 2}
		res, err := s.Generate(context.Background(), sched.Request{Prompt: prompts[0], MaxTokens: 8, IgnoreEOS: true, Method: meth})
		if err != nil {
			t.Fatalf("%s: %v", scorer, err)
		}
		if len(res.Tokens) != 8 || res.EvictedEntries == 0 {
			t.Errorf("%s: %d tokens, %d entries evicted; want 8 and some", scorer, len(res.Tokens), res.EvictedEntries)
		}
	}
	if u := pool.UsedBlocks(); u != 0 {
		t.Errorf("after every request: %d blocks in use", u)
	}
}

// BenchmarkPagedDecode: one batched decode step's attention over paged bf16 caches (32
// query and 8 KV heads of 128, blocks of 16 tokens): batch 1 at 32k (the split-K has to
// fill the GPU from 8 heads), batch 32 at 4k and at 1.6k (a 16k prompt after 90%
// eviction). GB/s counts the keys and values read once.
func BenchmarkPagedDecode(bm *testing.B) {
	for _, c := range [][2]int{{1, 32768}, {32, 4096}, {32, 1638}} {
		bm.Run(fmt.Sprintf("batch=%d/ctx=%d", c[0], c[1]), func(bm *testing.B) { benchPagedDecode(bm, c[0], c[1]) })
	}
}

func benchPagedDecode(bm *testing.B, batch, ctx int) {
	const heads, kvHeads, hd, bt = 32, 8, 128, 16
	b := backendWith(bm, Options{KVBF16: true})
	pool, err := kvpool.New(batch*kvHeads*((ctx+bm.N+64)/bt+2), bt, int64(bt*hd*2*2))
	if err != nil {
		bm.Fatal(err)
	}
	p, err := NewPaged(b, pool, hd)
	if err != nil {
		bm.Fatal(err)
	}
	defer p.Release()
	caches := make([]backend.KVCache, batch)
	func() {
		defer p.enter()()
		words := int64(pool.Blocks()) * bt * hd / 2 // bf16 pairs
		for _, buf := range []cu.DevicePtr{p.k, p.v} {
			if err := cu.MemsetD32(buf, 0x3c003c00, words); err != nil { // bf16 pairs of 0.0078
				bm.Fatal(err)
			}
		}
		for i := range caches {
			c := p.NewKVCache(1, kvHeads, hd, 0).(*PagedKVCache)
			if _, err := c.prepare(0, ctx); err != nil { // lengths and blocks, no data copied
				bm.Fatal(err)
			}
			caches[i] = c
		}
	}()
	r := rand.New(rand.NewPCG(46, 46))
	q, _ := b.Weight(randn(r, batch*heads*hd), batch, heads*hd)
	k, _ := b.Weight(randn(r, batch*kvHeads*hd), batch, kvHeads*hd)
	v, _ := b.Weight(randn(r, batch*kvHeads*hd), batch, kvHeads*hd)
	out := b.Alloc(batch, heads*hd)
	rows := make([]int, batch)
	for i := range rows {
		rows[i] = 1
	}
	sec := gpuSeconds(bm, b, func() { p.AttentionBatch(out, q, k, v, caches, rows, 0, 0.088) })
	bytes := float64(batch) * kvHeads * float64(ctx) * hd * 2 * 2
	bm.ReportMetric(bytes/sec/1e9, "GB/s")
	bm.ReportMetric(sec*1e6, "us/step")
}
