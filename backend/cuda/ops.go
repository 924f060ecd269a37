//go:build cuda

package cuda

// Decode step budget (Llama-3.1-8B shape: 32 layers, hidden 4096, 32/8 heads of 128,
// MLP 14336, vocabulary 128256, bf16 weights; one sequence at 8k context, H200 at the
// 4.3 TB/s measured copy bandwidth). Measured before this file's decode path
// (results/gpu/2026-11-28-h200-run2): 11.2 ms/token against a 3.99 ms floor (f32 KV).
//
//   weights read per step   32 x 436.2 MB + LM head 1050.7 MB = 15.01 GB -> 3.49 ms
//   KV read per step        8192 tokens x 32 layers x 8 heads x 128 x 2 (K, V)
//                           bf16 (Options.KVBF16): 1.07 GB -> 0.25 ms (f32: 0.50 ms)
//   floor                   3.74 ms with bf16 KV (3.99 with f32); 1.2x = 4.49 ms
//
// Expected with this path (estimates, not yet measured: the GEMV at 3.7-4.0 TB/s on the
// large matrices, the decode attention near 3 TB/s, ~1 us of launch gap per kernel, and
// 2.5-4 us for each tiny kernel, which is launch, ramp and, for RMSNorm of one row, a
// single block's serial reduction, not bytes):
//
//   GEMVs (gemv_bf16_n1, 4 launches per layer: q/k/v grouped, o, gate/up grouped,
//   down; + LM head)                                          15.01 GB  ~3.8-4.1 ms
//   attention (attention_decode_kv1_g4, combine fused)         1.07 GB  ~0.35-0.45 ms
//   tiny kernels: 2 RMSNorm, rope+append, 2 Add, SwiGLU per layer = 6 x 32 = 192
//   launches x 2.5-4 us                                                 ~0.5-0.8 ms
//   launch gaps of the 5 large kernels per layer, 160 x ~1 us          ~0.15 ms
//   per step: embed, 9 activation memsets, final norm, logits read      ~0.05 ms
//   total                                                               ~4.9-5.5 ms
//
// That is ~1.3-1.5x the bf16-KV floor (from 2.8x; 11 launches per layer instead of 18,
// ~370 per step instead of ~590). Before: the GEMV at ~2.35 TB/s (6.4 ms), the float32
// KV read at ~1.2 TB/s with a serial split-K combine, and ~3 ms of small kernels. What
// remains to reach 1.2x (4.49 ms): mostly the ~0.7-1 ms of tiny kernels and launch
// gaps, i.e. launches, not bytes. Next steps, in order of gain:
//   1. Fuse RMSNorm into the GEMV that follows it (each block recomputes the row's
//      inverse RMS from x, already in L2, and scales x as it reads it), the residual
//      Add into the epilogue of the o and down GEMVs, SwiGLU into the gate/up GEMV
//      epilogue (interleave the two matrices so one block owns gate row o and up row
//      o): 5 fewer launches per layer, ~0.4-0.6 ms. The held-back mechanism below
//      (pending) already gives the hook; each is one more pattern.
//   2. CUDA graphs for the whole step (the launch sequence is the same every step;
//      only positions, cache lengths and the split counts change, which would have to
//      move to device memory), removing the remaining launch gaps: ~0.2 ms.
//   3. The GEMV at >= 4.1 TB/s on every shape (the small q/k/v and o matrices, 33-50
//      MB, lose most to the ramp at their start and end; a persistent kernel over all
//      of a layer's matrices would hide it).
//
// The numbers to check on the H200: BenchmarkMatMulDecode8B (GB/s per shape),
// BenchmarkAttentionDecode8k/32k (GB/s, f32 and bf16 KV) and lukv-run bench's decode
// rows; cmd/lukv-run's LUKV_CUDA_FUSE=0 measures the held-back fusion's share.
//
// Held-back operations ("pending"): MatMul of at most gemvMaxRows rows on the decode
// GEMV, RoPE and Attention do not launch at once when Options.Unfused is off. A decode
// MatMul waits for the next call: another decode MatMul with the same x (and weight
// type) joins it, up to three (the q, k, v projections; gate and up), and the group runs
// as one grid. A RoPE waits likewise: a second RoPE at the same positions joins it (q
// and k, one launch), and an Attention whose q and k are the held-back tensors does the
// rotations inside its cache append (kv_rope_append), one launch instead of three. Every
// other entry point (enter) launches whatever is held back first, so nothing can observe
// a result before it is computed; only the moment of the launch moves.

