//go:build cuda

package cuda

// Operations held back for fusion, and the decode step budget that motivates them.
//
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
// Measured at 8k, full cache (results/gpu/2026-11-28-h200-run3/kernel-profile, GPU time
// per token with the timing on: 6.65 ms; the step is 6.18 ms without it): gemv_bf16_n1 4254 us
// (129 launches, 3.53 TB/s), attention_decode_kv1_g4 1007 us (1.07 TB/s: ~18 us fixed
// per call, latency, not bytes), rmsnorm 768 us (65 x 11.8 us: one row per block,
// its loads one after another), add_inplace 276 us, kv_rope_append 172 us, swiglu 150 us.
//
// What this path does about it, with the expected effect (predictions, to be checked by
// scripts/bench-decode.sh):
//   - rmsnorm keeps the row in registers, all its loads in flight: ~2.5 us per row
//     (-0.6 ms per step);
//   - the residual Add after the o and down projections and the SwiGLU after gate/up
//     run in the GEMV's epilogue (gemvEpilogue below): 8 launches per layer instead of
//     11 (-0.4 ms);
//   - the split-K decode attention of attention_decode.go (opt-in,
//     LUKV_CUDA_DECODE_ATTN=splitk): the whole key tile in flight per block, no
//     redundant exponentials, fewer splits to merge; ~3 TB/s would take 1.0 ms to
//     ~0.35 ms at 8k and ~2.2 ms to ~1.1 ms at 32k.
//   Together: ~5.0 ms per step at 8k (~4.4 ms with the split-K attention) against the
//   4.49 ms of 1.2x the floor. int8 weights (int8.go) read 8.4 GB instead of 15.0 GB:
//   ~2.3 ms of GEMV at 85% of bandwidth, ~3.3-3.9 ms per step.
// What remains: the GEMV's ramp and tail per launch (~5 us on the small q/k/v and o
// matrices, where it reaches 80% of bandwidth against 94% on the LM head) and the launch
// gaps (~1 us each): a CUDA graph of the whole step, which needs every launch on a
// stream of its own (the legacy default stream cannot be captured), the token id and
// positions read from device memory, and the attention grids sized per length class
// so that a captured step stays valid as the cache grows.
//
// The numbers to check on the H200: BenchmarkMatMulDecode8B and ...Int8 (GB/s per
// shape), BenchmarkAttentionDecodeKV and ...SplitK (GB/s) and lukv-run bench's decode
// rows, all in scripts/bench-decode.sh; cmd/lukv-run's LUKV_CUDA_FUSE=0 measures the
// held-back fusion's share.
//
// Held-back operations ("pending"): MatMul of at most gemvMaxRows rows on the decode
// GEMV, RoPE and Attention do not launch at once when Options.Unfused is off. A decode
// MatMul waits for the next call: another decode MatMul with the same x (and weight
// type) joins it, up to three (the q, k, v projections; gate and up), and the group runs
// as one grid. A RoPE waits likewise: a second RoPE at the same positions joins it (q
// and k, one launch), and an Attention whose q and k are the held-back tensors does the
// rotations inside its cache append (kv_rope_append), one launch instead of three. Every
// other entry point (enter) launches whatever is held back first, so nothing can observe
// a result before it is computed; only the moment of the launch moves. Add and SwiGLU
// may instead join held-back matmuls as their epilogue (fuseAdd, fuseSwiGLU).

import (
	"slices"

	"gorgonia.org/cu"

	"github.com/lukv/lukv/backend"
)

// pending are the operations held back for fusion: decode matmuls sharing x, or
// rotations sharing positions (never both).
type pending struct {
	gemv    []gemvCall
	epi     gemvEpilogue // done by the held-back matmuls' launch
	rope    []ropeCall
	ropeHD  int     // head dim of the held-back rotations
	ropePos []int32 // their positions
}

// ropeCall is one held-back rotation of x [rows, cols].
type ropeCall struct {
	ptr        cu.DevicePtr
	rows, cols int
	keep       *Tensor
}

func (p *pending) any() bool { return len(p.gemv) > 0 || len(p.rope) > 0 }

