//go:build cuda

package cuda

import (
	"fmt"
	"math"
	"runtime"
	"unsafe"

	"gorgonia.org/cu"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/kv"
)

// KVCache is the per-head KV cache in device memory: float32 by default (the
// conformance suite reads back exactly the keys and values it stored), bfloat16 when the
// backend has Options.KVBF16 (values rounded to nearest even on append, widened to
// float32 by Keys and Values). Each layer keeps one flat key buffer and one flat value
// buffer [rows, headDim], laid out by a kv.Layer: head h owns rows [Off[h],
// Off[h]+Cap[h]) and uses the first Len[h]. The host keeps the layout; a per-layer
// device table int32 [3*kvHeads]
// holds off and two copies of len, of which cur[layer] says which is current: the
// append kernel reads the current lengths and writes the advanced ones into the other
// array, and the host then flips cur (no launch to advance them; kernels take lenPtr).
// Growing or compacting a layer gathers the kept rows into new buffers and frees the
// old ones with cuMemFree (not into the tensor pool), so the device memory is really
// released: cuMemGetInfo shows it. A layer given a reservation (ReserveRows: chunked
// eviction sizes it once for the end of the prompt) keeps its buffers instead while the
// new layout fits them: the kept rows are gathered into a scratch buffer and copied
// back, with no allocation, free or host synchronisation per chunk.
type KVCache struct {
	b                        *Backend
	layers, kvHeads, headDim int
	reserve                  int
	bf16                     bool    // elements are bfloat16 words (Options.KVBF16 at creation)
	cur                      []uint8 // [layers] the current device length array (0 or 1)
	l                        []layerCache
	rows                     []int // [layers] rows the key and value buffers hold (>= l[i].Rows)
	want                     []int // [layers] rows reserved by ReserveRows (0: none)
	reallocs                 int   // layer buffers allocated anew (Reallocations)
	buf                      *kvBuffers
	cleanup                  runtime.Cleanup
}

// layerCache is one layer's host-side bookkeeping.
type layerCache = kv.Layer

// kvBuffers holds the device pointers of a cache, apart from the KVCache so that a
// cleanup can free them when the cache is dropped without Reset.
type kvBuffers struct {
	k, v []cu.DevicePtr // [layers] float32 or bfloat16 [rows, headDim]
	meta []cu.DevicePtr // [layers] int32 [3*kvHeads]: off, len (array 0), len (array 1)
}

var _ backend.KVCache = (*KVCache)(nil)

// maxHeadDim is the largest head dimension the attention kernels take
// (kernels/attention.cu: 8 dims per lane).
const maxHeadDim = 256

// NewKVCache makes an empty cache with room for reserve tokens per head. The head
// dimension must be a multiple of 4 and at most 256 (the attention kernels' 16-byte
// loads and register tiles); other values, or too little device memory, panic, as
// backend.Backend.NewKVCache has no error result.
func (b *Backend) NewKVCache(layers, kvHeads, headDim, reserve int) backend.KVCache {
	if headDim <= 0 || headDim%4 != 0 || headDim > maxHeadDim || layers < 0 || kvHeads <= 0 || reserve < 0 {
		panic(fmt.Sprintf("cuda: NewKVCache(layers %d, kvHeads %d, headDim %d, reserve %d): the CUDA backend needs kvHeads > 0 and a head dim that is a multiple of 4, at most %d",
			layers, kvHeads, headDim, reserve, maxHeadDim))
	}
	defer b.enter()()
	c := &KVCache{b: b, layers: layers, kvHeads: kvHeads, headDim: headDim, reserve: reserve, bf16: b.opt.KVBF16, cur: make([]uint8, layers),
		rows: make([]int, layers), want: make([]int, layers)}
	c.buf = &kvBuffers{k: make([]cu.DevicePtr, layers), v: make([]cu.DevicePtr, layers), meta: make([]cu.DevicePtr, layers)}
	c.cleanup = runtime.AddCleanup(c, b.pool.freeKV, c.buf)
	c.l = make([]layerCache, layers)
	for i := range c.l {
		meta, err := allocDevice(c.metaBytes(), "KV cache head table")
		if err != nil {
			panic(err)
		}
		c.buf.meta[i] = meta
	}
	if err := c.reset(); err != nil {
		panic(err)
	}
	return c
}

