//go:build cuda

package cuda

import (
	"fmt"

	lrt "github.com/lukv/lukv/runtime"
)

// attentionPlan is the launch shape of kernels/attention.cu for one call.
type attentionPlan struct {
	vpw, dpl   int // query vectors per warp, head dims per lane (kernel template)
	gt, br     int // query heads and rows per block: gt*br <= 4*vpw
	bk         int // key tile rows
	chunk      int // keys per split
	splits     int // split-K slices (gridDim.z); > 1 adds attention_combine
	grid       dim3
	smem       int // dynamic shared memory bytes
	maxVisible int // most keys any query sees
}

// Thresholds of the attention launch, in one place.
const (
	attnWarps         = 4   // kernels/attention.cu WARPS
	splitMinKeys      = 512 // no split-K below this many cached keys
	splitKeysPerSplit = 256 // at least this many keys per split
	splitMax          = 128 // at most this many splits
)

// planAttention chooses the kernel variant and grid. A block takes one KV head and up
// to 4*vpw query vectors sharing it (gt heads of the group x br rows). Prefill uses the
// most vectors per warp that fit shared memory (4 for hd <= 128, 2 above); decode uses
// just enough to cover the query-head group, so a group is served by one block reading
// its K and V once. When that leaves the GPU with fewer than two blocks per
// multiprocessor and the cache is long, the keys are split over gridDim.z and the
// partial results combined.
func planAttention(n, heads, kvHeads, hd, maxLen, sms int) attentionPlan {
	group := heads / kvHeads
	p := attentionPlan{dpl: 4, vpw: 4, bk: 32}
	if hd > 128 {
		p.dpl, p.vpw, p.bk = 8, 2, 16
	}
	if n == 1 {
		need := 4
		switch {
		case group <= 4:
			need = 1
		case group <= 8:
			need = 2
		}
		p.vpw = min(p.vpw, need)
	}
	nv := attnWarps * p.vpw
	p.gt = min(group, nv)
	p.br = nv / p.gt
	htiles := (group + p.gt - 1) / p.gt
	gx, gy := (n+p.br-1)/p.br, kvHeads*htiles
	p.maxVisible = maxLen + n
	p.splits = 1
	if blocks := gx * gy; blocks < 2*sms && p.maxVisible >= splitMinKeys {
		p.splits = min((2*sms+blocks-1)/blocks, p.maxVisible/splitKeysPerSplit, splitMax)
		p.splits = max(p.splits, 1)
	}
	p.chunk = (p.maxVisible + p.splits - 1) / p.splits
	p.chunk = (p.chunk + p.bk - 1) / p.bk * p.bk
	p.splits = (p.maxVisible + p.chunk - 1) / p.chunk
	p.grid = dim3{gx, gy, p.splits}
	p.smem = (nv*hd + p.bk*hd + p.bk*(hd+1)) * 4
	return p
}

// Attention appends k and v to layer's cache, then computes causal attention of q over
// each head's entries into out (see runtime.Backend). Kernel sequence: kv_append
// (writes the new rows after each head's current length), attention (reads the old
// length from the device head table: row i sees len+i+1 entries), attention_combine
// when split, kv_commit (advances the device lengths). The host lengths advance with
// them. With Options.TensorCores, prefill calls run kv_to_bf16 and the tensor-core
// kernel (attention_tc.go) in place of attention.
func (b *Backend) Attention(out, q, k, v lrt.Tensor, cache lrt.KVCache, layer int, scale float32) {
	defer b.enter()()
	c, ok := cache.(*KVCache)
	if !ok || c.b != b {
		panic(fmt.Sprintf("cuda: Attention: cache of type %T does not belong to this backend", cache))
	}
	om, qm, km, vm := b.f32(out, "Attention out"), b.f32(q, "Attention q"), b.f32(k, "Attention k"), b.f32(v, "Attention v")
	d, kvh := c.headDim, c.kvHeads
	n := qm.rows
	heads := qm.cols / d
	if layer < 0 || layer >= c.layers || qm.cols%d != 0 || heads%kvh != 0 || heads == 0 ||
		km.rows != n || vm.rows != n || km.cols != kvh*d || vm.cols != kvh*d || om.rows != n || om.cols != qm.cols {
		shapePanic(fmt.Sprintf("Attention (layer %d of %d, %d KV heads of %d)", layer, c.layers, kvh, d), om, qm, km, vm)
	}
	if n == 0 {
		return
	}
	if err := c.ensureRoom(layer, n); err != nil {
		panic(err)
	}
	kc, vc := c.buf.k[layer], c.buf.v[layer]
	offp, lenp := c.offPtr(layer), c.lenPtr(layer)
	l := &c.l[layer]

	b.launch(b.k.kvAppend, gridFor(int64(n)*int64(kvh*d), b.sms), dim3{256, 1, 1}, 0,
		kc, vc, km.ptr, vm.ptr, offp, lenp, int32(n), int32(kvh), int32(d))

	maxLen := 0
	for _, ln := range l.len {
		maxLen = max(maxLen, ln)
	}
	// Prefill with Options.TensorCores: the bf16 tensor-core kernel (attention_tc.go);
	// otherwise, or when that path does not apply, the float32 kernel.
	if !b.attentionTC(om, qm, c, layer, n, heads, maxLen, scale) {
		p := planAttention(n, heads, kvh, d, maxLen, b.sms)
		kern := b.k.attention[[2]int{p.vpw, p.dpl}]
		partO, partML := om.ptr, om.ptr // unused when not split
		if p.splits > 1 {
			slots := int64(p.splits) * int64(n) * int64(heads)
			if err := b.partO.ensure(slots*int64(d)*4, "attention split-K partial outputs"); err != nil {
				panic(err)
			}
			if err := b.partML.ensure(slots*2*4, "attention split-K partial sums"); err != nil {
				panic(err)
			}
			partO, partML = b.partO.ptr, b.partML.ptr
		}
		b.launch(kern, p.grid, dim3{32 * attnWarps, 1, 1}, p.smem,
			om.ptr, partO, partML, qm.ptr, kc, vc, offp, lenp,
			int32(n), int32(heads), int32(kvh), int32(d), scale,
			int32(p.gt), int32(p.br), int32(p.bk), int32(p.chunk), int32(p.splits))
		if p.splits > 1 {
			b.launch(b.k.combine, dim3{n * heads, 1, 1}, dim3{d, 1, 1}, 0,
				om.ptr, partO, partML, int32(n), int32(heads), int32(d), int32(p.splits))
		}
	}
	b.launch(b.k.kvCommit, dim3{1, 1, 1}, dim3{(kvh + 31) / 32 * 32, 1, 1}, 0, lenp, int32(kvh), int32(n))
	for h := range l.len {
		l.len[h] += n
	}
}
