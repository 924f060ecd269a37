//go:build cuda

package cuda

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/backend/backendtest"
	"github.com/lukv/lukv/backend/cpu"
)

// chunkedKeep is a compaction of one chunk step of TestReservedCacheChunkedAttention:
// per head, how many of its tokens it keeps (every other one, from the end, so the newest
// survive); a negative count keeps them all.
type chunkedKeep []int

func (k chunkedKeep) lists(c backend.KVCache) [][]int {
	out := make([][]int, c.KVHeads())
	for h := range out {
		n := c.Len(0, h)
		want := k[h%len(k)]
		if want < 0 || want > n {
			want = n
		}
		for j := n - 1; j >= 0 && len(out[h]) < want; j -= 2 {
			out[h] = append([]int{j}, out[h]...)
		}
		for j := n - 2; j >= 0 && len(out[h]) < want; j -= 2 { // fewer than twice the count
			out[h] = insertSorted(out[h], j)
		}
	}
	return out
}

func insertSorted(s []int, x int) []int {
	i := 0
	for i < len(s) && s[i] < x {
		i++
	}
	return append(s[:i], append([]int{x}, s[i:]...)...)
}

// runChunked runs chunks of attention over cache on be, compacting after every chunk as
// keeps say (reserve = the next chunk), then decode steps, and returns every output.
func runChunked(t *testing.T, be backend.Backend, cache backend.KVCache, r *rand.Rand, heads, kvHeads, hd int, chunks []int, keeps []chunkedKeep, decode int) [][]float32 {
	t.Helper()
	var outs [][]float32
	step := func(n int) {
		q, k, v := randn(r, n*heads*hd), randn(r, n*kvHeads*hd), randn(r, n*kvHeads*hd)
		out := be.Alloc(n, heads*hd)
		be.Attention(out, backendtest.Upload(t, be, q, n, heads*hd), backendtest.Upload(t, be, k, n, kvHeads*hd),
			backendtest.Upload(t, be, v, n, kvHeads*hd), cache, 0, 0.09)
		outs = append(outs, be.Read(out))
		be.Free(out)
	}
	for i, n := range chunks {
		step(n)
		reserve := decode
		if i+1 < len(chunks) {
			reserve = chunks[i+1]
		}
		if err := cache.Compact(0, keeps[i].lists(cache), reserve); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < decode; i++ {
		step(1)
	}
	return outs
}

// TestReservedCacheChunkedAttention: a cache with reserved rows (ReserveRows, as chunked
// eviction sizes it) compacts in place after every chunk, with heads of very different
// lengths (0, 1, a few, hundreds), and every chunk's attention over the kept tokens plus
// the chunk, then decode, gives what the CPU backend gives; the buffers are allocated
// once (no reallocation after the reservation) and the cache reports the reserved size.
// Run with the float32 kernels and with the tensor cores and a bf16 cache (there against
// the same backend without a reservation: in-place and reallocated compaction must give
// identical bits).
func TestReservedCacheChunkedAttention(t *testing.T) {
	const heads, kvHeads, hd = 32, 8, 128
	chunks := []int{300, 257, 64, 129, 200}
	keeps := []chunkedKeep{
		{0, 1, 5, 150, -1, 2, 40, 299},
		{1, 0, 200, 3, 100, -1, 7, 64},
		{-1, 2, 0, 90, 1, 33, 300, 5},
		{4, 64, 1, 0, 250, 9, -1, 17},
		{10, 10, 10, 10, 0, 1, 500, 2},
	}
	reserveRows := func(t *testing.T, c *KVCache) {
		rows := 0
		for h := 0; h < kvHeads; h++ {
			rows += 600 + 300 // more than any head holds plus the biggest chunk
		}
		if err := c.ReserveRows(0, rows); err != nil {
			t.Fatal(err)
		}
		if got, want := c.Bytes(), int64(rows)*hd*2*c.esz(); got != want {
			t.Fatalf("reserved cache holds %d bytes, want %d", got, want)
		}
	}
	t.Run("f32_vs_cpu", func(t *testing.T) {
		b := testBackend(t)
		ref := cpu.New()
		gc := b.NewKVCache(1, kvHeads, hd, chunks[0]).(*KVCache)
		defer gc.Release()
		reserveRows(t, gc)
		before := gc.Reallocations()
		cc := ref.NewKVCache(1, kvHeads, hd, chunks[0])
		got := runChunked(t, b, gc, rand.New(rand.NewPCG(7, 1)), heads, kvHeads, hd, chunks, keeps, 3)
		want := runChunked(t, ref, cc, rand.New(rand.NewPCG(7, 1)), heads, kvHeads, hd, chunks, keeps, 3)
		for i := range want {
			backendtest.Check(t, fmt.Sprintf("call %d", i), got[i], want[i], f32Tol)
		}
		backendtest.SameCache(t, "caches at the end", gc, cc)
		if n := gc.Reallocations() - before; n != 0 {
			t.Errorf("the reserved cache reallocated %d times", n)
		}
	})
	t.Run("tc_bf16_in_place_vs_reallocated", func(t *testing.T) {
		b, err := New(Options{TensorCores: true, KVBF16: true, Sync: true})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		rc := b.NewKVCache(1, kvHeads, hd, chunks[0]).(*KVCache)
		defer rc.Release()
		reserveRows(t, rc)
		pc := b.NewKVCache(1, kvHeads, hd, chunks[0]).(*KVCache)
		defer pc.Release()
		calls := b.attnTC.calls
		got := runChunked(t, b, rc, rand.New(rand.NewPCG(8, 1)), heads, kvHeads, hd, chunks, keeps, 2)
		if b.attnTC.calls == calls {
			t.Fatal("the tensor-core attention never ran")
		}
		want := runChunked(t, b, pc, rand.New(rand.NewPCG(8, 1)), heads, kvHeads, hd, chunks, keeps, 2)
		for i := range want {
			backendtest.Check(t, fmt.Sprintf("call %d", i), got[i], want[i], 0)
		}
		backendtest.SameCache(t, "caches at the end", rc, pc)
		if pc.Reallocations() < len(chunks) {
			t.Errorf("the unreserved cache reallocated %d times for %d compactions: the comparison did not compare the two paths", pc.Reallocations(), len(chunks))
		}
	})
}

// TestReserveRowsBadInput: a reservation for a layer the cache lacks, or a negative one,
// is an error; a reservation below what the layer holds changes nothing.
func TestReserveRowsBadInput(t *testing.T) {
	b := testBackend(t)
	c := b.NewKVCache(2, 2, 64, 10).(*KVCache)
	defer c.Release()
	if err := c.ReserveRows(2, 100); err == nil {
		t.Error("ReserveRows(layer 2) of a 2-layer cache: no error")
	}
	if err := c.ReserveRows(0, -1); err == nil {
		t.Error("ReserveRows(-1): no error")
	}
	bytes := c.Bytes()
	if err := c.ReserveRows(1, 5); err != nil {
		t.Fatal(err)
	}
	if c.Bytes() != bytes {
		t.Errorf("a reservation below the layer's rows changed its bytes %d -> %d", bytes, c.Bytes())
	}
}
