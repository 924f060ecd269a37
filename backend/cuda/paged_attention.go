//go:build cuda

package cuda

// Attention over paged caches (paged.go): the append of the new keys and values into
// their blocks and the attention through the block tables, for one sequence or a batch
// (kernels/paged_attention.cu), and the prefill path through a contiguous scratch cache.

import (
	"fmt"

	"gorgonia.org/cu"

	"github.com/lukv/lukv/backend"
)

// appendPlan is what an append of n rows to one layer of a cache needs on the device:
// the pool row of every new (row, head) entry, [n, kvHeads] row-major, and the block
// table entries to set (address low, high, value).
type appendPlan struct {
	slots, writes []int32
	undo          func()
}

// prepare makes room for n more entries in every head of layer: it takes the blocks (all
// or none: a full pool returns an error wrapping backend.ErrOutOfMemory with the cache
// unchanged) and advances the host lengths. undo takes the append back. The caller holds
// the backend (a table that outgrows its stride is uploaded whole).
func (c *PagedKVCache) prepare(layer, n int) (appendPlan, error) {
	pool := c.p.pool
	heads := c.heads[layer]
	need, most := 0, 0
	for h := range heads {
		want := pool.BlocksFor(heads[h].n + n)
		need += max(0, want-len(heads[h].blocks))
		most = max(most, want)
	}
	ids, err := pool.Alloc(need)
	if err != nil {
		return appendPlan{}, fmt.Errorf("cuda paged: layer %d: %w: %w", layer, backend.ErrOutOfMemory, err)
	}
	old := make([]int, len(heads))
	oldBlocks := make([]int, len(heads))
	for h := range heads {
		old[h], oldBlocks[h] = heads[h].n, len(heads[h].blocks)
	}
	undo := func() {
		for h := range heads {
			pool.Free(heads[h].blocks[oldBlocks[h]:]...)
			heads[h].blocks = heads[h].blocks[:oldBlocks[h]]
			heads[h].n = old[h]
		}
	}
	var pl appendPlan
	regrow := most > c.tab.stride[layer]
	for h := range heads {
		hd := &heads[h]
		more := max(0, pool.BlocksFor(hd.n+n)-len(hd.blocks))
		for _, id := range ids[:more] {
			if !regrow {
				addr := uint64(c.tab.ptr[layer]) + 4*uint64(h*c.tab.stride[layer]+len(hd.blocks))
				pl.writes = append(pl.writes, int32(uint32(addr)), int32(uint32(addr>>32)), int32(id))
			}
			hd.blocks = append(hd.blocks, id)
		}
		ids = ids[more:]
	}
	pl.slots = make([]int32, n*len(heads))
	for i := 0; i < n; i++ {
		for h := range heads {
			pl.slots[i*len(heads)+h] = c.row(&heads[h], heads[h].n+i)
		}
	}
	for h := range heads {
		heads[h].n += n
	}
	if regrow {
		if err := c.uploadTable(layer); err != nil {
			undo()
			return appendPlan{}, err
		}
	}
	pl.undo = undo
	return pl, nil
}

// Attention appends k and v to a PagedKVCache's layer and attends through its block
// tables; other caches go to the plain backend. A prefill of PrefillRows rows or more
// runs through a contiguous scratch cache (prefill).
func (p *PagedBackend) Attention(out, q, k, v backend.Tensor, cache backend.KVCache, layer int, scale float32) {
	c, ok := cache.(*PagedKVCache)
	if !ok {
		p.Backend.Attention(out, q, k, v, cache, layer, scale)
		return
	}
	if q.Rows() >= p.PrefillRows {
		p.prefill(out, q, k, v, c, layer, scale)
		return
	}
	p.attend(out, q, k, v, []*PagedKVCache{c}, []int{q.Rows()}, layer, scale)
}

// AttentionBatch is backend.BatchedAttention: one append and one attention launch for
// every sequence (the batched decode step). Sequences of PrefillRows rows or more, or a
// cache of another kind, make it run each sequence through Attention.
func (p *PagedBackend) AttentionBatch(out, q, k, v backend.Tensor, caches []backend.KVCache, rows []int, layer int, scale float32) {
	if len(caches) != len(rows) {
		panic(fmt.Sprintf("cuda paged: AttentionBatch of %d caches and %d row counts", len(caches), len(rows)))
	}
	pcs := make([]*PagedKVCache, len(caches))
	batched := true
	for i, c := range caches {
		pc, ok := c.(*PagedKVCache)
		pcs[i] = pc
		batched = batched && ok && rows[i] < p.PrefillRows
	}
	if !batched {
		r0 := 0
		for i, c := range caches {
			n := rows[i]
			p.Attention(p.Rows(out, r0, n), p.Rows(q, r0, n), p.Rows(k, r0, n), p.Rows(v, r0, n), c, layer, scale)
			r0 += n
		}
		return
	}
	p.attend(out, q, k, v, pcs, rows, layer, scale)
}

