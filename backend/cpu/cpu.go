// Package cpu is lukv's reference backend: float32 compute on all cores, with the matrix
// products in package vec (assembly on amd64, pure Go elsewhere). Weight matrices stay in
// their checkpoint's type (float32, bfloat16, or int8 when asked). Every other backend is
// tested against it.
package cpu

import (
	"fmt"
	"math"
	"runtime"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/backend/cpu/vec"
	"github.com/lukv/lukv/quant"
)

// Mat is a row-major float32 matrix in host memory; a weight matrix may instead be kept
// as bfloat16 in W16 (bf16.go) or as int8 in Q8 (int8.go), with Data nil.
type Mat struct {
	R, C int
	Data []float32   // [R*C]
	W16  []uint16    // [R*C] bfloat16 bit patterns of a weight kept as bf16; nil otherwise
	Q8   *quant.Int8 // a weight kept as int8; nil otherwise
}

func (m *Mat) Rows() int { return m.R }
func (m *Mat) Cols() int { return m.C }

// Row returns row i as a slice of Data.
func (m *Mat) Row(i int) []float32 { return m.Data[i*m.C : (i+1)*m.C] }

// Backend is the CPU backend. Threads is the number of goroutines used for the heavy
// operations (matrix products, attention); 0 means GOMAXPROCS.
type Backend struct {
	Threads int
	// WidenBF16 widens bf16 checkpoint matrices to float32 at load instead of keeping
	// them as bf16 (bf16.go; the default: half the memory, and faster since matrix-vector
	// products are bound by weight bytes). Results are identical either way.
	WidenBF16 bool
	// BF16Dot rounds activations to bf16 in products of several rows (prefill) with bf16
	// weights, to run them on the CPU's bf16 dot-product instructions where it has them
	// (AVX512-BF16; vec.MatMulRoundX): about twice the arithmetic rate, as llama.cpp
	// computes BF16 models, at the cost of that rounding (TestBF16DotLogits measures it).
	BF16Dot bool
}

// New returns a CPU backend using every core.
func New() *Backend { return &Backend{} }

var _ backend.Backend = (*Backend)(nil)

func (b *Backend) Name() string { return "cpu" }

func (b *Backend) threads() int {
	if b.Threads > 0 {
		return b.Threads
	}
	return runtime.GOMAXPROCS(0)
}

func mat(t backend.Tensor) *Mat { return t.(*Mat) }

func (b *Backend) Weight(data []float32, rows, cols int) (backend.Tensor, error) {
	if len(data) != rows*cols {
		return nil, fmt.Errorf("cpu: weight of %d values does not fill [%d, %d]", len(data), rows, cols)
	}
	return &Mat{R: rows, C: cols, Data: data}, nil
}

func (b *Backend) Alloc(rows, cols int) backend.Tensor {
	return &Mat{R: rows, C: cols, Data: make([]float32, rows*cols)}
}

func (b *Backend) Free(t backend.Tensor) {}

func (b *Backend) RowView(t backend.Tensor, i int) backend.Tensor {
	m := mat(t)
	return &Mat{R: 1, C: m.C, Data: m.Row(i)}
}

func (b *Backend) Rows(t backend.Tensor, i, n int) backend.Tensor {
	m := mat(t)
	if i < 0 || n < 0 || i+n > m.R {
		panic(fmt.Sprintf("cpu: Rows %d..%d of a [%d, %d] tensor", i, i+n, m.R, m.C))
	}
	return &Mat{R: n, C: m.C, Data: m.Data[i*m.C : (i+n)*m.C]}
}

func (b *Backend) Read(t backend.Tensor) []float32 {
	m := mat(t)
	if m.Data == nil {
		return m.widenRows(make([]float32, m.R*m.C), 0, m.R)
	}
	return append([]float32(nil), m.Data...)
}

