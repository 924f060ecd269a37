//go:build cuda

package cuda

// MatMul: the decode GEMV kernels (gemv_* for aligned rows, grouped by fusion.go;
// matmul_gemv_* otherwise), the tiled float32 kernel for prefill, and the hand-off to
// cuBLAS on the tensor cores (cublas.go). Kernels: kernels/matmul.cu.

import (
	"fmt"
	"math/bits"

	"gorgonia.org/cu"

	"github.com/lukv/lukv/backend"
)

// gemvMaxRows is the most rows of x MatMul sends to the matrix-vector kernel (it keeps
// one accumulator per row in registers; kernels/matmul.cu GEMV_MAX_ROWS).
const gemvMaxRows = 8

// MatMul: out = x @ w^T, x [n, in], w [out, in], out [n, out]. Up to gemvMaxRows rows
// (decode) run on a matrix-vector kernel: gemv_<dt>_n<1|2|4|8> when the rows of x and w
// are 16-byte aligned (held back to group with the next MatMul of the same x, see
// fusion.go), else matmul_gemv_<dt>; more rows on the tiled float32 kernel, or,
// with Options.TensorCores and bf16 weights, on cuBLAS's bf16 tensor-core GEMM (x
// rounded to bf16, float32 accumulation).
func (b *Backend) MatMul(out, x, w backend.Tensor) {
	defer b.lock()()
	if w8, ok := w.(*Int8Tensor); ok {
		b.matmulInt8(out, x, w8)
		return
	}
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
		b.queueGEMV(gemvCall{out: o.ptr, x: xm.ptr, w: wm.ptr, n: n, k: in, nout: nout, dt: wm.dt, keep: [3]*Tensor{o, xm, wm}})
		return
	}
	b.flush()
	b.matmulDense(o, xm, wm)
}

// queueGEMV holds a decode matmul back to group it with the next one sharing x
// (fusion.go), or launches it at once with Options.Unfused.
func (b *Backend) queueGEMV(call gemvCall) {
	if b.opt.Unfused {
		b.flush()
		b.launchGEMV([]gemvCall{call}, gemvEpilogue{})
		return
	}
	if !b.pend.joinsGEMV(call) {
		b.flush()
	}
	b.pend.gemv = append(b.pend.gemv, call)
}

// matmulDense is MatMul off the grouped GEMV: the generic matrix-vector kernel for a few
// rows, else cuBLAS or the tiled kernel. Nothing is held back.
func (b *Backend) matmulDense(o, xm, wm *Tensor) {
	n, in, nout := xm.rows, xm.cols, wm.rows
	if in == 0 {
		b.zero(o)
		return
	}
	args := []any{o.ptr, xm.ptr, wm.ptr, i32(n, "MatMul rows"), i32(in, "MatMul in"), i32(nout, "MatMul out")}
	if n <= gemvMaxRows {
		const warps = 8 // kernels/matmul.cu GEMV_WARPS: one output column per warp
		b.launch(matmulGEMVKernels[wm.dt], dim3{(nout + warps - 1) / warps, 1, 1}, dim3{32 * warps, 1, 1}, 0, args...)
		return
	}
	// Prefill: bf16 weights on the tensor cores when asked for (cublas.go), else (and when
	// cuBLAS is unavailable: MatMulPath says why) the float32 tiled kernel.
	if b.opt.TensorCores && wm.dt == bf16 && b.matmulTensorCores(o, xm, wm) {
		return
	}
	const tile = 64 // kernels/matmul.cu TILE_M, TILE_N
	b.launch(matmulTiledKernels[wm.dt], dim3{(nout + tile - 1) / tile, (n + tile - 1) / tile, 1}, dim3{256, 1, 1}, 0, args...)
}

// zero clears a float32 tensor (a view too: its rows are contiguous).
func (b *Backend) zero(t *Tensor) {
	if n := count(t); n > 0 {
		if err := cu.MemsetD32Async(t.ptr, 0, n, cu.NoStream); err != nil {
			panic(fmt.Errorf("cuda: zeroing [%d, %d]: %w", t.rows, t.cols, err))
		}
	}
}

