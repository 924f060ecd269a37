//go:build cuda

package cuda

// The paged KV pool of the server: PagedBackend is the CUDA backend with its KV caches
// in one device pool of fixed-size blocks shared by all sequences (kvpool hands out the
// block ids), and PagedKVCache is a cache whose (layer, KV head)s are block tables into
// it. Eviction (Compact) gives blocks back to the pool, which is how it turns into more
// concurrent sequences. Decode attention reads the block tables on the device
// (kernels/paged_attention.cu), for a whole batch of sequences in one launch
// (AttentionBatch, which model.ForwardBatch calls); a prefill of many rows gathers the
// sequence's layer into a contiguous scratch cache and runs the backend's own prefill
// attention (the tensor-core kernel with Options.TensorCores).
//
// Host and device: the host keeps every head's block ids and length; each (cache, layer)
// has a device table [kvHeads, stride] of block ids (stride grows by doubling). A launch
// uploads one small int32 descriptor (pagedDesc): the sequences' table pointers and
// lengths, the pool row of every new (row, KV head) entry, and the table entries the
// append must set for heads that took a new block. Lengths never live on the device.

import (
	"fmt"
	"math"
	"runtime"
	"unsafe"

	"gorgonia.org/cu"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/kvpool"
)

// pagedAppendKernels are the append kernels of kernels/paged_attention.cu by KV element
// type (0: float32, 1: bfloat16); pagedAttentionKernels the attention kernels by element
// type, dims per lane group (0: head dim <= 128, 1: <= 256) and query heads per KV head
// (rounded up to 1, 2, 4, 8: index 0..3).
var (
	pagedAppendKernels    = [2]string{"paged_append_f32", "paged_append_bf16"}
	pagedAttentionKernels = [2][2][4]string{
		{
			{"paged_attention_f32_t1_g1", "paged_attention_f32_t1_g2", "paged_attention_f32_t1_g4", "paged_attention_f32_t1_g8"},
			{"paged_attention_f32_t2_g1", "paged_attention_f32_t2_g2", "paged_attention_f32_t2_g4", "paged_attention_f32_t2_g8"},
		},
		{
			{"paged_attention_bf16_t1_g1", "paged_attention_bf16_t1_g2", "paged_attention_bf16_t1_g4", "paged_attention_bf16_t1_g8"},
			{"paged_attention_bf16_t2_g1", "paged_attention_bf16_t2_g2", "paged_attention_bf16_t2_g4", "paged_attention_bf16_t2_g8"},
		},
	}
)

const (
	pagedWarps     = 4 // PAGED_WARPS
	pagedMaxGroup  = 8 // query heads per KV head, at most
	pagedSeqWords  = 8 // int32 words per sequence in the descriptor
	pagedMinChunk  = 256
	pagedCopyBlock = 256
)

// PagedBackend is the CUDA backend whose NewKVCache makes PagedKVCaches in one device
// pool; every other operation is the plain backend's.
type PagedBackend struct {
	*Backend
	pool    *kvpool.Pool
	headDim int
	bf16    bool
	// k and v are the pool's memory: block b holds rows [b*BlockTokens, (b+1)*BlockTokens)
	// of [Blocks*BlockTokens, headDim] (bfloat16 with Options.KVBF16, else float32).
	k, v cu.DevicePtr
	// PrefillRows is the fewest rows of one sequence that attend through a contiguous
	// scratch cache and the backend's prefill attention instead of the paged kernel
	// (default 64; tests lower or raise it to cover both paths).
	PrefillRows int

	desc           devBuf     // the launch descriptor (int32)
	ring           pinnedRing // its staging memory (paged_upload.go)
	partO, partML  devBuf     // split-K partials
	scratch, pairs devBuf     // row copies (Keys, Values, Compact)
}

var _ backend.Backend = (*PagedBackend)(nil)
var _ backend.BatchedAttention = (*PagedBackend)(nil)

