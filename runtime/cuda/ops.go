//go:build cuda

package cuda

import (
	"fmt"
	"slices"

	"gorgonia.org/cu"

	lrt "github.com/lukv/lukv/runtime"
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
func (b *Backend) Embed(out, table lrt.Tensor, ids []int) {
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
func (b *Backend) RMSNorm(out, x, w lrt.Tensor, eps float32) {
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
func (b *Backend) HeadRMSNorm(x, w lrt.Tensor, headDim int, eps float32) {
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
// (decode) run on the matrix-vector kernel; more rows on the tiled float32 kernel, or,
// with Options.TensorCores and bf16 weights, on cuBLAS's bf16 tensor-core GEMM (x
// rounded to bf16, float32 accumulation).
func (b *Backend) MatMul(out, x, w lrt.Tensor) {
	defer b.enter()()
	o, xm, wm := b.f32(out, "MatMul out"), b.f32(x, "MatMul x"), b.tensor(w, "MatMul w")
	n, in, nout := xm.rows, xm.cols, wm.rows
	if wm.cols != in || o.rows != n || o.cols != nout {
		shapePanic("MatMul x, w, out", xm, wm, o)
	}
	if n == 0 || nout == 0 {
		return
	}
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
func (b *Backend) AddBias(x, bias lrt.Tensor) {
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
func (b *Backend) Add(x, y lrt.Tensor) {
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
func (b *Backend) SwiGLU(out, gate, up lrt.Tensor) {
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
// The inverse frequencies and positions are uploaded only when they change (the
// forward pass rotates q and k of every layer at the same positions).
func (b *Backend) RoPE(x lrt.Tensor, headDim int, positions []int, rope *lrt.RoPE) {
	defer b.enter()()
	xm := b.f32(x, "RoPE x")
	if headDim <= 0 || headDim%2 != 0 || len(positions) != xm.rows || len(rope.InvFreq) != headDim/2 {
		panic(fmt.Sprintf("cuda: RoPE: x [%d, %d], headDim %d, %d positions, %d inverse frequencies do not fit",
			xm.rows, xm.cols, headDim, len(positions), len(rope.InvFreq)))
	}
	total := int64(xm.rows) * int64(xm.cols/headDim) * int64(headDim/2)
	if total == 0 {
		return
	}
	freq := make([]float32, len(rope.InvFreq))
	for j, f := range rope.InvFreq {
		freq[j] = float32(f) // runtime/rope.go: the angle is float32(p) * float32(f)
	}
	if !slices.Equal(freq, b.freqHost) {
		if err := b.invFreq.uploadFloat32(freq, "RoPE inverse frequencies"); err != nil {
			panic(err)
		}
		b.freqHost = freq
	}
	pos := make([]int32, len(positions))
	for i, p := range positions {
		pos[i] = i32(p, "RoPE position")
	}
	if !slices.Equal(pos, b.posHost) {
		if err := b.positions.uploadInt32(pos, "RoPE positions"); err != nil {
			panic(err)
		}
		b.posHost = pos
	}
	b.launch(b.k.rope, gridFor(total, b.sms), dim3{256, 1, 1}, 0, xm.ptr, b.positions.ptr, b.invFreq.ptr,
		i32(xm.rows, "RoPE rows"), i32(xm.cols, "RoPE cols"), i32(headDim, "headDim"))
}