import (
	"fmt"
	"math/bits"
	"slices"

	"gorgonia.org/cu"

	"github.com/lukv/lukv/backend"
)

// gemvMaxRows is the most rows of x MatMul sends to the matrix-vector kernel (it keeps
// one accumulator per row in registers; kernels/matmul.cu GEMV_MAX_ROWS).
const gemvMaxRows = 8

func shapePanic(op string, ts ...*Tensor) {
	s := op + ": shapes"
	for _, t := range ts {
		s += fmt.Sprintf(" [%d, %d]", t.rows, t.cols)
	}
	panic("cuda: " + s + " do not fit")
}

func count(t *Tensor) int64 { return int64(t.rows) * int64(t.cols) }

// Embed: out[i,:] = table[ids[i],:].
func (b *Backend) Embed(out, table backend.Tensor, ids []int) {
	defer b.enter()()
	o, tb := b.f32(out, "Embed out"), b.tensor(table, "Embed table")
	if o.rows != len(ids) || o.cols != tb.cols {
		shapePanic(fmt.Sprintf("Embed of %d ids", len(ids)), o, tb)
	}
	if len(ids) == 0 || o.cols == 0 {
		return
	}
	host := make([]int32, len(ids))
	for i, id := range ids {
		if id < 0 || id >= tb.rows {
			panic(fmt.Sprintf("cuda: Embed: id %d outside the table's %d rows", id, tb.rows))
		}
		host[i] = int32(id)
	}
	if err := b.ids.uploadInt32(host, "Embed ids"); err != nil {
		panic(err)
	}
	b.launch(b.k.embed[tb.dt], dim3{len(ids), 1, 1}, dim3{256, 1, 1}, 0, o.ptr, tb.ptr, b.ids.ptr, i32(o.cols, "Embed cols"))
}

// RMSNorm: out[i,:] = x[i,:] / sqrt(mean(x[i,:]^2) + eps) * w.
func (b *Backend) RMSNorm(out, x, w backend.Tensor, eps float32) {
	defer b.enter()()
	o, xm, wm := b.f32(out, "RMSNorm out"), b.f32(x, "RMSNorm x"), b.f32(w, "RMSNorm w")
	if o.rows != xm.rows || o.cols != xm.cols || count(wm) != int64(xm.cols) {
		shapePanic("RMSNorm", o, xm, wm)
	}
	if xm.rows == 0 || xm.cols == 0 {
		return
	}
	b.launch(b.k.rmsnorm, dim3{xm.rows, 1, 1}, dim3{256, 1, 1}, 0, o.ptr, xm.ptr, wm.ptr, i32(xm.cols, "RMSNorm cols"), eps)
}

// HeadRMSNorm applies RMSNorm with w [1, headDim] to every head slice of x, in place.
func (b *Backend) HeadRMSNorm(x, w backend.Tensor, headDim int, eps float32) {
	defer b.enter()()
	xm, wm := b.f32(x, "HeadRMSNorm x"), b.f32(w, "HeadRMSNorm w")
	if headDim <= 0 || count(wm) != int64(headDim) {
		shapePanic(fmt.Sprintf("HeadRMSNorm headDim %d", headDim), xm, wm)
	}
	slices := int64(xm.rows) * int64(xm.cols/headDim)
	if slices == 0 {
		return
	}
	const warps = 4
	b.launch(b.k.headRMSNorm, dim3{int((slices + warps - 1) / warps), 1, 1}, dim3{32 * warps, 1, 1}, 0,
		xm.ptr, wm.ptr, i32(xm.rows, "rows"), i32(xm.cols, "cols"), i32(headDim, "headDim"), eps)
}