// attend is the paged append and attention of a batch of sequences whose rows are
// stacked in q, k, v and out.
func (p *PagedBackend) attend(out, q, k, v backend.Tensor, caches []*PagedKVCache, rows []int, layer int, scale float32) {
	defer p.enter()()
	om, qm := p.f32(out, "paged attention out"), p.f32(q, "paged attention q")
	km, vm := p.f32(k, "paged attention k"), p.f32(v, "paged attention v")
	d := p.headDim
	kvh := caches[0].kvHeads
	total := 0
	for i, c := range caches {
		if c.p != p || c.kvHeads != kvh || layer < 0 || layer >= c.layers || rows[i] < 0 {
			panic(fmt.Sprintf("cuda paged: attention of layer %d over a cache of %d layers x %d KV heads (batch of %d KV heads), %d rows", layer, c.layers, c.kvHeads, kvh, rows[i]))
		}
		total += rows[i]
	}
	heads := qm.cols / d
	if qm.cols%d != 0 || heads%kvh != 0 || heads == 0 || qm.rows != total || km.rows != total || vm.rows != total ||
		km.cols != kvh*d || vm.cols != kvh*d || om.rows != total || om.cols != qm.cols {
		shapePanic(fmt.Sprintf("paged Attention (%d sequences, %d KV heads of %d)", len(caches), kvh, d), om, qm, km, vm)
	}
	if heads/kvh > pagedMaxGroup {
		panic(fmt.Sprintf("cuda paged: %d query heads per KV head; the paged attention kernel takes at most %d", heads/kvh, pagedMaxGroup))
	}
	if total == 0 {
		return
	}
	plans := make([]appendPlan, 0, len(caches))
	for i, c := range caches {
		pl, err := c.prepare(layer, rows[i])
		if err != nil {
			for _, done := range plans {
				done.undo()
			}
			panic(err)
		}
		plans = append(plans, pl)
	}

	// The descriptor: seqs, lens, rowseq, slots, writes (kernels/paged_attention.cu).
	B := len(caches)
	lensAt := pagedSeqWords * B
	rowseqAt := lensAt + B*kvh
	slotsAt := rowseqAt + total
	writesAt := slotsAt + total*kvh
	nw := 0
	for _, pl := range plans {
		nw += len(pl.writes) / 3
	}
	desc := make([]int32, writesAt+3*nw)
	r0, maxVis := 0, 0
	for s, c := range caches {
		tab := uint64(c.tab.ptr[layer])
		e := desc[pagedSeqWords*s:]
		e[0], e[1], e[2] = int32(uint32(tab)), int32(uint32(tab>>32)), int32(c.tab.stride[layer])
		e[3], e[4], e[5] = int32(r0), int32(rows[s]), int32(s*kvh)
		for h, hd := range c.heads[layer] {
			desc[lensAt+s*kvh+h] = int32(hd.n)
			maxVis = max(maxVis, hd.n)
		}
		for i := 0; i < rows[s]; i++ {
			desc[rowseqAt+r0+i] = int32(s)
		}
		copy(desc[slotsAt+r0*kvh:], plans[s].slots)
		r0 += rows[s]
	}
	w := writesAt
	for _, pl := range plans {
		w += copy(desc[w:], pl.writes)
	}
	if err := p.uploadAsync(&p.desc, desc, "paged attention descriptor"); err != nil {
		for _, pl := range plans {
			pl.undo()
		}
		panic(err)
	}
	at := func(word int) cu.DevicePtr { return p.desc.ptr + cu.DevicePtr(4*word) }
	kv := 0
	if p.bf16 {
		kv = 1
	}
	entries := int64(total) * int64(kvh)
	p.launch(pagedAppendKernels[kv], gridFor(entries*int64(d), p.sms), dim3{256, 1, 1}, 0,
		p.k, p.v, km.ptr, vm.ptr, at(slotsAt), entries, int32(d), at(writesAt), int32(nw))

	// Split-K: enough blocks for a few per SM, at least pagedMinChunk keys per split.
	items := total * kvh
	want := max(1, (4*p.sms+items-1)/items)
	chunk := max(pagedMinChunk, (maxVis+want-1)/want)
	splits := (maxVis + chunk - 1) / chunk
	partO, partML := om.ptr, om.ptr // unused with one split
	if splits > 1 {
		slots := int64(splits) * int64(total) * int64(heads)
		if err := p.partO.ensure(slots*int64(d)*4, "paged attention partial outputs"); err != nil {
			panic(err)
		}
		if err := p.partML.ensure(slots*2*4, "paged attention partial sums"); err != nil {
			panic(err)
		}
		partO, partML = p.partO.ptr, p.partML.ptr
	}
	t := 0
	if d > 128 {
		t = 1
	}
	gi, g := 0, 1 // the group rounded up to a power of two, and its index
	for g < heads/kvh {
		gi, g = gi+1, 2*g
	}
	smem := pagedWarps * g * (d + 2) * 4
	p.launch(pagedAttentionKernels[kv][t][gi], dim3{items, splits, 1}, dim3{32 * pagedWarps, 1, 1}, smem,
		om.ptr, partO, partML, qm.ptr, p.k, p.v, at(0), at(lensAt), at(rowseqAt),
		int32(total), int32(heads), int32(kvh), int32(d), int32(p.pool.BlockTokens()), scale, int32(chunk))
	if splits > 1 {
		p.launch("paged_combine", dim3{total * heads, 1, 1}, dim3{min(d, 256), 1, 1}, 0,
			om.ptr, partO, partML, at(0), at(lensAt), at(rowseqAt), int32(total), int32(heads), int32(kvh), int32(d), int32(chunk))
	}
}

