package cpu

import (
	"fmt"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/kvpool"
)

// PagedBackend is the CPU backend with its KV caches in one shared block pool (the
// serving setup): NewKVCache makes PagedKVCaches whose heads hold block tables into the
// pool's memory, and Attention reads them through the tables. Every other operation is
// the plain CPU backend's.
type PagedBackend struct {
	*Backend
	pool    *kvpool.Pool
	headDim int
	// k and v are the pool's memory: block id b holds rows [b*BlockTokens, (b+1)*BlockTokens)
	// of [Blocks*BlockTokens, headDim].
	k, v []float32
}

var _ backend.Backend = (*PagedBackend)(nil)

// NewPaged allocates the memory of pool's blocks for KV heads of headDim values (float32)
// and returns a backend whose caches live in it.
func NewPaged(b *Backend, pool *kvpool.Pool, headDim int) (*PagedBackend, error) {
	if want := int64(pool.BlockTokens()) * int64(headDim) * 2 * 4; pool.BlockBytes() != want {
		return nil, fmt.Errorf("cpu paged: pool blocks of %d bytes, but %d tokens of head dim %d (float32 keys and values) take %d", pool.BlockBytes(), pool.BlockTokens(), headDim, want)
	}
	rows := pool.Blocks() * pool.BlockTokens()
	return &PagedBackend{Backend: b, pool: pool, headDim: headDim, k: make([]float32, rows*headDim), v: make([]float32, rows*headDim)}, nil
}

// Pool is the block pool the caches draw from.
func (p *PagedBackend) Pool() *kvpool.Pool { return p.pool }

// PagedKVCache is a per-head KV cache whose heads are block tables into a PagedBackend's
// pool. A head holds ceil(len/BlockTokens) blocks: blocks are taken as tokens arrive and
// given back when Compact or Reset shorten the head, so eviction frees memory for other
// sequences. Compact and Clone keep room for their reserve (rounded up to whole blocks);
// NewKVCache takes no blocks whatever its reserve (blocks come on demand, and a
// constructor cannot report a full pool).
type PagedKVCache struct {
	p                        *PagedBackend
	layers, kvHeads, headDim int
	heads                    [][]pagedHead // [layer][kv head]
}

// pagedHead is one head's block table and length.
type pagedHead struct {
	blocks []int
	n      int
}

var _ backend.KVCache = (*PagedKVCache)(nil)

// NewKVCache makes an empty paged cache; it holds no blocks until tokens arrive.
func (p *PagedBackend) NewKVCache(layers, kvHeads, headDim, _ int) backend.KVCache {
	if headDim != p.headDim {
		panic(fmt.Sprintf("cpu paged: cache of head dim %d from a pool of head dim %d", headDim, p.headDim))
	}
	c := &PagedKVCache{p: p, layers: layers, kvHeads: kvHeads, headDim: headDim, heads: make([][]pagedHead, layers)}
	for i := range c.heads {
		c.heads[i] = make([]pagedHead, kvHeads)
	}
	return c
}

func (c *PagedKVCache) Layers() int             { return c.layers }
func (c *PagedKVCache) KVHeads() int            { return c.kvHeads }
func (c *PagedKVCache) HeadDim() int            { return c.headDim }
func (c *PagedKVCache) Len(layer, head int) int { return c.heads[layer][head].n }

// Blocks is the number of pool blocks the cache holds.
func (c *PagedKVCache) Blocks() int {
	n := 0
	for _, l := range c.heads {
		for _, h := range l {
			n += len(h.blocks)
		}
	}
	return n
}

func (c *PagedKVCache) Bytes() int64 { return int64(c.Blocks()) * c.p.pool.BlockBytes() }

func (c *PagedKVCache) LiveBytes() int64 {
	var n int64
	for _, l := range c.heads {
		for _, h := range l {
			n += int64(h.n) * int64(c.headDim) * 2 * 4
		}
	}
	return n
}

// row is the pool row of entry i of head h.
func (c *PagedKVCache) row(h *pagedHead, i int) int {
	bt := c.p.pool.BlockTokens()
	return h.blocks[i/bt]*bt + i%bt
}