// MatMul: out = x @ w^T, x [n, in], w [out, in], out [n, out]. Up to gemvMaxRows rows
// (decode) run on a matrix-vector kernel: gemv_<dt>_n<1|2|4|8> when the rows of x and w
// are 16-byte aligned (held back to group with the next MatMul of the same x, see the
// top of the file), else matmul_gemv_<dt>; more rows on the tiled float32 kernel, or,
// with Options.TensorCores and bf16 weights, on cuBLAS's bf16 tensor-core GEMM (x
// rounded to bf16, float32 accumulation).
func (b *Backend) MatMul(out, x, w backend.Tensor) {
	defer b.lock()()
	wm := b.tensor(w, "MatMul w")
	o, xm := b.f32Held(out, "MatMul out"), b.f32Held(x, "MatMul x")
	n, in, nout := xm.rows, xm.cols, wm.rows
	if wm.cols != in || o.rows != n || o.cols != nout {
		shapePanic("MatMul x, w, out", xm, wm, o)
	}
	if n == 0 || nout == 0 {
		return
	}
	if n <= gemvMaxRows && in > 0 && (int64(in)*wm.dt.size())%16 == 0 && xm.ptr%16 == 0 && wm.ptr%16 == 0 {
		call := gemvCall{out: o.ptr, x: xm.ptr, w: wm.ptr, n: n, k: in, nout: nout, dt: wm.dt, keep: [3]*Tensor{o, xm, wm}}
		if b.opt.Unfused {
			b.flush()
			b.launchGEMV([]gemvCall{call})
			return
		}
		if !b.pend.joinsGEMV(call) {
			b.flush()
		}
		b.pend.gemv = append(b.pend.gemv, call)
		return
	}
	b.flush()
	if in == 0 {
		b.zero(o)
		return
	}
	args := []any{o.ptr, xm.ptr, wm.ptr, i32(n, "MatMul rows"), i32(in, "MatMul in"), i32(nout, "MatMul out")}
	if n <= gemvMaxRows {
		const warps = 8 // kernels/matmul.cu GEMV_WARPS: one output column per warp
		b.launch(b.k.gemv[wm.dt], dim3{(nout + warps - 1) / warps, 1, 1}, dim3{32 * warps, 1, 1}, 0, args...)
		return
	}
	// Prefill: bf16 weights on the tensor cores when asked for (cublas.go), else (and when
	// cuBLAS is unavailable: MatMulPath says why) the float32 tiled kernel.
	if b.opt.TensorCores && wm.dt == bf16 && b.matmulTensorCores(o, xm, wm) {
		return
	}
	const tile = 64 // kernels/matmul.cu TILE_M, TILE_N
	b.launch(b.k.tiled[wm.dt], dim3{(nout + tile - 1) / tile, (n + tile - 1) / tile, 1}, dim3{256, 1, 1}, 0, args...)
}

// zero clears a float32 tensor (a view too: its rows are contiguous).
func (b *Backend) zero(t *Tensor) {
	if n := count(t); n > 0 {
		if err := cu.MemsetD32Async(t.ptr, 0, n, cu.NoStream); err != nil {
			panic(fmt.Errorf("cuda: zeroing [%d, %d]: %w", t.rows, t.cols, err))
		}
	}
}

// AddBias: x[i,:] += bias[0,:].
func (b *Backend) AddBias(x, bias backend.Tensor) {
	defer b.enter()()
	xm, bm := b.f32(x, "AddBias x"), b.f32(bias, "AddBias bias")
	if count(bm) != int64(xm.cols) {
		shapePanic("AddBias", xm, bm)
	}
	if n := count(xm); n > 0 {
		b.launch(b.k.addBias, gridFor(n, b.sms), dim3{256, 1, 1}, 0, xm.ptr, bm.ptr, n, i32(xm.cols, "AddBias cols"))
	}
}

// Add: x += y.
func (b *Backend) Add(x, y backend.Tensor) {
	defer b.enter()()
	xm, ym := b.f32(x, "Add x"), b.f32(y, "Add y")
	if xm.rows != ym.rows || xm.cols != ym.cols {
		shapePanic("Add", xm, ym)
	}
	if n := count(xm); n > 0 {
		b.launch(b.k.add, gridFor(n, b.sms), dim3{256, 1, 1}, 0, xm.ptr, ym.ptr, n)
	}
}

// SwiGLU: out = silu(gate) * up.
func (b *Backend) SwiGLU(out, gate, up backend.Tensor) {
	defer b.enter()()
	o, g, u := b.f32(out, "SwiGLU out"), b.f32(gate, "SwiGLU gate"), b.f32(up, "SwiGLU up")
	if count(o) != count(g) || count(g) != count(u) {
		shapePanic("SwiGLU", o, g, u)
	}
	if n := count(o); n > 0 {
		b.launch(b.k.swiglu, gridFor(n, b.sms), dim3{256, 1, 1}, 0, o.ptr, g.ptr, u.ptr, n)
	}
}