// KVElemBytes is the bytes a cache of this backend stores per element: 2 with the bf16
// cache (Options.KVBF16), else 4 (memory planning sizes the KV cache with it).
func (b *Backend) KVElemBytes() int {
	if b.opt.KVBF16 {
		return 2
	}
	return 4
}

// freeKV schedules a dropped cache's buffers for release (runs on the cleanup goroutine).
func (p *pool) freeKV(kb *kvBuffers) {
	for _, l := range [][]cu.DevicePtr{kb.k, kb.v, kb.meta} {
		for _, ptr := range l {
			if ptr != 0 {
				p.schedule(allocation{ptr: ptr})
			}
		}
	}
}

func (c *KVCache) Layers() int  { return c.layers }
func (c *KVCache) KVHeads() int { return c.kvHeads }
func (c *KVCache) HeadDim() int { return c.headDim }

func (c *KVCache) Len(layer, head int) int { return c.l[layer].Len[head] }

// DType is the element type of the keys and values: "float32" or "bfloat16".
func (c *KVCache) DType() string {
	if c.bf16 {
		return bf16.String()
	}
	return f32.String()
}

// esz is the bytes of one element.
func (c *KVCache) esz() int64 {
	if c.bf16 {
		return 2
	}
	return 4
}

// metaBytes is the size of a layer's device head table.
func (c *KVCache) metaBytes() int64 { return int64(3*c.kvHeads) * 4 }

// Bytes is the device memory of the key and value buffers (allocated rows, 4 or 2
// bytes per element).
func (c *KVCache) Bytes() int64 {
	var n int64
	for _, r := range c.rows {
		n += int64(r) * int64(c.headDim) * 2 * c.esz()
	}
	return n
}

// Reallocations counts the layer buffers allocated anew since the cache was made
// (generate's chunk stats show that a reserved cache stops reallocating).
func (c *KVCache) Reallocations() int { return c.reallocs }

// ReserveRows makes layer's key and value buffers hold at least rows rows (all heads
// together) and keeps them at that size: later growth and compaction that fit move rows
// within them (eviction.CapacityReserver). Reset drops the reservations.
func (c *KVCache) ReserveRows(layer, rows int) error {
	if layer < 0 || layer >= c.layers {
		return fmt.Errorf("kv cache: reserve rows of layer %d, the cache has %d", layer, c.layers)
	}
	if rows < 0 || rows > math.MaxInt32 {
		return fmt.Errorf("kv cache: reserve %d rows in layer %d: want 0 .. %d", rows, layer, math.MaxInt32)
	}
	defer c.b.enter()()
	c.want[layer] = rows
	if rows <= c.rows[layer] {
		return nil
	}
	return c.reallocate(layer, c.l[layer].Copy(0).Pick, c.l[layer])
}

// LiveBytes is the memory of the held entries (4 or 2 bytes per element).
func (c *KVCache) LiveBytes() int64 {
	var n int64
	for _, l := range c.l {
		n += int64(l.Live()) * int64(c.headDim) * 2 * c.esz()
	}
	return n
}

// Release frees all of the cache's device memory now, instead of when the garbage
// collector finds the cache unreachable. The cache must not be used afterwards.
func (c *KVCache) Release() {
	defer c.b.enter()()
	c.cleanup.Stop()
	for _, l := range [][]cu.DevicePtr{c.buf.k, c.buf.v, c.buf.meta} {
		for i, ptr := range l {
			freeDevice(ptr)
			l[i] = 0
		}
	}
	for i := range c.l {
		c.l[i] = kv.Empty(c.kvHeads, 0)
		c.rows[i], c.want[i] = 0, 0
	}
}

// Reset empties the cache: every layer gets fresh buffers with the reserve per head.
func (c *KVCache) Reset() {
	defer c.b.enter()()
	if err := c.reset(); err != nil {
		panic(err)
	}
}