// span is the [headDim] slice of buf at entry i of head h.
func (c *PagedKVCache) span(buf []float32, h *pagedHead, i int) []float32 {
	r := c.row(h, i) * c.headDim
	return buf[r : r+c.headDim]
}

func (c *PagedKVCache) gather(buf []float32, layer, head int) []float32 {
	h := &c.heads[layer][head]
	out := make([]float32, 0, h.n*c.headDim)
	for i := 0; i < h.n; i++ {
		out = append(out, c.span(buf, h, i)...)
	}
	return out
}

func (c *PagedKVCache) Keys(layer, head int) []float32   { return c.gather(c.p.k, layer, head) }
func (c *PagedKVCache) Values(layer, head int) []float32 { return c.gather(c.p.v, layer, head) }

// fit makes head h hold exactly the blocks for its length plus reserve tokens: it gives
// back the rest, or takes more (an error wrapping backend.ErrOutOfMemory when the pool
// is full; the head keeps its entries either way).
func (c *PagedKVCache) fit(h *pagedHead, reserve int) error {
	want := c.p.pool.BlocksFor(h.n + reserve)
	switch {
	case want < len(h.blocks):
		c.p.pool.Free(h.blocks[want:]...)
		h.blocks = h.blocks[:want:want]
	case want > len(h.blocks):
		ids, err := c.p.pool.Alloc(want - len(h.blocks))
		if err != nil {
			return fmt.Errorf("cpu paged: reserve of %d tokens: %w: %w", reserve, backend.ErrOutOfMemory, err)
		}
		h.blocks = append(h.blocks, ids...)
	}
	return nil
}

// appendTokens writes n new rows per head from k and v ([n, kvHeads*headDim]). The blocks
// for all heads are taken first, all or none, so a full pool leaves the cache unchanged;
// it panics with an error wrapping backend.ErrOutOfMemory (model.Forward returns it).
func (c *PagedKVCache) appendTokens(layer int, k, v *Mat) {
	n, d := k.R, c.headDim
	heads := c.heads[layer]
	need := 0
	for h := range heads {
		need += max(0, c.p.pool.BlocksFor(heads[h].n+n)-len(heads[h].blocks))
	}
	ids, err := c.p.pool.Alloc(need)
	if err != nil {
		panic(fmt.Errorf("cpu paged: layer %d: %w: %w", layer, backend.ErrOutOfMemory, err))
	}
	for h := range heads {
		hd := &heads[h]
		more := max(0, c.p.pool.BlocksFor(hd.n+n)-len(hd.blocks))
		hd.blocks, ids = append(hd.blocks, ids[:more]...), ids[more:]
		for i := 0; i < n; i++ {
			copy(c.span(c.p.k, hd, hd.n+i), k.Data[i*k.C+h*d:i*k.C+(h+1)*d])
			copy(c.span(c.p.v, hd, hd.n+i), v.Data[i*v.C+h*d:i*v.C+(h+1)*d])
		}
		hd.n += n
	}
}

// Compact moves each head's kept entries to its front (keep is ascending, so entry i
// comes from keep[i] >= i and nothing is overwritten before it is read) and gives back
// the blocks past the new length plus reserve.
func (c *PagedKVCache) Compact(layer int, keep [][]int, reserve int) error {
	if reserve < 0 {
		return fmt.Errorf("kv cache: compact layer %d with negative reserve %d", layer, reserve)
	}
	if layer < 0 || layer >= c.layers {
		return fmt.Errorf("kv cache: layer %d out of range [0, %d)", layer, c.layers)
	}
	if len(keep) != c.kvHeads {
		return fmt.Errorf("kv cache: compact layer %d: %d keep lists for %d KV heads", layer, len(keep), c.kvHeads)
	}
	heads := c.heads[layer]
	for h, idx := range keep {
		for i, j := range idx {
			if j < 0 || j >= heads[h].n || (i > 0 && j <= idx[i-1]) {
				return fmt.Errorf("kv cache: compact layer %d head %d: keep indices must be ascending in [0, %d), got %d at %d", layer, h, heads[h].n, j, i)
			}
		}
	}
	for h, idx := range keep {
		hd := &heads[h]
		for i, j := range idx {
			if i != j {
				copy(c.span(c.p.k, hd, i), c.span(c.p.k, hd, j))
				copy(c.span(c.p.v, hd, i), c.span(c.p.v, hd, j))
			}
		}
		hd.n = len(idx)
		if err := c.fit(hd, reserve); err != nil {
			return fmt.Errorf("kv cache: compact layer %d head %d: %w", layer, h, err)
		}
	}
	return nil
}