// NewPaged allocates the device memory of pool's blocks for KV heads of headDim (float32,
// or bfloat16 when b has Options.KVBF16) and returns a backend whose caches live in it.
// pool's BlockBytes must be what one block takes.
func NewPaged(b *Backend, pool *kvpool.Pool, headDim int) (*PagedBackend, error) {
	if headDim <= 0 || headDim%4 != 0 || headDim > maxHeadDim {
		return nil, fmt.Errorf("cuda paged: head dim %d: want a multiple of 4, at most %d", headDim, maxHeadDim)
	}
	esz := int64(b.KVElemBytes())
	if want := int64(pool.BlockTokens()) * int64(headDim) * 2 * esz; pool.BlockBytes() != want {
		return nil, fmt.Errorf("cuda paged: pool blocks of %d bytes, but %d tokens of head dim %d (keys and values of %d bytes) take %d", pool.BlockBytes(), pool.BlockTokens(), headDim, esz, want)
	}
	rows := int64(pool.Blocks()) * int64(pool.BlockTokens())
	if rows > 1<<31-1 {
		return nil, fmt.Errorf("cuda paged: %d pool rows do not fit 32-bit row indices", rows)
	}
	p := &PagedBackend{Backend: b, pool: pool, headDim: headDim, bf16: b.opt.KVBF16, PrefillRows: 64}
	defer b.enter()()
	var err error
	half := rows * int64(headDim) * esz
	if p.k, err = allocDevice(half, "paged KV pool (keys)"); err != nil {
		return nil, err
	}
	if p.v, err = allocDevice(half, "paged KV pool (values)"); err != nil {
		freeDevice(p.k)
		return nil, err
	}
	return p, nil
}

// Pool is the block pool the caches draw from.
func (p *PagedBackend) Pool() *kvpool.Pool { return p.pool }

// Release frees the pool's device memory, leaving the backend open; the caches must not
// be used afterwards.
func (p *PagedBackend) Release() {
	defer p.enter()()
	if err := cu.Synchronize(); err != nil {
		panic(fmt.Errorf("cuda paged: release: %w", err))
	}
	for _, d := range []*devBuf{&p.desc, &p.partO, &p.partML, &p.scratch, &p.pairs} {
		d.free()
	}
	p.ring.free()
	freeDevice(p.k)
	freeDevice(p.v)
	p.k, p.v = 0, 0
}

// Close frees the pool's memory and closes the backend.
func (p *PagedBackend) Close() error {
	p.Release()
	return p.Backend.Close()
}

func (p *PagedBackend) esz() int64 {
	if p.bf16 {
		return 2
	}
	return 4
}

// PagedKVCache is a per-head KV cache whose heads are block tables into a PagedBackend's
// pool. A head holds ceil(len/BlockTokens) blocks: blocks are taken as tokens arrive and
// given back when Compact or Reset shorten the head. Compact and Clone keep room for
// their reserve (rounded up to whole blocks); NewKVCache takes no blocks whatever its
// reserve (blocks come on demand; a full pool during an append panics with an error
// wrapping backend.ErrOutOfMemory, which model.Forward returns, and leaves the cache
// unchanged).
type PagedKVCache struct {
	p                        *PagedBackend
	layers, kvHeads, headDim int
	heads                    [][]pagedHead // [layer][kv head]
	tab                      *pagedTables
	cleanup                  runtime.Cleanup
}

// pagedHead is one head's block table and length.
type pagedHead struct {
	blocks []int
	n      int
}

// pagedTables are a cache's device block tables, apart from the cache so that a cleanup
// can free them.
type pagedTables struct {
	ptr    []cu.DevicePtr // [layer] int32 [kvHeads, stride]
	stride []int          // [layer]
}

var _ backend.KVCache = (*PagedKVCache)(nil)

// freeTables schedules a dropped cache's device tables for release.
func (p *pool) freeTables(t *pagedTables) {
	for _, ptr := range t.ptr {
		if ptr != 0 {
			p.schedule(allocation{ptr: ptr})
		}
	}
}

