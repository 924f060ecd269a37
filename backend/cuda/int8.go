//go:build cuda

package cuda

// int8 weights (backend.Int8Weights): a matrix in package quant's layout kept on the
// device as its int8 values and float32 group scales, used only as MatMul's weight.
//
// Decode (at most gemvMaxRows rows of x, rows of x 16-byte aligned) reads it in place:
// gemv_i8_n<NR> (kernels/matmul.cu), grouped with other int8 matmuls sharing x like
// the bf16 GEMV (fusion.go). A decode step of the 8B shape then reads 1.125 bytes per
// weight instead of 2.
//
// Prefill dequantizes the whole matrix into a scratch buffer and runs the existing
// matrix kernels on it: bf16 on cuBLAS's tensor cores with Options.TensorCores, float32
// on the tiled kernel otherwise. Why not a GEMM that widens int8 tile by tile: prefill
// over n rows does 2*n flops per weight byte read, so at the n of a prefill chunk (hundreds
// to thousands of rows) the extra pass (1.125 bytes read, 2 written per weight: ~25 us
// for a 4096x14336 matrix at 4 TB/s) is a few percent of the GEMM's time, and it reuses
// the tuned cuBLAS kernel instead of a new tensor-core GEMM. The scratch buffer grows to
// the largest matrix dequantized (the 14336x4096 MLP matrices of an 8B model: 117 MB in
// bf16; the LM head only ever sees the last row, on the GEMV).

import (
	"fmt"
	"runtime"
	"unsafe"

	"gorgonia.org/cu"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/quant"
)

// Int8Tensor is an int8 weight matrix [rows, cols] on the device: q holds rows*cols
// int8 values, row-major; scales rows*cols/quant.GroupSize float32 values. Only MatMul
// takes it (as its weight); its memory returns to the backend's pool when it is dropped.
type Int8Tensor struct {
	rows, cols int
	q, scales  cu.DevicePtr
	qSize      int64
	sSize      int64
}

func (t *Int8Tensor) Rows() int { return t.rows }
func (t *Int8Tensor) Cols() int { return t.cols }

// DType is "int8".
func (t *Int8Tensor) DType() string { return "int8" }

// Bytes is the device memory the matrix takes (values and scales).
func (t *Int8Tensor) Bytes() int64 { return t.qSize + t.sSize }

var _ backend.Int8Weights = (*Backend)(nil)

// WeightInt8 uploads m. Its columns must be a multiple of quant.GroupSize (quant.Quantize
// guarantees it) and its slices must fill the shape.
func (b *Backend) WeightInt8(m *quant.Int8) (backend.Tensor, error) {
	if m == nil {
		return nil, fmt.Errorf("cuda: WeightInt8: nil matrix")
	}
	if m.Rows <= 0 || m.Cols <= 0 || m.Cols%quant.GroupSize != 0 {
		return nil, fmt.Errorf("cuda: int8 weight [%d, %d]: want positive rows and columns divisible by %d", m.Rows, m.Cols, quant.GroupSize)
	}
	n := int64(m.Rows) * int64(m.Cols)
	if int64(len(m.Q)) != n || int64(len(m.Scales)) != n/quant.GroupSize {
		return nil, fmt.Errorf("cuda: int8 weight [%d, %d]: %d values and %d scales, want %d and %d", m.Rows, m.Cols, len(m.Q), len(m.Scales), n, n/quant.GroupSize)
	}
	defer b.enter()()
	t := &Int8Tensor{rows: m.Rows, cols: m.Cols, qSize: n, sSize: n / quant.GroupSize * 4}
	what := fmt.Sprintf("int8 weight [%d, %d]", m.Rows, m.Cols)
	var err error
	if t.q, err = b.allocTensor(t.qSize, what); err != nil {
		return nil, err
	}
	if t.scales, err = b.allocTensor(t.sSize, what+" scales"); err != nil {
		b.pool.put(t.q, t.qSize)
		return nil, err
	}
	runtime.AddCleanup(t, b.pool.schedule, allocation{ptr: t.q, size: t.qSize, pooled: true})
	runtime.AddCleanup(t, b.pool.schedule, allocation{ptr: t.scales, size: t.sSize, pooled: true})
	if err := cu.MemcpyHtoD(t.q, unsafe.Pointer(&m.Q[0]), t.qSize); err != nil {
		return nil, fmt.Errorf("cuda: %s: copy to device: %w", what, err)
	}
	if err := cu.MemcpyHtoD(t.scales, unsafe.Pointer(&m.Scales[0]), t.sSize); err != nil {
		return nil, fmt.Errorf("cuda: %s scales: copy to device: %w", what, err)
	}
	return t, nil
}

// gemvI8Kernels are the int8 decode GEMVs by log2 of the rows of x (1, 2, 4, 8).
var gemvI8Kernels = [4]string{"gemv_i8_n1", "gemv_i8_n2", "gemv_i8_n4", "gemv_i8_n8"}

// matmulInt8 is MatMul with an int8 weight; the caller holds the lock.
func (b *Backend) matmulInt8(out, x backend.Tensor, w *Int8Tensor) {
	o, xm := b.f32Held(out, "MatMul out"), b.f32Held(x, "MatMul x")
	n, in, nout := xm.rows, xm.cols, w.rows
	if w.cols != in || o.rows != n || o.cols != nout {
		panic(fmt.Sprintf("cuda: MatMul: x [%d, %d], int8 w [%d, %d], out [%d, %d] do not fit", xm.rows, xm.cols, w.rows, w.cols, o.rows, o.cols))
	}
	if n == 0 {
		return
	}
	if n <= gemvMaxRows && xm.ptr%16 == 0 {
		call := gemvCall{out: o.ptr, x: xm.ptr, w: w.q, scales: w.scales, n: n, k: in, nout: nout, i8: true, keep: [3]*Tensor{o, xm, nil}, keepI8: w}
		b.queueGEMV(call)
		return
	}
	b.flush()
	// Dequantize into a pooled scratch buffer and multiply with the dense kernels (see the
	// top of the file). The buffer goes back to the pool at once: later users of the
	// pool run after these kernels on the same stream.
	dt := f32
	if b.opt.TensorCores && n > gemvMaxRows && b.blasReady() {
		dt = bf16
	}
	dense := b.dequantInt8(w, dt)
	defer func() { b.pool.put(dense.ptr, dense.size) }()
	if dt == bf16 && b.matmulTensorCores(o, xm, dense) {
		return
	}
	if dt != f32 { // cuBLAS refused after all: the float32 kernels
		b.pool.put(dense.ptr, dense.size)
		dense = b.dequantInt8(w, f32)
	}
	b.matmulDense(o, xm, dense)
}

// dequantKernels widen an int8 matrix, by the dtype written.
var dequantKernels = [3]string{f32: "dequant_i8_f32", bf16: "dequant_i8_bf16"}

// dequantInt8 returns w widened to dt (f32 or bf16) in a tensor of the pool, not owned:
// the caller returns its memory with pool.put.
func (b *Backend) dequantInt8(w *Int8Tensor, dt dtype) *Tensor {
	count := int64(w.rows) * int64(w.cols)
	size := count * dt.size()
	ptr, err := b.allocTensor(size, fmt.Sprintf("MatMul: int8 weight [%d, %d] widened to %v", w.rows, w.cols, dt))
	if err != nil {
		panic(err)
	}
	b.launch(dequantKernels[dt], gridFor(count/16, b.sms), dim3{256, 1, 1}, 0, ptr, w.q, w.scales, count)
	return &Tensor{rows: w.rows, cols: w.cols, dt: dt, ptr: ptr, size: size}
}
