//go:build cuda

package cuda

// Attention (kernels/attention.cu): the cache append (kv_rope_append, with the held-back
// RoPE of q and k when fusion.go has one), then for a few new rows the split-K decode
// kernel over each head's own length (attention_decode_*, its combine in its last
// block), for long prefills with Options.TensorCores the tensor-core kernel
// (attention_tc.go), and otherwise the float32 flash kernel (attention_v*, plus
// attention_combine when the keys are split). The launch plans are pure functions
// (planDecode, planAttention), which the tests check directly.

import (
	"fmt"
	"math"
	"math/bits"

	"gorgonia.org/cu"

	"github.com/lukv/lukv/backend"
)

// attentionKernels are kernels/attention.cu's attention_v<vpw>_d<dpl>, by (query vectors
// per warp, dims per lane), over a float32 cache; the bf16-cache variants add "_bf16".
var attentionKernels = map[[2]int]string{
	{1, 4}: "attention_v1_d4", {2, 4}: "attention_v2_d4", {4, 4}: "attention_v4_d4",
	{1, 8}: "attention_v1_d8", {2, 8}: "attention_v2_d8",
}

// decodeKernels are attention_decode_kv<bf16 cache>_g<G>, by cache type and log2 G.
var decodeKernels = [2][3]string{
	{"attention_decode_kv0_g1", "attention_decode_kv0_g2", "attention_decode_kv0_g4"},
	{"attention_decode_kv1_g1", "attention_decode_kv1_g2", "attention_decode_kv1_g4"},
}

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

// decodePlan is the launch shape of kernels/attention.cu's attention_decode_* for one call.
type decodePlan struct {
	g, lgG    int // query vectors per block (1, 2 or 4) and its log2 (kernel template)
	lgLPR     int // log2 of the lanes that read one cache row: hd = lanes * (16 B / element)
	htiles    int // blocks per KV head along the vectors: ceil(group*n / g)
	chunk     int // keys per split
	splits    int // gridDim.x; > 1: the kernel's last block per tile combines them
	grid      dim3
	smem      int // dynamic shared memory bytes
	visible   int // most keys any query sees
	blockRows int // rows a block reads per step (for tests and comments)
}

// Thresholds of the decode kernel, in one place (kernels/attention.cu DEC_*).
const (
	decWarps       = 4   // DEC_WARPS
	decUR          = 4   // DEC_UR: rows per thread per step
	decMaxSplits   = 128 // DEC_MAX_SPLITS
	decMaxRows     = 4   // calls of at most this many new rows use the decode kernel
	decBlocksPerSM = 3   // target blocks per multiprocessor (3 fit at ~170 registers)
	decMinKeys     = 128 // at least this many keys per split
)

// planDecode chooses the decode kernel's shape for n new rows of heads query heads over
// kvHeads heads of hd (float32 or, with bf16, bfloat16 cache) whose longest head holds
// maxLen entries before them, or reports false when the kernel does not apply: more than
// decMaxRows rows, or a head dim whose rows are not a power-of-two number (<= 32) of
// 16-byte chunks (float32: 4..128, bf16: 8..256). Splits aim at decBlocksPerSM blocks
// per multiprocessor with at least decMinKeys keys each.
func planDecode(n, heads, kvHeads, hd, maxLen, sms int, bf16 bool) (decodePlan, bool) {
	dpt := 4
	if bf16 {
		dpt = 8
	}
	if n < 1 || n > decMaxRows || kvHeads < 1 || heads%kvHeads != 0 || heads == 0 || hd%dpt != 0 {
		return decodePlan{}, false
	}
	lpr := hd / dpt
	if lpr > 32 || lpr&(lpr-1) != 0 {
		return decodePlan{}, false
	}
	p := decodePlan{lgLPR: bits.TrailingZeros(uint(lpr))}
	total := heads / kvHeads * n
	p.lgG = min(bits.Len(uint(total-1)), 2) // smallest power of two >= total, at most 4
	p.g = 1 << p.lgG
	p.htiles = (total + p.g - 1) / p.g
	p.visible = maxLen + n
	perSplit := kvHeads * p.htiles
	splits := (decBlocksPerSM*max(sms, 1) + perSplit - 1) / perSplit
	splits = min(splits, (p.visible+decMinKeys-1)/decMinKeys, decMaxSplits)
	splits = max(splits, 1)
	p.chunk = (p.visible + splits - 1) / splits
	p.splits = (p.visible + p.chunk - 1) / p.chunk
	p.grid = dim3{p.splits, perSplit, 1}
	p.smem = decWarps * p.g * hd * 4
	p.blockRows = decWarps * (32 / lpr) * decUR
	return p, true
}