// NewKVCache makes an empty paged cache; it holds no blocks until tokens arrive.
func (p *PagedBackend) NewKVCache(layers, kvHeads, headDim, _ int) backend.KVCache {
	if headDim != p.headDim || layers < 0 || kvHeads <= 0 {
		panic(fmt.Sprintf("cuda paged: cache of %d layers x %d KV heads of dim %d from a pool of head dim %d", layers, kvHeads, headDim, p.headDim))
	}
	c := &PagedKVCache{p: p, layers: layers, kvHeads: kvHeads, headDim: headDim, heads: make([][]pagedHead, layers),
		tab: &pagedTables{ptr: make([]cu.DevicePtr, layers), stride: make([]int, layers)}}
	for i := range c.heads {
		c.heads[i] = make([]pagedHead, kvHeads)
	}
	c.cleanup = runtime.AddCleanup(c, p.Backend.pool.freeTables, c.tab)
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
			n += int64(h.n) * int64(c.headDim) * 2 * c.p.esz()
		}
	}
	return n
}

// row is the pool row of entry i of head h.
func (c *PagedKVCache) row(h *pagedHead, i int) int32 {
	bt := c.p.pool.BlockTokens()
	return int32(h.blocks[i/bt]*bt + i%bt)
}

// uploadTable copies layer's block tables to the device, growing the table when a head
// holds more blocks than its stride. The caller holds the backend.
func (c *PagedKVCache) uploadTable(layer int) error {
	most := 1
	for _, h := range c.heads[layer] {
		most = max(most, len(h.blocks))
	}
	t := c.tab
	if most > t.stride[layer] {
		s := max(t.stride[layer], 16)
		for s < most {
			s *= 2
		}
		ptr, err := allocDevice(int64(c.kvHeads)*int64(s)*4, "paged KV block table")
		if err != nil {
			return err
		}
		freeDevice(t.ptr[layer])
		t.ptr[layer], t.stride[layer] = ptr, s
	}
	s := t.stride[layer]
	host := make([]int32, c.kvHeads*s)
	for h, hd := range c.heads[layer] {
		for i, b := range hd.blocks {
			host[h*s+i] = int32(b)
		}
	}
	if err := cu.MemcpyHtoD(t.ptr[layer], unsafe.Pointer(&host[0]), int64(len(host))*4); err != nil {
		return fmt.Errorf("cuda paged: block table of layer %d to the device: %w", layer, err)
	}
	return nil
}

// copyRows copies whole rows (keys and values) from src to dst buffers: pairs are
// (destination row, source row). The caller holds the backend.
func (p *PagedBackend) copyRows(dk, dv, sk, sv cu.DevicePtr, pairs []int32) {
	if len(pairs) == 0 {
		return
	}
	if err := p.pairs.uploadInt32(pairs, "paged KV row copy"); err != nil {
		panic(err)
	}
	n := int64(len(pairs) / 2)
	words := int64(p.headDim) * p.esz() / 4
	p.launch("paged_copy_rows", gridFor(n*words, p.sms), dim3{pagedCopyBlock, 1, 1}, 0, dk, dv, sk, sv, p.pairs.ptr, n, int32(words))
}

// scratchKV makes the scratch buffer hold rows rows of keys then rows rows of values and
// returns both halves.
func (p *PagedBackend) scratchKV(rows int) (k, v cu.DevicePtr) {
	half := int64(rows) * int64(p.headDim) * p.esz()
	if err := p.scratch.ensure(2*max(half, 4), "paged KV scratch"); err != nil {
		panic(err)
	}
	return p.scratch.ptr, p.scratch.ptr + cu.DevicePtr(half)
}

// head copies one head's keys or values to the host as float32.
func (c *PagedKVCache) head(layer, head int, values bool) []float32 {
	defer c.p.enter()()
	h := &c.heads[layer][head]
	d := c.headDim
	out := make([]float32, h.n*d)
	if h.n == 0 {
		return out
	}
	sk, sv := c.p.scratchKV(h.n)
	pairs := make([]int32, 0, 2*h.n)
	for i := 0; i < h.n; i++ {
		pairs = append(pairs, int32(i), c.row(h, i))
	}
	c.p.copyRows(sk, sv, c.p.k, c.p.v, pairs)
	src := sk
	if values {
		src = sv
	}
	if !c.p.bf16 {
		if err := cu.MemcpyDtoH(unsafe.Pointer(&out[0]), src, int64(len(out))*4); err != nil {
			panic(fmt.Errorf("cuda paged: reading layer %d head %d: %w", layer, head, err))
		}
		return out
	}
	raw := make([]uint16, len(out))
	if err := cu.MemcpyDtoH(unsafe.Pointer(&raw[0]), src, int64(len(raw))*2); err != nil {
		panic(fmt.Errorf("cuda paged: reading layer %d head %d: %w", layer, head, err))
	}
	for i, x := range raw {
		out[i] = math.Float32frombits(uint32(x) << 16)
	}
	return out
}