// prefill is Attention for many rows of one sequence: the layer's entries are gathered
// into a contiguous scratch cache, the backend's own attention appends the new rows to
// it and attends (the tensor-core kernel with Options.TensorCores), and the new keys and
// values are appended to the paged cache. The gather costs one read of the layer's
// entries, small next to a prefill's arithmetic.
func (p *PagedBackend) prefill(out, q, k, v backend.Tensor, c *PagedKVCache, layer int, scale float32) {
	if layer < 0 || layer >= c.layers {
		panic(fmt.Sprintf("cuda paged: attention of layer %d over a cache of %d layers", layer, c.layers))
	}
	n := q.Rows()
	heads := c.heads[layer]
	most := 0
	for _, h := range heads {
		most = max(most, h.n)
	}
	tmp := p.Backend.NewKVCache(1, c.kvHeads, c.headDim, most+n).(*KVCache)
	defer tmp.Release()
	var pl appendPlan
	func() {
		defer p.enter()()
		old := make([]int, len(heads))
		for h := range heads {
			old[h] = heads[h].n
		}
		var err error
		if pl, err = c.prepare(layer, n); err != nil {
			panic(err)
		}
		var pairs []int32
		tl := &tmp.l[0]
		for h := range heads {
			for i := 0; i < old[h]; i++ {
				pairs = append(pairs, int32(tl.Off[h]+i), c.row(&heads[h], i))
			}
			tl.Len[h] = old[h]
		}
		p.copyRows(tmp.buf.k[0], tmp.buf.v[0], p.k, p.v, pairs)
		if err := tmp.uploadMeta(0); err != nil {
			pl.undo()
			panic(err)
		}
	}()
	p.Backend.Attention(out, q, k, v, tmp, 0, scale)
	defer p.enter()()
	km, vm := p.f32(k, "paged attention k"), p.f32(v, "paged attention v")
	if km.rows != n || vm.rows != n || km.cols != c.kvHeads*c.headDim || vm.cols != km.cols {
		shapePanic("paged Attention (prefill)", km, vm)
	}
	desc := append(append([]int32(nil), pl.slots...), pl.writes...)
	if err := p.uploadAsync(&p.desc, desc, "paged append descriptor"); err != nil {
		panic(err)
	}
	kv := 0
	if p.bf16 {
		kv = 1
	}
	entries := int64(n) * int64(c.kvHeads)
	p.launch(pagedAppendKernels[kv], gridFor(entries*int64(c.headDim), p.sms), dim3{256, 1, 1}, 0,
		p.k, p.v, km.ptr, vm.ptr, p.desc.ptr, entries, int32(c.headDim), p.desc.ptr+cu.DevicePtr(4*len(pl.slots)), int32(len(pl.writes)/3))
}