// RoPE rotates every head of x [n, heads*headDim] in place; row i is at positions[i].
// The inverse frequencies are uploaded only when they change (every layer rotates with
// the same ones). Unless Options.Unfused, the rotation is held back (see the top of the
// file): a second RoPE at the same positions joins it, and an Attention over the rotated
// q and k performs it in its cache append; positions that count up from the first need
// no upload (the kernel takes the first).
func (b *Backend) RoPE(x backend.Tensor, headDim int, positions []int, rope *backend.RoPE) {
	defer b.lock()()
	xm := b.f32Held(x, "RoPE x")
	if headDim <= 0 || headDim%2 != 0 || len(positions) != xm.rows || len(rope.InvFreq) != headDim/2 || xm.cols%headDim != 0 {
		panic(fmt.Sprintf("cuda: RoPE: x [%d, %d], headDim %d, %d positions, %d inverse frequencies do not fit",
			xm.rows, xm.cols, headDim, len(positions), len(rope.InvFreq)))
	}
	total := int64(xm.rows) * int64(xm.cols/headDim) * int64(headDim/2)
	if total == 0 {
		return
	}
	freq := make([]float32, len(rope.InvFreq))
	for j, f := range rope.InvFreq {
		freq[j] = float32(f) // backend/rope.go: the angle is float32(p) * float32(f)
	}
	if !slices.Equal(freq, b.freqHost) {
		b.flush() // a held-back rotation reads the old frequencies
		if err := b.invFreq.uploadFloat32(freq, "RoPE inverse frequencies"); err != nil {
			panic(err)
		}
		b.freqHost = freq
	}
	pos := make([]int32, len(positions))
	for i, p := range positions {
		pos[i] = i32(p, "RoPE position")
	}
	if b.opt.Unfused {
		b.flush()
		b.uploadPositions(pos)
		b.launch(b.k.rope, gridFor(total, b.sms), dim3{256, 1, 1}, 0, xm.ptr, b.positions.ptr, b.invFreq.ptr,
			i32(xm.rows, "RoPE rows"), i32(xm.cols, "RoPE cols"), i32(headDim, "headDim"))
		return
	}
	call := ropeCall{ptr: xm.ptr, rows: xm.rows, cols: xm.cols, keep: xm}
	if b.pend.joinsRope(call, headDim, pos) {
		b.pend.rope = append(b.pend.rope, call)
		return
	}
	b.flush()
	b.pend.rope, b.pend.ropeHD, b.pend.ropePos = []ropeCall{call}, headDim, pos
	if !consecutive(pos) {
		b.uploadPositions(pos) // after the flush: a flushed rotation read the old ones
	}
}

// uploadPositions puts pos in b.positions unless it holds them already.
func (b *Backend) uploadPositions(pos []int32) {
	if slices.Equal(pos, b.posHost) {
		return
	}
	if err := b.positions.uploadInt32(pos, "RoPE positions"); err != nil {
		panic(err)
	}
	b.posHost = pos
}

// consecutive reports whether pos counts up by one from pos[0] (then the rotation
// kernels take pos[0] instead of the list).
func consecutive(pos []int32) bool {
	for i := range pos {
		if pos[i] != pos[0]+int32(i) {
			return false
		}
	}
	return true
}

// f32Held is f32 for an operation that may join held-back ones: widening a narrow tensor
// replaces its memory, so whatever is held back is launched first.
func (b *Backend) f32Held(t backend.Tensor, what string) *Tensor {
	if ct := b.tensor(t, what); ct.dt != f32 {
		b.flush()
	}
	return b.f32(t, what)
}

// ---------------------------------------------------------------------------------
// The decode kernels and the held-back operations.

// decodeKernels are the kernels of the decode path (kernels/matmul.cu gemv_*,
// kernels/kvcache.cu kv_rope_append_*, kernels/attention.cu attention_decode_* and the
// bf16-cache variants of attention_v*), looked up by loadDecodeKernels.
type decodeKernels struct {
	gemv       [3][4]kfn      // [weight dtype][log2 of the rows of x rounded up]
	ropeAppend [2]kfn         // [cache is bf16]
	decode     [2][3]kfn      // [cache is bf16][log2 G]
	attnBF16   map[[2]int]kfn // generic attention over a bf16 cache, by (vpw, dpl)
}

// gemvFastRows are the row counts of the gemv_* kernels (kernels/matmul.cu NR).
var gemvFastRows = [4]int{1, 2, 4, 8}