// Attention appends k and v to layer's cache, then computes causal attention of q over
// each head's entries into out (see backend.Backend). Kernel sequence:
//   - kv_rope_append: writes the new rows after each head's current length, and the
//     advanced lengths into the cache's other device length array; when the RoPE of q
//     and k is held back (ops.go), it rotates them here too;
//   - the attention (reading the current, old, lengths: row i sees len+i+1 entries):
//     attention_decode_* for a few rows (its split-K combine runs in its last block),
//     with Options.TensorCores the tensor-core kernel for long prefills
//     (attention_tc.go), else attention_v* (+ attention_combine when split).
//
// Then the host makes the other length array current and advances its own lengths.
func (b *Backend) Attention(out, q, k, v backend.Tensor, cache backend.KVCache, layer int, scale float32) {
	defer b.lock()()
	c, ok := cache.(*KVCache)
	if !ok || c.b != b {
		panic(fmt.Sprintf("cuda: Attention: cache of type %T does not belong to this backend", cache))
	}
	om, qm := b.f32Held(out, "Attention out"), b.f32Held(q, "Attention q")
	km, vm := b.f32Held(k, "Attention k"), b.f32Held(v, "Attention v")
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
	// Held-back rotations of exactly this q and k run inside the append; anything else
	// held back runs now.
	qcall, kcall := ropeCall{}, ropeCall{ptr: km.ptr, rows: n, cols: km.cols, keep: km}
	rotk := false
	if r := b.pend.rope; len(r) > 0 && len(b.pend.gemv) == 0 && b.pend.ropeHD == d {
		fuse := true
		for _, rc := range r {
			switch {
			case rc.ptr == qm.ptr && rc.rows == n && rc.cols == qm.cols && qcall.keep == nil:
				qcall = ropeCall{ptr: qm.ptr, rows: n, cols: qm.cols, keep: qm}
			case rc.ptr == km.ptr && rc.rows == n && rc.cols == km.cols && !rotk:
				rotk = true
			default:
				fuse = false
			}
		}
		if fuse {
			b.pend.rope = nil
		} else {
			qcall, rotk = ropeCall{}, false
		}
	}
	b.flush()
	if err := c.ensureRoom(layer, n); err != nil {
		panic(err)
	}
	b.launchRopeAppend(qcall, kcall, vm, c, layer, rotk)

	kc, vc := c.buf.k[layer], c.buf.v[layer]
	offp, lenp := c.offPtr(layer), c.lenPtr(layer)
	l := &c.l[layer]
	maxLen := 0
	for _, ln := range l.Len {
		maxLen = max(maxLen, ln)
	}
	// Prefill with Options.TensorCores: the bf16 tensor-core kernel (attention_tc.go);
	// a few rows: the decode kernel; otherwise the float32 flash kernel.
	switch dp, ok := planDecode(n, heads, kvh, d, maxLen, b.sms, c.bf16); {
	case b.attentionTC(om, qm, c, layer, n, heads, maxLen, scale):
	case n == 1 && b.decodeSplitK(om, qm, c, layer, heads, maxLen, scale): // attention_decode.go
	case ok:
		b.attentionDecode(dp, om, qm, c, layer, n, heads, scale)
	default:
		p := planAttention(n, heads, kvh, d, maxLen, b.sms)
		kern := attentionKernels[[2]int{p.vpw, p.dpl}]
		if c.bf16 {
			kern += "_bf16"
		}
		partO, partML := om.ptr, om.ptr // unused when not split
		if p.splits > 1 {
			partO, partML = b.partials(p.splits, n, heads, d)
		}
		b.launch(kern, p.grid, dim3{32 * attnWarps, 1, 1}, p.smem,
			om.ptr, partO, partML, qm.ptr, kc, vc, offp, lenp,
			int32(n), int32(heads), int32(kvh), int32(d), scale,
			int32(p.gt), int32(p.br), int32(p.bk), int32(p.chunk), int32(p.splits))
		if p.splits > 1 {
			b.launch("attention_combine", dim3{n * heads, 1, 1}, dim3{d, 1, 1}, 0,
				om.ptr, partO, partML, int32(n), int32(heads), int32(d), int32(p.splits))
		}
	}
	c.commit(layer, n)
}

// partials returns the split-K partial buffers for splits x n x heads query vectors of
// hd: outputs [splits, n, heads, hd] and (max, sum) pairs [splits, n, heads, 2].
func (b *Backend) partials(splits, n, heads, hd int) (o, ml cu.DevicePtr) {
	slots := int64(splits) * int64(n) * int64(heads)
	if err := b.partO.ensure(slots*int64(hd)*4, "attention split-K partial outputs"); err != nil {
		panic(err)
	}
	if err := b.partML.ensure(slots*2*4, "attention split-K partial sums"); err != nil {
		panic(err)
	}
	return b.partO.ptr, b.partML.ptr
}

// attentionDecode launches attention_decode_* with plan p (after the append).
func (b *Backend) attentionDecode(p decodePlan, om, qm *Tensor, c *KVCache, layer, n, heads int, scale float32) {
	partO, partML, counter := om.ptr, om.ptr, om.ptr // unused when not split
	if p.splits > 1 {
		partO, partML = b.partials(p.splits, n, heads, c.headDim)
		// One counter per block row, zero between launches (each launch's last blocks
		// reset theirs); zeroed here whenever the buffer is (re)allocated.
		if need := int64(p.grid[1]) * 4; need > b.decCount.size {
			if err := b.decCount.ensure(need, "attention split counters"); err != nil {
				panic(err)
			}
			if err := cu.MemsetD32Async(b.decCount.ptr, 0, b.decCount.size/4, cu.NoStream); err != nil {
				panic(fmt.Errorf("cuda: zeroing the attention split counters: %w", err))
			}
		}
		counter = b.decCount.ptr
	}
	kv := 0
	if c.bf16 {
		kv = 1
	}
	b.launch(decodeKernels[kv][p.lgG], p.grid, dim3{32 * decWarps, 1, 1}, p.smem,
		om.ptr, partO, partML, counter, qm.ptr, c.buf.k[layer], c.buf.v[layer], c.offPtr(layer), c.lenPtr(layer),
		int32(n), int32(heads), int32(c.kvHeads), int32(c.headDim), float32(float64(scale)*math.Log2E),
		int32(p.htiles), int32(p.chunk), int32(p.splits), int32(p.lgLPR))
}