func (c *KVCache) reset() error {
	for li := range c.l {
		freeDevice(c.buf.k[li])
		freeDevice(c.buf.v[li])
		c.buf.k[li], c.buf.v[li], c.l[li] = 0, 0, kv.Empty(c.kvHeads, 0)
		c.rows[li], c.want[li] = 0, 0
		if err := c.relayout(li, kv.Move{To: kv.Empty(c.kvHeads, c.reserve), Pick: make([][]int, c.kvHeads)}); err != nil {
			return err
		}
	}
	return nil
}

// relayout carries out m on layer: within the layer's buffers when it has a reservation
// and m.To fits them, else in new buffers (of at least the reserved rows), freeing the
// old ones. New buffers are allocated before anything changes, so on error the cache is
// as it was.
func (c *KVCache) relayout(layer int, m kv.Move) error {
	if c.want[layer] > 0 && c.buf.k[layer] != 0 && m.To.Rows <= c.rows[layer] {
		return c.relayoutInPlace(layer, m)
	}
	return c.reallocate(layer, m.Pick, m.To)
}

// reallocate moves the rows pick of layer into new buffers laid out as to, with
// max(to.Rows, reserved) rows, and frees the old ones. A reserved layer that outgrows
// its reservation raises it by a quarter, so it does not reallocate on every chunk.
func (c *KVCache) reallocate(layer int, pick [][]int, to kv.Layer) error {
	if w := c.want[layer]; w > 0 && to.Rows > w {
		c.want[layer] = min(to.Rows+to.Rows/4, math.MaxInt32)
	}
	rows := max(to.Rows, c.want[layer])
	nk, nv, err := c.allocRows(layer, rows)
	if err != nil {
		return err
	}
	if err := c.gather(nk, nv, c, layer, kv.Move{To: to, Pick: pick}); err != nil {
		freeDevice(nk)
		freeDevice(nv)
		return err
	}
	// cuMemFree waits for the gather that reads the old buffers.
	freeDevice(c.buf.k[layer])
	freeDevice(c.buf.v[layer])
	c.buf.k[layer], c.buf.v[layer], c.rows[layer] = nk, nv, rows
	c.l[layer] = to
	c.reallocs++
	return c.uploadMeta(layer)
}

// relayoutInPlace carries out m within layer's buffers: the picked rows are gathered into
// the backend's layer scratch at their new offsets and copied back, all on the stream.
func (c *KVCache) relayoutInPlace(layer int, m kv.Move) error {
	bytes := int64(m.To.Rows) * int64(c.headDim) * c.esz()
	s := &c.b.attnTC.kv // shared with the tensor-core attention's bf16 copy: never in use at once
	if err := s.ensure(max(2*bytes, 8), fmt.Sprintf("kv cache layer %d relayout scratch (%d rows)", layer, m.To.Rows)); err != nil {
		return err
	}
	sk, sv := s.ptr, s.ptr+cu.DevicePtr(bytes)
	if err := c.gather(sk, sv, c, layer, m); err != nil {
		return err
	}
	if bytes > 0 {
		if err := cu.MemcpyDtoDAsync(c.buf.k[layer], sk, bytes, cu.NoStream); err != nil {
			return fmt.Errorf("cuda: kv cache layer %d relayout: %w", layer, err)
		}
		if err := cu.MemcpyDtoDAsync(c.buf.v[layer], sv, bytes, cu.NoStream); err != nil {
			return fmt.Errorf("cuda: kv cache layer %d relayout: %w", layer, err)
		}
	}
	c.l[layer] = m.To
	return c.uploadMeta(layer)
}

// allocRows allocates key and value buffers of rows rows for layer.
func (c *KVCache) allocRows(layer, rows int) (nk, nv cu.DevicePtr, err error) {
	if rows > math.MaxInt32 {
		return 0, 0, fmt.Errorf("cuda: kv cache layer %d: %d rows per layer do not fit 32-bit row indices", layer, rows)
	}
	bytes := int64(rows) * int64(c.headDim) * c.esz()
	what := fmt.Sprintf("kv cache layer %d (%d rows of %d %s)", layer, rows, c.headDim, c.DType())
	if nk, err = allocDevice(bytes, what); err != nil {
		return 0, 0, err
	}
	if nv, err = allocDevice(bytes, what); err != nil {
		freeDevice(nk)
		return 0, 0, err
	}
	return nk, nv, nil
}

