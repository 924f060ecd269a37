package cpu_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/backend/backendtest"
	"github.com/lukv/lukv/backend/cpu"
	"github.com/lukv/lukv/eviction"
	"github.com/lukv/lukv/kvpool"
	"github.com/lukv/lukv/model"
	"github.com/lukv/lukv/models"
)

// anyDimPaged runs the conformance suite, whose cases use several head dims, over paged
// caches: one pool and PagedBackend per head dim.
type anyDimPaged struct {
	*cpu.Backend
	t      *testing.T
	stores map[int]*cpu.PagedBackend
}

func (a *anyDimPaged) NewKVCache(layers, kvHeads, headDim, reserve int) backend.KVCache {
	p, ok := a.stores[headDim]
	if !ok {
		// Blocks of one token, so that Bytes counts tokens exactly as the suite expects of
		// a contiguous cache (reserve included); TestPagedCompactFreesBlocks covers
		// multi-token blocks.
		pool, err := kvpool.ForBudget(32<<20, 1, headDim, 4)
		if err != nil {
			a.t.Fatal(err)
		}
		if p, err = cpu.NewPaged(a.Backend, pool, headDim); err != nil {
			a.t.Fatal(err)
		}
		a.stores[headDim] = p
	}
	return p.NewKVCache(layers, kvHeads, headDim, reserve)
}

func (a *anyDimPaged) Attention(out, q, k, v backend.Tensor, cache backend.KVCache, layer int, scale float32) {
	a.stores[cache.HeadDim()].Attention(out, q, k, v, cache, layer, scale)
}

// TestPagedConformance: attention, incremental attention, compaction and cloning over
// paged caches (blocks of 4 tokens, so heads span many blocks) pass the same suite, at
// the same tolerance, as the contiguous CPU cache.
func TestPagedConformance(t *testing.T) {
	backendtest.Run(t, &anyDimPaged{Backend: cpu.New(), t: t, stores: map[int]*cpu.PagedBackend{}}, 1e-5)
}