// Truncate drops entries past the first n of every head, keeping their blocks.
func (c *PagedKVCache) Truncate(n int) error {
	for li, l := range c.heads {
		for h, hd := range l {
			if n < 0 || n > hd.n {
				return fmt.Errorf("kv cache: truncate to %d tokens, but layer %d head %d holds %d", n, li, h, hd.n)
			}
		}
	}
	for _, l := range c.heads {
		for h := range l {
			l[h].n = n
		}
	}
	return nil
}

// Clone copies the cache into new blocks of the same pool, with room for reserve more
// tokens per head; a full pool is an error wrapping backend.ErrOutOfMemory (and takes
// nothing).
func (c *PagedKVCache) Clone(reserve int) (backend.KVCache, error) {
	if reserve < 0 {
		return nil, fmt.Errorf("kv cache: clone with negative reserve %d", reserve)
	}
	need := 0
	for _, l := range c.heads {
		for _, hd := range l {
			need += c.p.pool.BlocksFor(hd.n + reserve)
		}
	}
	ids, err := c.p.pool.Alloc(need)
	if err != nil {
		return nil, fmt.Errorf("cpu paged: clone: %w: %w", backend.ErrOutOfMemory, err)
	}
	n := c.p.NewKVCache(c.layers, c.kvHeads, c.headDim, 0).(*PagedKVCache)
	for li, l := range c.heads {
		for h, hd := range l {
			nh := &n.heads[li][h]
			nb := c.p.pool.BlocksFor(hd.n + reserve)
			nh.blocks, ids = ids[:nb:nb], ids[nb:]
			nh.n = hd.n
			for i := 0; i < hd.n; i++ {
				copy(n.span(c.p.k, nh, i), c.span(c.p.k, &l[h], i))
				copy(n.span(c.p.v, nh, i), c.span(c.p.v, &l[h], i))
			}
		}
	}
	return n, nil
}

// Reset empties the cache and gives all its blocks back to the pool.
func (c *PagedKVCache) Reset() {
	for _, l := range c.heads {
		for h := range l {
			c.p.pool.Free(l[h].blocks...)
			l[h] = pagedHead{}
		}
	}
}

// Attention is the CPU backend's attention, reading a PagedKVCache through its block
// tables (no copy of the cached keys and values); other caches go to the plain backend.
func (p *PagedBackend) Attention(out, q, k, v backend.Tensor, cache backend.KVCache, layer int, scale float32) {
	c, ok := cache.(*PagedKVCache)
	if !ok {
		p.Backend.Attention(out, q, k, v, cache, layer, scale)
		return
	}
	om, qm := mat(out), mat(q)
	c.appendTokens(layer, mat(k), mat(v))
	d := c.headDim
	n := qm.R
	heads := qm.C / d
	group := heads / c.kvHeads
	const rowsPerTask = 16
	rowBlocks := (n + rowsPerTask - 1) / rowsPerTask
	parallelFor(p.threads(), heads*rowBlocks, func(task int) {
		h, blk := task/rowBlocks, task%rowBlocks
		hd := &c.heads[layer][h/group]
		scores := make([]float32, hd.n)
		for i := blk * rowsPerTask; i < min((blk+1)*rowsPerTask, n); i++ {
			visible := hd.n - n + i + 1
			qrow := qm.Data[i*qm.C+h*d : i*qm.C+(h+1)*d]
			attendRow(om.Data[i*om.C+h*d:i*om.C+(h+1)*d], qrow, func(j int) []float32 { return c.span(c.p.k, hd, j) },
				func(j int) []float32 { return c.span(c.p.v, hd, j) }, scores[:visible], d, scale)
		}
	})
}