func (c *PagedKVCache) Keys(layer, head int) []float32   { return c.head(layer, head, false) }
func (c *PagedKVCache) Values(layer, head int) []float32 { return c.head(layer, head, true) }

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
			return fmt.Errorf("cuda paged: reserve of %d tokens: %w: %w", reserve, backend.ErrOutOfMemory, err)
		}
		h.blocks = append(h.blocks, ids...)
	}
	return nil
}

// Compact moves each head's kept entries to its front (through a scratch buffer: the
// copies run in parallel) and gives back the blocks past the new length plus reserve.
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
	total := 0
	for h, idx := range keep {
		for i, j := range idx {
			if j < 0 || j >= heads[h].n || (i > 0 && j <= idx[i-1]) {
				return fmt.Errorf("kv cache: compact layer %d head %d: keep indices must be ascending in [0, %d), got %d at %d", layer, h, heads[h].n, j, i)
			}
		}
		total += len(idx)
	}
	defer c.p.enter()()
	sk, sv := c.p.scratchKV(total)
	var in, back []int32
	r := int32(0)
	for h, idx := range keep {
		hd := &heads[h]
		for i, j := range idx {
			if i != j {
				in = append(in, r, c.row(hd, j))
				back = append(back, c.row(hd, i), r)
			}
			r++
		}
	}
	c.p.copyRows(sk, sv, c.p.k, c.p.v, in)
	c.p.copyRows(c.p.k, c.p.v, sk, sv, back)
	var err error
	for h, idx := range keep {
		hd := &heads[h]
		hd.n = len(idx)
		if e := c.fit(hd, reserve); e != nil && err == nil {
			err = fmt.Errorf("kv cache: compact layer %d head %d: %w", layer, h, e)
		}
	}
	if e := c.uploadTable(layer); e != nil && err == nil {
		err = e
	}
	return err
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
	pool := c.p.pool
	need := 0
	for _, l := range c.heads {
		for _, hd := range l {
			need += pool.BlocksFor(hd.n + reserve)
		}
	}
	ids, err := pool.Alloc(need)
	if err != nil {
		return nil, fmt.Errorf("cuda paged: clone: %w: %w", backend.ErrOutOfMemory, err)
	}
	n := c.p.NewKVCache(c.layers, c.kvHeads, c.headDim, 0).(*PagedKVCache)
	defer c.p.enter()()
	var pairs []int32
	for li, l := range c.heads {
		for h := range l {
			src, dst := &l[h], &n.heads[li][h]
			nb := pool.BlocksFor(src.n + reserve)
			dst.blocks, ids = ids[:nb:nb], ids[nb:]
			dst.n = src.n
			for i := 0; i < src.n; i++ {
				pairs = append(pairs, n.row(dst, i), c.row(src, i))
			}
		}
		if err := n.uploadTable(li); err != nil {
			n.resetLocked()
			pool.Free(ids...) // the later layers' blocks
			return nil, err
		}
	}
	c.p.copyRows(c.p.k, c.p.v, c.p.k, c.p.v, pairs)
	return n, nil
}

// Reset empties the cache and gives all its blocks back to the pool (the device tables
// stay for the next tokens).
func (c *PagedKVCache) Reset() { c.resetLocked() }

func (c *PagedKVCache) resetLocked() {
	for _, l := range c.heads {
		for h := range l {
			c.p.pool.Free(l[h].blocks...)
			l[h] = pagedHead{}
		}
	}
}

// Release is Reset, and frees the device tables now.
func (c *PagedKVCache) Release() {
	c.Reset()
	defer c.p.enter()()
	c.cleanup.Stop()
	for i, ptr := range c.tab.ptr {
		freeDevice(ptr)
		c.tab.ptr[i], c.tab.stride[i] = 0, 0
	}
}
