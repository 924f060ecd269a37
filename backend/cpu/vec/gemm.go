package vec

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/lukv/lukv/quant"
)

// Matrix is a [Rows, Cols] row-major weight matrix held in exactly one element type.
type Matrix struct {
	Rows, Cols int
	F32        []float32   // float32 values
	BF16       []uint16    // or bfloat16 bit patterns
	Int8       *quant.Int8 // or int8 values with per-group scales
}

// check says what is wrong with the matrix's storage, if anything.
func (w *Matrix) check() error {
	n := w.Rows * w.Cols
	switch {
	case w.F32 != nil && len(w.F32) == n, w.BF16 != nil && len(w.BF16) == n:
		return nil
	case w.Int8 != nil && w.Int8.Rows == w.Rows && w.Int8.Cols == w.Cols && len(w.Int8.Q) == n &&
		w.Cols%quant.GroupSize == 0 && len(w.Int8.Scales) == n/quant.GroupSize:
		return nil
	}
	return fmt.Errorf("vec: [%d, %d] matrix without storage of that size", w.Rows, w.Cols)
}

// Blocking. A task is a block of blockCols output columns (rows of w); it walks the
// inner dimension in chunks of kc, converting its block of w to float32 panels once per
// chunk (the only place bf16 and int8 weights are widened in a product), and sweeps every
// row of x over them, so each converted weight is used n times from cache.
const (
	kc = 256
	// gemvMinRows: below this many rows of x, each output is a plain dot product over w
	// in its own type (decode reads the weights once, without packing).
	gemvMinRows = 4
	// gemvChunk is the number of weights a matrix-vector task covers at least.
	gemvChunk = 1 << 15
)

// MatMul computes out = x @ w^T: out is [n, w.Rows], x is [n, w.Cols], on up to threads
// goroutines.
func MatMul(out, x []float32, n int, w *Matrix, threads int) {
	if err := w.check(); err != nil {
		panic(err)
	}
	if len(x) < n*w.Cols || len(out) < n*w.Rows {
		panic(fmt.Sprintf("vec.MatMul: x of %d and out of %d values for %d rows of [%d, %d]", len(x), len(out), n, w.Rows, w.Cols))
	}
	if n < gemvMinRows {
		gemv(out, x, n, w, threads)
		return
	}
	gemm(out, x, n, w, threads)
}

// dotRow returns x . w[r].
func (w *Matrix) dotRow(x []float32, r int) float32 {
	c := w.Cols
	switch {
	case w.F32 != nil:
		return DotF32(x, w.F32[r*c:(r+1)*c])
	case w.BF16 != nil:
		return DotBF16(x, w.BF16[r*c:(r+1)*c])
	}
	g := c / quant.GroupSize
	return DotInt8(x, w.Int8.Q[r*c:(r+1)*c], w.Int8.Scales[r*g:(r+1)*g])
}

func gemv(out, x []float32, n int, w *Matrix, threads int) {
	rowsPerTask := max(1, gemvChunk/max(1, w.Cols))
	tasks := (w.Rows + rowsPerTask - 1) / rowsPerTask
	ParallelFor(threads, tasks, func(t int) {
		lo, hi := t*rowsPerTask, min((t+1)*rowsPerTask, w.Rows)
		for i := range n {
			xr := x[i*w.Cols : (i+1)*w.Cols]
			o := out[i*w.Rows:]
			for r := lo; r < hi; r++ {
				o[r] = w.dotRow(xr, r)
			}
		}
	})
}

// tiler is one blocked-product implementation over panels of element type T: float32
// (x and w as float32), or uint32 (two bf16 values of consecutive inner indices).
type tiler[T float32 | uint32] struct {
	mr, nr int
	units  func(K int) int // panel elements along an inner dimension of K
	// packX writes rows of x [rows, K] into dst[u*mr + i]; packW writes units
	// [u0, u0+un) of row j of w into dst[u*nr].
	packX func(dst []T, x []float32, rows, K int)
	packW func(w *Matrix, dst []T, j, u0, un, nr int)
	tile  func(kn int, px, pw []T, c []float32, ldc, acc int)
}

// packs holds packed panels (of x per product, of w per task): reused, because fresh
// large buffers cost page faults on every product.
var packs = sync.Pool{New: func() any { return new([]float32) }}
var packs32 = sync.Pool{New: func() any { return new([]uint32) }}

func getPack[T float32 | uint32](n int) (*[]T, func()) {
	pool := &packs
	var zero T
	if _, ok := any(zero).(uint32); ok {
		pool = &packs32
	}
	buf := pool.Get().(*[]T)
	if cap(*buf) < n {
		*buf = make([]T, n)
	}
	*buf = (*buf)[:n]
	return buf, func() { pool.Put(buf) }
}

func gemm(out, x []float32, n int, w *Matrix, threads int) {
	gemmWith(&tiler[float32]{mr: ks.mr, nr: ks.nr, units: func(K int) int { return K },
		packX: packXF32, packW: packWF32, tile: ks.tile}, out, x, n, w, threads)
}