// gather copies into the buffers nk, nv (laid out as m.To) the rows m picks from src's
// layer (src may be c itself), in one kv_gather_keep launch over all heads: one upload
// of the counts, the new and old offsets and each head's picked rows. It changes
// neither cache's bookkeeping.
func (c *KVCache) gather(nk, nv cu.DevicePtr, src *KVCache, layer int, m kv.Move) error {
	if src.bf16 != c.bf16 {
		return fmt.Errorf("cuda: kv cache layer %d: gathering %s rows into a %s cache", layer, src.DType(), c.DType())
	}
	nkv := len(m.Pick)
	stride, most := 1, 0
	for _, p := range m.Pick {
		stride = max(stride, len(p))
		most = max(most, len(p))
	}
	if most == 0 {
		return nil
	}
	from := src.l[layer]
	if int64(nkv)*int64(stride) > math.MaxInt32 || from.Rows > math.MaxInt32 || m.To.Rows > math.MaxInt32 {
		return fmt.Errorf("cuda: kv cache layer %d: %d heads x %d rows do not fit 32-bit indices", layer, nkv, stride)
	}
	// [counts nkv][new offsets nkv][old offsets nkv][picks nkv x stride]
	table := make([]int32, 3*nkv+nkv*stride)
	for h, p := range m.Pick {
		table[h], table[nkv+h], table[2*nkv+h] = int32(len(p)), int32(m.To.Off[h]), int32(from.Off[h])
		row := table[3*nkv+h*stride:]
		for i, j := range p {
			row[i] = int32(j)
		}
	}
	if err := c.b.pairs.uploadInt32(table, "kv cache relayout rows"); err != nil {
		return err
	}
	words := int64(c.headDim) * c.esz() / 4 // 32-bit words per row (d % 4 == 0)
	units := int64(most) * words
	if words%4 == 0 {
		units /= 4
	}
	gx := int(min((units+255)/256, int64(max(8*c.b.sms/nkv, 1))))
	t := c.b.pairs.ptr
	c.b.launch("kv_gather_keep", dim3{gx, nkv, 1}, dim3{256, 1, 1}, 0,
		nk, nv, src.buf.k[layer], src.buf.v[layer],
		ptrAt(t, 3*nkv, 4), t, ptrAt(t, nkv, 4), int32(nkv), int32(stride), int32(words))
	return nil
}