// gemvCall is one decode MatMul: out [n, nout] = x [n, k] @ w [nout, k]^T, w of type dt,
// or int8 with its scales (i8). The device pointers are taken when the call is made;
// keep and keepI8 hold the tensors alive until launch.
type gemvCall struct {
	out, x, w  cu.DevicePtr
	scales     cu.DevicePtr
	n, k, nout int
	dt         dtype
	i8         bool
	keep       [3]*Tensor
	keepI8     *Int8Tensor
}

// maxGEMVGroup is the most matmuls one gemv_* launch takes (kernels/matmul.cu).
const maxGEMVGroup = 3

// The matmul kernels by weight dtype: the generic matrix-vector kernel, the tiled one,
// and the decode GEMV by dtype and log2 of the rows of x rounded up to 1, 2, 4 or 8
// (kernels/matmul.cu NR).
var (
	matmulGEMVKernels  = [3]string{f32: "matmul_gemv_f32", bf16: "matmul_gemv_bf16", f16: "matmul_gemv_f16"}
	matmulTiledKernels = [3]string{f32: "matmul_tiled_f32", bf16: "matmul_tiled_bf16", f16: "matmul_tiled_f16"}
	gemvKernels        = [3][4]string{
		f32:  {"gemv_f32_n1", "gemv_f32_n2", "gemv_f32_n4", "gemv_f32_n8"},
		bf16: {"gemv_bf16_n1", "gemv_bf16_n2", "gemv_bf16_n4", "gemv_bf16_n8"},
		f16:  {"gemv_f16_n1", "gemv_f16_n2", "gemv_f16_n4", "gemv_f16_n8"},
	}
)

// launchGEMV runs up to maxGEMVGroup decode matmuls sharing x in one gemv_* launch:
// blocks [0, B0) compute calls[0]'s outputs, 4 per block, then calls[1], calls[2]; or,
// with epi.swo set, calls[0] and calls[1] (gate and up) paired, 2 rows of each per block.
// epi is done in the kernels' epilogue (kernels/matmul.cu GemvOut).
func (b *Backend) launchGEMV(calls []gemvCall, epi gemvEpilogue) {
	const rowsPerBlock = 4 // kernels/matmul.cu GV_ROWS
	c0 := calls[0]
	lg := bits.Len(uint(c0.n - 1)) // 1 -> 0, 2 -> 1, 3..4 -> 2, 5..8 -> 3
	args := []any{c0.x, int32(c0.n), i32(c0.k, "MatMul in")}
	i32(c0.n*c0.k, "MatMul rows x in") // the kernel's element offsets into x are int
	pair := epi.swo != 0
	if (pair && len(calls) != 2) || (epi.res != 0 && len(calls) != 1) {
		panic(fmt.Sprintf("cuda: GEMV epilogue %+v with %d matmuls", epi, len(calls)))
	}
	blocks := 0
	for i := 0; i < maxGEMVGroup; i++ {
		var c gemvCall
		if i < len(calls) {
			c = calls[i]
		}
		nb := (c.nout + rowsPerBlock - 1) / rowsPerBlock
		if pair {
			nb = 0
			if i == 0 {
				nb = (c.nout + 1) / 2
			}
		}
		blocks += nb
		args = append(args, c.out, c.w)
		if c0.i8 {
			args = append(args, c.scales)
		}
		args = append(args, i32(c.nout, "MatMul out"))
		if i < maxGEMVGroup-1 {
			args = append(args, int32(nb))
		}
	}
	args = append(args, epi.res, epi.swo, boolArg(pair))
	kern := gemvKernels[c0.dt][lg]
	if c0.i8 {
		kern = gemvI8Kernels[lg]
	}
	b.launch(kern, dim3{blocks, 1, 1}, dim3{256, 1, 1}, 0, args...)
}