// loadDecodeKernels looks the decode kernels up in the loaded modules (New fails on a
// build without them).
func (b *Backend) loadDecodeKernels() error {
	find := func(name string) (kfn, error) {
		return b.findKernel(name, "kernels/matmul.cu, kvcache.cu, attention.cu")
	}
	var err error
	d := &b.dk
	for dt, suffix := range []string{"f32", "bf16", "f16"} {
		for i, nr := range gemvFastRows {
			if d.gemv[dt][i], err = find(fmt.Sprintf("gemv_%s_n%d", suffix, nr)); err != nil {
				return err
			}
		}
	}
	for kv, suffix := range []string{"f32", "bf16"} {
		if d.ropeAppend[kv], err = find("kv_rope_append_" + suffix); err != nil {
			return err
		}
		for lg := 0; lg < 3; lg++ {
			if d.decode[kv][lg], err = find(fmt.Sprintf("attention_decode_kv%d_g%d", kv, 1<<lg)); err != nil {
				return err
			}
		}
	}
	d.attnBF16 = map[[2]int]kfn{}
	for _, vd := range [][2]int{{1, 4}, {2, 4}, {4, 4}, {1, 8}, {2, 8}} {
		if d.attnBF16[vd], err = find(fmt.Sprintf("attention_v%d_d%d_bf16", vd[0], vd[1])); err != nil {
			return err
		}
	}
	return nil
}

// gemvCall is one decode MatMul: out [n, nout] = x [n, k] @ w [nout, k]^T. The device
// pointers are taken when the call is made; keep holds the tensors alive until launch.
type gemvCall struct {
	out, x, w  cu.DevicePtr
	n, k, nout int
	dt         dtype
	keep       [3]*Tensor
}

// ropeCall is one held-back rotation of x [rows, cols].
type ropeCall struct {
	ptr        cu.DevicePtr
	rows, cols int
	keep       *Tensor
}

// pending are the operations held back for fusion: decode matmuls sharing x, or
// rotations sharing positions (never both).
type pending struct {
	gemv    []gemvCall
	rope    []ropeCall
	ropeHD  int     // head dim of the held-back rotations
	ropePos []int32 // their positions
}

// maxGEMVGroup is the most matmuls one gemv_* launch takes (kernels/matmul.cu).
const maxGEMVGroup = 3

func (p *pending) any() bool { return len(p.gemv) > 0 || len(p.rope) > 0 }

// overlaps reports whether byte ranges [a, a+an) and [c, c+cn) share a byte.
func overlaps(a cu.DevicePtr, an int64, c cu.DevicePtr, cn int64) bool {
	return a < c+cu.DevicePtr(cn) && c < a+cu.DevicePtr(an)
}

// joinsGEMV reports whether c can run in one launch with the held-back matmuls: same x,
// rows, inner size and weight type, fewer than maxGEMVGroup so far, and an output that
// overlaps neither x nor another output (their order would matter).
func (p *pending) joinsGEMV(c gemvCall) bool {
	if len(p.gemv) == 0 || len(p.gemv) >= maxGEMVGroup || len(p.rope) > 0 {
		return false
	}
	g := p.gemv[0]
	if c.x != g.x || c.n != g.n || c.k != g.k || c.dt != g.dt {
		return false
	}
	outBytes := func(c gemvCall) int64 { return int64(c.n) * int64(c.nout) * 4 }
	if overlaps(c.out, outBytes(c), c.x, int64(c.n)*int64(c.k)*4) {
		return false
	}
	for _, h := range p.gemv {
		if overlaps(c.out, outBytes(c), h.out, outBytes(h)) {
			return false
		}
	}
	return true
}

// joinsRope reports whether a rotation of c at pos with head dim hd can run with the
// held-back one: one held back, same head dim and positions, different memory.
func (p *pending) joinsRope(c ropeCall, hd int, pos []int32) bool {
	if len(p.rope) != 1 || len(p.gemv) > 0 || p.ropeHD != hd || !slices.Equal(p.ropePos, pos) {
		return false
	}
	r := p.rope[0]
	return c.rows == r.rows && !overlaps(c.ptr, int64(c.rows)*int64(c.cols)*4, r.ptr, int64(r.rows)*int64(r.cols)*4)
}