func newPaged(t *testing.T, blocks, blockTokens, headDim int) *cpu.PagedBackend {
	t.Helper()
	pool, err := kvpool.New(blocks, blockTokens, int64(blockTokens*headDim*2*4))
	if err != nil {
		t.Fatal(err)
	}
	p, err := cpu.NewPaged(cpu.New(), pool, headDim)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func randTensor(t *testing.T, b backend.Backend, rows, cols int, seed float32) backend.Tensor {
	data := make([]float32, rows*cols)
	for i := range data {
		data[i] = float32((i*7919+int(seed*1000))%97)/97 - 0.5
	}
	return backendtest.Upload(t, b, data, rows, cols)
}

// TestPagedCompactFreesBlocks: appending takes ceil(len/blockTokens) blocks per head,
// compaction gives back the blocks past each head's new length, Clone takes its own,
// Reset returns everything.
func TestPagedCompactFreesBlocks(t *testing.T) {
	const bt, hd, kvHeads, heads, n = 4, 8, 2, 4, 18
	p := newPaged(t, 64, bt, hd)
	pool := p.Pool()
	c := p.NewKVCache(1, kvHeads, hd, 0).(*cpu.PagedKVCache)
	out := p.Alloc(n, heads*hd)
	p.Attention(out, randTensor(t, p, n, heads*hd, 1), randTensor(t, p, n, kvHeads*hd, 2), randTensor(t, p, n, kvHeads*hd, 3), c, 0, 0.3)
	if got, want := pool.UsedBlocks(), kvHeads*5; got != want || c.Blocks() != want { // ceil(18/4) = 5 per head
		t.Fatalf("after 18 tokens: pool used %d, cache %d blocks, want %d", got, c.Blocks(), want)
	}
	keys0 := c.Keys(0, 0)
	keep := [][]int{{0, 5, 6, 17}, {1, 2, 3, 4, 5, 6, 7, 8, 9}} // 1 and 3 blocks
	if err := c.Compact(0, keep, 0); err != nil {
		t.Fatal(err)
	}
	if got := pool.UsedBlocks(); got != 1+3 {
		t.Fatalf("after compaction: %d blocks used, want 4", got)
	}
	if c.Len(0, 0) != 4 || c.Len(0, 1) != 9 {
		t.Fatalf("lengths %d, %d after compaction", c.Len(0, 0), c.Len(0, 1))
	}
	keys := c.Keys(0, 0)
	for i, j := range keep[0] {
		if !slices.Equal(keys[i*hd:(i+1)*hd], keys0[j*hd:(j+1)*hd]) {
			t.Fatalf("kept entry %d is not old entry %d", i, j)
		}
	}
	if c.Bytes() != int64(4)*pool.BlockBytes() || c.LiveBytes() != int64(4+9)*hd*2*4 {
		t.Fatalf("bytes %d live %d", c.Bytes(), c.LiveBytes())
	}
	cl, err := c.Clone(0)
	if err != nil {
		t.Fatal(err)
	}
	backendtest.SameCache(t, "clone", cl, c)
	if pool.UsedBlocks() != 8 {
		t.Fatalf("after clone: %d used, want 8", pool.UsedBlocks())
	}
	// A reserve keeps room past the kept entries: head 0 keeps 2 + 7 tokens (3 blocks),
	// head 1 keeps 1 + 7 (2 blocks).
	if err := c.Compact(0, [][]int{{0, 1}, {3}}, 7); err != nil {
		t.Fatal(err)
	}
	if got := c.Blocks(); got != 3+2 || pool.UsedBlocks() != 5+4 {
		t.Fatalf("after compaction with reserve 7: cache %d blocks (want 5), pool %d used (want 9)", got, pool.UsedBlocks())
	}
	c.Reset()
	cl.Reset()
	if pool.UsedBlocks() != 0 {
		t.Fatalf("after reset: %d blocks used, want 0", pool.UsedBlocks())
	}
}

// TestPagedFullPool: a pool too small for the new tokens makes the forward pass return
// an error wrapping backend.ErrOutOfMemory and leaves the pool as it was.
func TestPagedFullPool(t *testing.T) {
	m := loadDefault(t, 8) // 8 blocks of 16 tokens: less than one token in every head
	cache := m.NewCache(0)
	_, err := m.Forward(context.Background(), []int{0, 5, 6}, 0, cache, model.ForwardOptions{})
	if !errors.Is(err, backend.ErrOutOfMemory) || !errors.Is(err, kvpool.ErrFull) {
		t.Fatalf("got %v, want ErrOutOfMemory and kvpool.ErrFull", err)
	}
	cache.Reset()
	if used := m.Backend.(*cpu.PagedBackend).Pool().UsedBlocks(); used != 0 {
		t.Fatalf("%d blocks used after the failed pass and Reset", used)
	}
}

func loadDefault(t *testing.T, blocks int) *model.Model {
	t.Helper()
	dir, err := models.DefaultDir()
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Load(dir, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	if blocks == 0 {
		return m
	}
	c := m.Config
	pool, err := kvpool.New(blocks, 16, int64(16*c.HeadDim*2*4))
	if err != nil {
		t.Fatal(err)
	}
	p, err := cpu.NewPaged(cpu.New(), pool, c.HeadDim)
	if err != nil {
		t.Fatal(err)
	}
	m.Backend = p // the weights are plain CPU tensors either way
	return m
}

// TestPagedModelSameLogits: the default model over a paged cache gives the same logits,
// bit for bit, as over the contiguous cache: prefill, eviction (compaction), then decode.
func TestPagedModelSameLogits(t *testing.T) {
	plain, paged := loadDefault(t, 0), loadDefault(t, 4096)
	prompt := make([]int, 70)
	for i := range prompt {
		prompt[i] = (i*37 + 11) % plain.Config.VocabSize
	}
	scorer, err := eviction.NewScorer("expected-attention")
	if err != nil {
		t.Fatal(err)
	}
	method := eviction.Method{Scorer: scorer, Allocator: eviction.UniformAllocator{}, Ratio: 0.5, Sink: 4, Window: 4}
	run := func(m *model.Model) ([][]float32, backend.KVCache) {
		ctx := context.Background()
		col := eviction.NewCollector(m, method.Scorer)
		cache := m.NewCache(0)
		l, err := m.Forward(ctx, prompt, 0, cache, model.ForwardOptions{Observer: col})
		if err != nil {
			t.Fatal(err)
		}
		logits := [][]float32{l}
		if err := method.Compress(cache, col.Scores, 8); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 5; i++ {
			if l, err = m.Forward(ctx, []int{i + 3}, len(prompt)+i, cache, model.ForwardOptions{}); err != nil {
				t.Fatal(err)
			}
			logits = append(logits, l)
		}
		return logits, cache
	}
	want, _ := run(plain)
	got, cache := run(paged)
	for i := range want {
		if !slices.Equal(got[i], want[i]) {
			t.Fatalf("step %d: paged logits differ (rel err %g)", i, backendtest.RelErr(got[i], want[i]))
		}
	}
	pool := paged.Backend.(*cpu.PagedBackend).Pool()
	if pool.UsedBlocks() != cache.(*cpu.PagedKVCache).Blocks() {
		t.Fatalf("pool used %d, cache holds %d", pool.UsedBlocks(), cache.(*cpu.PagedKVCache).Blocks())
	}
	cache.Reset()
	if pool.UsedBlocks() != 0 {
		t.Fatalf("%d blocks used after Reset", pool.UsedBlocks())
	}
}
