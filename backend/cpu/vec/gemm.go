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

// packs holds packed panels (of x per product, of w per task): reused, because fresh
// large buffers cost page faults on every product.
var packs = sync.Pool{New: func() any { return new([]float32) }}

func gemm(out, x []float32, n int, w *Matrix, threads int) {
	mr, nr, tile := ks.mr, ks.nr, ks.tile
	K, N := w.Cols, w.Rows
	// x packed by groups of mr rows: px[g*K*mr + k*mr + i] = x[g*mr+i][k] (rows past n
	// are zero), so a tile reads one contiguous run per chunk.
	groups := (n + mr - 1) / mr
	xbuf := packs.Get().(*[]float32)
	defer packs.Put(xbuf)
	if cap(*xbuf) < groups*K*mr {
		*xbuf = make([]float32, groups*K*mr)
	}
	px := (*xbuf)[:groups*K*mr]
	ParallelFor(threads, groups, func(g int) {
		dst := px[g*K*mr : (g+1)*K*mr]
		if n < (g+1)*mr {
			clear(dst) // the rows past n are zero
		}
		for i := 0; i < mr && g*mr+i < n; i++ {
			src := x[(g*mr+i)*K : (g*mr+i+1)*K]
			for k, v := range src {
				dst[k*mr+i] = v
			}
		}
	})
	blockCols := 4 * nr
	if N <= 2*blockCols*threads {
		blockCols = nr // small matrices: enough tasks for every thread
	}
	tasks := (N + blockCols - 1) / blockCols
	ParallelFor(threads, tasks, func(t int) {
		j0, j1 := t*blockCols, min((t+1)*blockCols, N)
		panels := (j1 - j0 + nr - 1) / nr
		buf := packs.Get().(*[]float32)
		defer packs.Put(buf)
		if cap(*buf) < panels*nr*kc {
			*buf = make([]float32, panels*nr*kc)
		}
		pw := (*buf)[:panels*nr*kc]
		var edge [16 * 32]float32 // one tile, for tiles past x's or w's last row
		for k0 := 0; k0 < K; k0 += kc {
			kn := min(kc, K-k0)
			w.pack(pw, j0, j1, k0, kn, nr)
			acc := 0
			if k0 > 0 {
				acc = 1
			}
			for p := range panels {
				jp := j0 + p*nr
				cols := min(nr, j1-jp)
				wp := pw[p*kn*nr:]
				for g := range groups {
					xp := px[g*K*mr+k0*mr:]
					rows := min(mr, n-g*mr)
					if rows == mr && cols == nr {
						tile(kn, xp, wp, out[g*mr*N+jp:], N, acc)
						continue
					}
					tile(kn, xp, wp, edge[:], nr, 0)
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

// pack writes rows [j0, j1) of w, columns [k0, k0+kn), as float32 panels of nr rows:
// dst[p*kn*nr + k*nr + j] = w[j0+p*nr+j][k0+k], zero past j1.
func (w *Matrix) pack(dst []float32, j0, j1, k0, kn, nr int) {
	K := w.Cols
	panels := (j1 - j0 + nr - 1) / nr
	for p := range panels {
		d := dst[p*kn*nr : (p+1)*kn*nr]
		for j := range nr {
			r := j0 + p*nr + j
			if r >= j1 {
				for k := range kn {
					d[k*nr+j] = 0
				}
				continue
			}
			switch {
			case w.F32 != nil:
				for k, v := range w.F32[r*K+k0 : r*K+k0+kn] {
					d[k*nr+j] = v
				}
			case w.BF16 != nil:
				for k, v := range w.BF16[r*K+k0 : r*K+k0+kn] {
					d[k*nr+j] = bf16(v)
				}
			default:
				q := w.Int8.Q[r*K+k0 : r*K+k0+kn]
				sc := w.Int8.Scales[(r*K+k0)/quant.GroupSize:]
				for k, v := range q {
					d[k*nr+j] = float32(v) * sc[k/quant.GroupSize]
				}
			}
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
