// Package cpu is lukv's reference backend: pure Go, float32 compute, all cores.
// Every other backend is tested against it.
package cpu

import (
	"fmt"
	"math"
	"runtime"
	"sync"

	"gonum.org/v1/gonum/blas/blas32"

	"github.com/lukv/lukv/backend"
)

// Mat is a row-major float32 matrix in host memory; a weight matrix may instead be kept
// as bfloat16 in W16 (bf16.go), with Data nil.
type Mat struct {
	R, C int
	Data []float32 // [R*C]
	W16  []uint16  // [R*C] bfloat16 bit patterns of a weight kept as bf16; nil otherwise
}

func (m *Mat) Rows() int { return m.R }
func (m *Mat) Cols() int { return m.C }

// Row returns row i as a slice of Data.
func (m *Mat) Row(i int) []float32 { return m.Data[i*m.C : (i+1)*m.C] }

// Backend is the CPU backend. Threads is the number of goroutines used for the heavy
// operations (matrix products, attention); 0 means GOMAXPROCS.
type Backend struct {
	Threads int
	// KeepBF16 keeps bf16 checkpoint matrices as bf16 (half the memory; bf16.go) instead
	// of widening them to float32 at load. Results are identical.
	KeepBF16 bool
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
	if m.W16 != nil {
		return m.widenRows(make([]float32, m.R*m.C), 0, m.R)
	}
	return append([]float32(nil), m.Data...)
}

func (b *Backend) Embed(out, table backend.Tensor, ids []int) {
	o, tb := mat(out), mat(table)
	for i, id := range ids {
		if tb.W16 != nil {
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

// MatMul computes out = x @ w^T. Each output element is a dot product of two contiguous
// rows (gonum's assembly sdot); work is split over blocks of w's rows so each block
// stays in cache while every row of x passes over it.
func (b *Backend) MatMul(out, x, w backend.Tensor) {
	o, xm, wm := mat(out), mat(x), mat(w)
	n, in, nout := xm.R, xm.C, wm.R
	if xm.C != wm.C || o.R != n || o.C != nout {
		panic(fmt.Sprintf("cpu.MatMul: shapes x[%d,%d] w[%d,%d] out[%d,%d]", xm.R, xm.C, wm.R, wm.C, o.R, o.C))
	}
	const block = 32
	blocks := (nout + block - 1) / block
	parallelFor(b.threads(), blocks, func(blk int) {
		lo, hi := blk*block, min((blk+1)*block, nout)
		wd, w0 := wm.Data, 0 // row r of w is row r-w0 of wd
		if wm.W16 != nil {
			// bf16: widen this block of rows only, into a pooled scratch buffer.
			buf := scratch.Get().(*[]float32)
			defer scratch.Put(buf)
			if cap(*buf) < block*in {
				*buf = make([]float32, block*in)
			}
			wd, w0 = wm.widenRows(*buf, lo, hi), lo
		}
		for i := 0; i < n; i++ {
			xr := blas32.Vector{N: in, Inc: 1, Data: xm.Data[i*in : (i+1)*in]}
			orow := o.Data[i*nout:]
			for r := lo; r < hi; r++ {
				orow[r] = blas32.Dot(xr, blas32.Vector{N: in, Inc: 1, Data: wd[(r-w0)*in : (r-w0+1)*in]})
			}
		}
	})
}

// parallelFor runs f(0..n-1) on up to threads goroutines, handing out indices in order.
func parallelFor(threads, n int, f func(i int)) {
	if threads <= 1 || n <= 1 {
		for i := 0; i < n; i++ {
			f(i)
		}
		return
	}
	var mu sync.Mutex
	next := 0
	var wg sync.WaitGroup
	for t := 0; t < min(threads, n); t++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= n {
					return
				}
				f(i)
			}
		}()
	}
	wg.Wait()
}