// gemvEpilogue is an operation taken into the epilogue of the held-back matmuls'
// launch (kernels/matmul.cu GemvOut): the residual Add(res, out) after a lone matmul
// (the o and down projections), or SwiGLU(swo, gate, up) after the gate and up pair.
// keep holds res or swo alive until the launch.
type gemvEpilogue struct {
	res, swo cu.DevicePtr
	keep     *Tensor
}

func (e gemvEpilogue) set() bool { return e.res != 0 || e.swo != 0 }

// fuseAdd takes Add(x, y) into the held-back matmul when it is the one matmul held back,
// y is its whole output, and x is neither read (x of the matmul) nor written by it.
func (p *pending) fuseAdd(x, y *Tensor) bool {
	if len(p.gemv) != 1 || p.epi.set() || len(p.rope) > 0 {
		return false
	}
	c := p.gemv[0]
	if y.ptr != c.out || y.rows != c.n || y.cols != c.nout || x.rows != y.rows || x.cols != y.cols {
		return false
	}
	xb := count(x) * 4
	if overlaps(x.ptr, xb, c.x, int64(c.n)*int64(c.k)*4) || overlaps(x.ptr, xb, c.out, int64(c.n)*int64(c.nout)*4) {
		return false
	}
	p.epi = gemvEpilogue{res: x.ptr, keep: x}
	return true
}

// fuseSwiGLU takes SwiGLU(out, gate, up) into the two held-back matmuls when they write
// exactly gate and up (same shape), and out is gate, up, or apart from both and from x
// (each element's gate, up and product are written by one thread, in that order).
func (p *pending) fuseSwiGLU(out, gate, up *Tensor) bool {
	if len(p.gemv) != 2 || p.epi.set() || len(p.rope) > 0 {
		return false
	}
	g, u := p.gemv[0], p.gemv[1]
	same := func(t *Tensor, c gemvCall) bool { return t.ptr == c.out && t.rows == c.n && t.cols == c.nout }
	if !same(gate, g) || !same(up, u) || out.rows != gate.rows || out.cols != gate.cols {
		return false
	}
	ob := count(out) * 4
	if out.ptr != gate.ptr && out.ptr != up.ptr &&
		(overlaps(out.ptr, ob, gate.ptr, ob) || overlaps(out.ptr, ob, up.ptr, ob)) {
		return false
	}
	if overlaps(out.ptr, ob, g.x, int64(g.n)*int64(g.k)*4) {
		return false
	}
	p.epi = gemvEpilogue{swo: out.ptr, keep: out}
	return true
}

// overlaps reports whether byte ranges [a, a+an) and [c, c+cn) share a byte.
func overlaps(a cu.DevicePtr, an int64, c cu.DevicePtr, cn int64) bool {
	return a < c+cu.DevicePtr(cn) && c < a+cu.DevicePtr(an)
}

// joinsGEMV reports whether c can run in one launch with the held-back matmuls: same x,
// rows, inner size and weight type, fewer than maxGEMVGroup so far, and an output that
// overlaps neither x nor another output (their order would matter).
func (p *pending) joinsGEMV(c gemvCall) bool {
	if len(p.gemv) == 0 || len(p.gemv) >= maxGEMVGroup || len(p.rope) > 0 || p.epi.set() {
		return false
	}
	g := p.gemv[0]
	if c.x != g.x || c.n != g.n || c.k != g.k || c.dt != g.dt || c.i8 != g.i8 {
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
		epi := b.pend.epi
		b.pend.gemv, b.pend.epi = nil, gemvEpilogue{}
		b.launchGEMV(g, epi)
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

// f32Held is f32 for an operation that may join held-back ones: widening a narrow tensor
// replaces its memory, so whatever is held back is launched first.
func (b *Backend) f32Held(t backend.Tensor, what string) *Tensor {
	if ct := b.tensor(t, what); ct.dt != f32 {
		b.flush()
	}
	return b.f32(t, what)
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
	kern := "kv_rope_append_f32"
	if c != nil {
		total += int64(n) * int64(kvh) * half
		kc, vc, off, ln, next, vp = c.buf.k[layer], c.buf.v[layer], c.offPtr(layer), c.lenPtr(layer), c.nextLenPtr(layer), v.ptr
		if c.bf16 {
			kern = "kv_rope_append_bf16"
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