// Clone returns a copy of the cache in new device memory, every head holding the same
// entries with room for reserve more.
func (c *KVCache) Clone(reserve int) (backend.KVCache, error) {
	if reserve < 0 {
		return nil, fmt.Errorf("kv cache: clone with negative reserve %d", reserve)
	}
	defer c.b.enter()()
	n := &KVCache{b: c.b, layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, reserve: c.reserve, bf16: c.bf16, cur: make([]uint8, c.layers),
		rows: make([]int, c.layers), want: make([]int, c.layers)}
	n.buf = &kvBuffers{k: make([]cu.DevicePtr, c.layers), v: make([]cu.DevicePtr, c.layers), meta: make([]cu.DevicePtr, c.layers)}
	n.cleanup = runtime.AddCleanup(n, c.b.pool.freeKV, n.buf)
	n.l = make([]layerCache, c.layers)
	for li := range c.l {
		meta, err := allocDevice(n.metaBytes(), "KV cache head table")
		if err != nil {
			return nil, err
		}
		n.buf.meta[li] = meta
		m := c.l[li].Copy(reserve)
		nk, nv, err := n.allocRows(li, m.To.Rows)
		if err != nil {
			return nil, err
		}
		n.buf.k[li], n.buf.v[li], n.rows[li], n.l[li] = nk, nv, m.To.Rows, m.To
		if err := n.gather(nk, nv, c, li, m); err != nil {
			return nil, err
		}
		if err := n.uploadMeta(li); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// uploadMeta copies layer's off and len to the device (len into both length arrays, so
// either may be current).
func (c *KVCache) uploadMeta(layer int) error {
	l := &c.l[layer]
	meta := make([]int32, 3*c.kvHeads)
	for h := 0; h < c.kvHeads; h++ {
		meta[h], meta[c.kvHeads+h], meta[2*c.kvHeads+h] = int32(l.Off[h]), int32(l.Len[h]), int32(l.Len[h])
	}
	if err := cu.MemcpyHtoD(c.buf.meta[layer], unsafe.Pointer(&meta[0]), int64(len(meta))*4); err != nil {
		return fmt.Errorf("cuda: kv cache layer %d: head table to device: %w", layer, err)
	}
	return nil
}

// offPtr and lenPtr are layer's device off and (current) len arrays; nextLenPtr is the
// other len array, which the append kernel fills with the advanced lengths.
func (c *KVCache) offPtr(layer int) cu.DevicePtr { return c.buf.meta[layer] }
func (c *KVCache) lenPtr(layer int) cu.DevicePtr {
	return c.buf.meta[layer] + cu.DevicePtr(4*c.kvHeads*(1+int(c.cur[layer])))
}
func (c *KVCache) nextLenPtr(layer int) cu.DevicePtr {
	return c.buf.meta[layer] + cu.DevicePtr(4*c.kvHeads*(2-int(c.cur[layer])))
}

// commit records an append of n rows to every head of layer: the array the append
// kernel wrote becomes current, and the host lengths advance.
func (c *KVCache) commit(layer, n int) {
	c.cur[layer] ^= 1
	for h := range c.l[layer].Len {
		c.l[layer].Len[h] += n
	}
}

// ensureRoom grows layer (kv.Layer.Grow, as the CPU cache does) when a head cannot
// take n more tokens.
func (c *KVCache) ensureRoom(layer, n int) error {
	if m, ok := c.l[layer].Grow(n); ok {
		return c.relayout(layer, m)
	}
	return nil
}

func (c *KVCache) head(layer, head int, buf []cu.DevicePtr, what string) []float32 {
	defer c.b.enter()()
	l := &c.l[layer]
	d := c.headDim
	out := make([]float32, l.Len[head]*d)
	if len(out) == 0 {
		return out
	}
	src := buf[layer] + cu.DevicePtr(int64(l.Off[head])*int64(d)*c.esz())
	if !c.bf16 {
		if err := cu.MemcpyDtoH(unsafe.Pointer(&out[0]), src, int64(len(out))*4); err != nil {
			panic(fmt.Errorf("cuda: kv cache %s of layer %d head %d: %w", what, layer, head, err))
		}
		return out
	}
	raw := make([]uint16, len(out))
	if err := cu.MemcpyDtoH(unsafe.Pointer(&raw[0]), src, int64(len(raw))*2); err != nil {
		panic(fmt.Errorf("cuda: kv cache %s of layer %d head %d: %w", what, layer, head, err))
	}
	for i, h := range raw {
		out[i] = math.Float32frombits(uint32(h) << 16)
	}
	return out
}

// Keys copies head (layer, head)'s keys to the host, as float32: [Len, headDim].
func (c *KVCache) Keys(layer, head int) []float32 { return c.head(layer, head, c.buf.k, "keys") }

// Values copies head (layer, head)'s values to the host, as float32: [Len, headDim].
func (c *KVCache) Values(layer, head int) []float32 { return c.head(layer, head, c.buf.v, "values") }

// Truncate drops every head's entries past the first n, keeping the memory.
func (c *KVCache) Truncate(n int) error {
	if err := kv.Truncate(c.l, n); err != nil {
		return err
	}
	defer c.b.enter()()
	for li := range c.l {
		if err := c.uploadMeta(li); err != nil {
			return err
		}
	}
	return nil
}

// Compact keeps, for every head of layer, exactly the entries keep[head] (ascending)
// and frees the rest, leaving room for reserve more tokens per head.
func (c *KVCache) Compact(layer int, keep [][]int, reserve int) error {
	if layer < 0 || layer >= c.layers {
		return fmt.Errorf("kv cache: layer %d out of range [0, %d)", layer, c.layers)
	}
	m, err := c.l[layer].Compact(layer, keep, reserve)
	if err != nil {
		return err
	}
	defer c.b.enter()()
	return c.relayout(layer, m)
}