func (b *Backend) Embed(out, table backend.Tensor, ids []int) {
	o, tb := mat(out), mat(table)
	for i, id := range ids {
		if tb.Data == nil {
			tb.widenRows(o.Row(i), id, id+1)
			continue
		}
		copy(o.Row(i), tb.Row(id))
	}
}

// rmsNorm writes x / sqrt(mean(x^2)+eps) * w into out (out may alias x).
func rmsNorm(out, x, w []float32, eps float32) {
	var ss float64
	for _, v := range x {
		ss += float64(v) * float64(v)
	}
	inv := float32(1 / math.Sqrt(ss/float64(len(x))+float64(eps)))
	for j, v := range x {
		out[j] = v * inv * w[j]
	}
}

func (b *Backend) RMSNorm(out, x, w backend.Tensor, eps float32) {
	o, xm, wm := mat(out), mat(x), mat(w)
	for i := 0; i < xm.R; i++ {
		rmsNorm(o.Row(i), xm.Row(i), wm.Data, eps)
	}
}

func (b *Backend) HeadRMSNorm(x, w backend.Tensor, headDim int, eps float32) {
	xm, wm := mat(x), mat(w)
	for i := 0; i < xm.R; i++ {
		row := xm.Row(i)
		for h := 0; h+headDim <= len(row); h += headDim {
			rmsNorm(row[h:h+headDim], row[h:h+headDim], wm.Data, eps)
		}
	}
}

func (b *Backend) AddBias(x, bias backend.Tensor) {
	xm, bm := mat(x), mat(bias)
	for i := 0; i < xm.R; i++ {
		row := xm.Row(i)
		for j, v := range bm.Data {
			row[j] += v
		}
	}
}

func (b *Backend) Add(x, y backend.Tensor) {
	xm, ym := mat(x), mat(y)
	for i, v := range ym.Data {
		xm.Data[i] += v
	}
}

func (b *Backend) SwiGLU(out, gate, up backend.Tensor) {
	o, g, u := mat(out), mat(gate), mat(up)
	for i, gv := range g.Data {
		o.Data[i] = gv / (1 + float32(math.Exp(float64(-gv)))) * u.Data[i]
	}
}

func (b *Backend) RoPE(x backend.Tensor, headDim int, positions []int, rope *backend.RoPE) {
	xm := mat(x)
	half := headDim / 2
	cos, sin := rope.CosSin(positions)
	for i := 0; i < xm.R; i++ {
		row := xm.Row(i)
		c, s := cos[i*half:(i+1)*half], sin[i*half:(i+1)*half]
		for h := 0; h+headDim <= len(row); h += headDim {
			head := row[h : h+headDim]
			for j := 0; j < half; j++ {
				a, bb := head[j], head[j+half]
				head[j] = a*c[j] - bb*s[j]
				head[j+half] = bb*c[j] + a*s[j]
			}
		}
	}
}

// MatMul computes out = x @ w^T with package vec's kernels, in w's own element type.
func (b *Backend) MatMul(out, x, w backend.Tensor) {
	o, xm, wm := mat(out), mat(x), mat(w)
	n := xm.R
	if xm.C != wm.C || o.R != n || o.C != wm.R {
		panic(fmt.Sprintf("cpu.MatMul: shapes x[%d,%d] w[%d,%d] out[%d,%d]", xm.R, xm.C, wm.R, wm.C, o.R, o.C))
	}
	vm := vec.Matrix{Rows: wm.R, Cols: wm.C, F32: wm.Data, BF16: wm.W16, Int8: wm.Q8}
	if b.BF16Dot {
		vec.MatMulRoundX(o.Data, xm.Data, n, &vm, b.threads())
		return
	}
	vec.MatMul(o.Data, xm.Data, n, &vm, b.threads())
}

// parallelFor runs f(0..n-1) on up to threads goroutines.
func parallelFor(threads, n int, f func(i int)) { vec.ParallelFor(threads, n, f) }