func gemmWith[T float32 | uint32](t *tiler[T], out, x []float32, n int, w *Matrix, threads int) {
	mr, nr := t.mr, t.nr
	K, N, U := w.Cols, w.Rows, t.units(w.Cols)
	// x packed by groups of mr rows: px[g*U*mr + u*mr + i] (rows past n are zero), so a
	// tile reads one contiguous run per chunk.
	groups := (n + mr - 1) / mr
	xbuf, done := getPack[T](groups * U * mr)
	defer done()
	px := *xbuf
	ParallelFor(threads, groups, func(g int) {
		dst := px[g*U*mr : (g+1)*U*mr]
		rows := min(mr, n-g*mr)
		if rows < mr {
			clear(dst)
		}
		t.packX(dst, x[g*mr*K:(g*mr+rows)*K], rows, K)
	})
	blockCols := 4 * nr
	if N <= 2*blockCols*threads {
		blockCols = nr // small matrices: enough tasks for every thread
	}
	tasks := (N + blockCols - 1) / blockCols
	ParallelFor(threads, tasks, func(task int) {
		j0, j1 := task*blockCols, min((task+1)*blockCols, N)
		panels := (j1 - j0 + nr - 1) / nr
		wbuf, done := getPack[T](panels * nr * kc)
		defer done()
		pw := *wbuf
		var edge [16 * 32]float32 // one tile, for tiles past x's or w's last row
		for u0 := 0; u0 < U; u0 += kc {
			un := min(kc, U-u0)
			for p := range panels {
				d := pw[p*un*nr : (p+1)*un*nr]
				for j := range nr {
					if r := j0 + p*nr + j; r < j1 {
						t.packW(w, d[j:], r, u0, un, nr)
						continue
					}
					for u := range un {
						d[u*nr+j] = 0
					}
				}
			}
			acc := 0
			if u0 > 0 {
				acc = 1
			}
			for p := range panels {
				jp := j0 + p*nr
				cols := min(nr, j1-jp)
				wp := pw[p*un*nr:]
				for g := range groups {
					xp := px[g*U*mr+u0*mr:]
					rows := min(mr, n-g*mr)
					if rows == mr && cols == nr {
						t.tile(un, xp, wp, out[g*mr*N+jp:], N, acc)
						continue
					}
					t.tile(un, xp, wp, edge[:], nr, 0)
					for i := range rows {
						o := out[(g*mr+i)*N+jp : (g*mr+i)*N+jp+cols]
						e := edge[i*nr : i*nr+cols]
						if acc == 0 {
							copy(o, e)
							continue
						}
						for j, v := range e {
							o[j] += v
						}
					}
				}
			}
		}
	})
}

func packXF32(dst []float32, x []float32, rows, K int) {
	mr := len(dst) / K
	for i := range rows {
		for k, v := range x[i*K : (i+1)*K] {
			dst[k*mr+i] = v
		}
	}
}

// packWF32 widens row j of w (any type), columns [k0, k0+kn), into dst[k*nr].
func packWF32(w *Matrix, dst []float32, j, k0, kn, nr int) {
	K := w.Cols
	switch {
	case w.F32 != nil:
		for k, v := range w.F32[j*K+k0 : j*K+k0+kn] {
			dst[k*nr] = v
		}
	case w.BF16 != nil:
		for k, v := range w.BF16[j*K+k0 : j*K+k0+kn] {
			dst[k*nr] = bf16(v)
		}
	default:
		q := w.Int8.Q[j*K+k0 : j*K+k0+kn]
		sc := w.Int8.Scales[(j*K+k0)/quant.GroupSize:]
		for k, v := range q {
			dst[k*nr] = float32(v) * sc[k/quant.GroupSize]
		}
	}
}

// tileGo is the pure-Go tile: c[i*ldc + j] (+= when acc is 1) sum over k < kn of
// px[k*mr + i] * pw[k*nr + j], for i < mr, j < nr, with mr x nr = 6 x 16.
func tileGo(kn int, px, pw, c []float32, ldc, acc int) {
	const mr, nr = 6, 16
	var t [16 * 32]float32
	for k := range kn {
		xs := px[k*mr : (k+1)*mr]
		ws := pw[k*nr : (k+1)*nr]
		for i, xv := range xs {
			row := t[i*nr : (i+1)*nr]
			for j, wv := range ws {
				row[j] += xv * wv
			}
		}
	}
	for i := range mr {
		o := c[i*ldc : i*ldc+nr]
		for j := range o {
			if acc == 1 {
				o[j] += t[i*nr+j]
			} else {
				o[j] = t[i*nr+j]
			}
		}
	}
}

// ParallelFor runs f(0..n-1) on up to threads goroutines, handing out indices in order.
func ParallelFor(threads, n int, f func(i int)) {
	if threads <= 1 || n <= 1 {
		for i := range n {
			f(i)
		}
		return
	}
	var next atomicCounter
	var wg sync.WaitGroup
	for range min(threads, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.take(); i < n; i = next.take() {
				f(i)
			}
		}()
	}
	wg.Wait()
}

type atomicCounter struct{ v atomic.Int64 }

func (c *atomicCounter) take() int { return int(c.v.Add(1) - 1) }