// flush launches whatever is held back. The caller holds the lock.
func (b *Backend) flush() {
	if g := b.pend.gemv; len(g) > 0 {
		b.pend.gemv = nil
		b.launchGEMV(g)
	}
	if r := b.pend.rope; len(r) > 0 {
		b.pend.rope = nil
		var q, k ropeCall = r[0], ropeCall{}
		if len(r) > 1 {
			k = r[1]
		}
		b.launchRopeAppend(q, k, nil, nil, 0, false)
	}
}

// ropePositions are the position arguments of kv_rope_append for the held-back
// rotations: the uploaded list, or none and the first position.
func (b *Backend) ropePositions() (cu.DevicePtr, int32) {
	pos := b.pend.ropePos
	if consecutive(pos) {
		return 0, pos[0]
	}
	return b.positions.ptr, 0
}

// launchRopeAppend runs kv_rope_append: rotates q and k (each when its tensor is set)
// with the held-back rotations' head dim and positions, and, with c set, appends k and v
// [n, kvHeads*hd] to c's layer, writing the advanced lengths to its other length array.
func (b *Backend) launchRopeAppend(q, k ropeCall, v *Tensor, c *KVCache, layer int, rotk bool) {
	hd, kvh, n := b.pend.ropeHD, 0, 0
	var posPtr cu.DevicePtr
	var pos0 int32
	if len(b.pend.ropePos) > 0 {
		posPtr, pos0 = b.ropePositions()
	}
	rotq := q.keep != nil
	if c != nil {
		hd, kvh, n = c.headDim, c.kvHeads, k.rows
	} else {
		rotk = k.keep != nil
		n = q.rows
	}
	if !rotq && !rotk {
		// Nothing rotates: the held-back positions (if any) belong to an earlier call and
		// may be fewer than n rows.
		posPtr, pos0 = 0, 0
	}
	half := int64(hd / 2)
	total := int64(0)
	if rotq {
		total += int64(n) * int64(q.cols/hd) * half
	}
	if rotk || c != nil {
		total += int64(n) * int64(k.cols/hd) * half
	}
	var kc, vc, off, ln, next, vp cu.DevicePtr
	kern := b.dk.ropeAppend[0]
	if c != nil {
		total += int64(n) * int64(kvh) * half
		kc, vc, off, ln, next, vp = c.buf.k[layer], c.buf.v[layer], c.offPtr(layer), c.lenPtr(layer), c.nextLenPtr(layer), v.ptr
		if c.bf16 {
			kern = b.dk.ropeAppend[1]
		}
	}
	if total == 0 && c == nil {
		return
	}
	b.launch(kern, gridFor(max(total, 1), b.sms), dim3{256, 1, 1}, 0,
		q.ptr, i32(q.cols, "rotated q cols"), boolArg(rotq), k.ptr, i32(k.cols, "rotated k cols"), boolArg(rotk), vp,
		kc, vc, off, ln, next, boolArg(c != nil), posPtr, pos0, b.invFreq.ptr,
		i32(n, "rotated rows"), int32(kvh), i32(hd, "head dim"))
}

func boolArg(v bool) int32 {
	if v {
		return 1
	}
	return 0
}

// launchGEMV runs up to maxGEMVGroup decode matmuls sharing x in one gemv_* launch:
// blocks [0, B0) compute calls[0]'s outputs, 4 per block, then calls[1], calls[2].
func (b *Backend) launchGEMV(calls []gemvCall) {
	const rowsPerBlock = 4 // kernels/matmul.cu GV_ROWS
	c0 := calls[0]
	lg := bits.Len(uint(c0.n - 1)) // 1 -> 0, 2 -> 1, 3..4 -> 2, 5..8 -> 3
	args := []any{c0.x, int32(c0.n), i32(c0.k, "MatMul in")}
	i32(c0.n*c0.k, "MatMul rows x in") // the kernel's element offsets into x are int
	blocks := 0
	for i := 0; i < maxGEMVGroup; i++ {
		var c gemvCall
		if i < len(calls) {
			c = calls[i]
		}
		nb := (c.nout + rowsPerBlock - 1) / rowsPerBlock
		blocks += nb
		args = append(args, c.out, c.w, i32(c.nout, "MatMul out"))
		if i < maxGEMVGroup-1 {
			args = append(args, int32(nb))
		}
	}
	b.launch(b.dk.gemv[c0.dt][lg], dim3{blocks, 1, 1}, dim3{256, 1, 1}, 0, args...)
}
