package vec

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/lukv/lukv/quant"
)

func randF32(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

func randBF16(r *rand.Rand, n int) []uint16 {
	v := make([]uint16, n)
	for i := range v {
		v[i] = uint16(math.Float32bits(float32(r.NormFloat64())) >> 16)
	}
	return v
}

// eachSet runs f with every kernel set this CPU can run in use.
func eachSet(t *testing.T, f func(t *testing.T)) {
	t.Helper()
	saved := ks
	defer func() { ks = saved }()
	for _, s := range sets {
		ks = s
		t.Run(s.name, f)
	}
}

// near fails unless got is within tol * scale of want (float64 references).
func near(t *testing.T, what string, got float32, want, scale, tol float64) {
	t.Helper()
	if d := math.Abs(float64(got) - want); d > tol*scale || math.IsNaN(float64(got)) {
		t.Fatalf("%s: got %v, want %v (diff %.3g, allowed %.3g)", what, got, want, d, tol*scale)
	}
}

// Every kernel set's dot products and axpy match a float64 reference on random inputs of
// lengths that exercise every loop (32-wide, 8-wide, scalar tail).
func TestDots(t *testing.T) {
	eachSet(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(1, 2))
		for _, n := range []int{0, 1, 7, 8, 9, 31, 32, 33, 63, 64, 100, 257, 2048, 5633} {
			a, b := randF32(r, n), randF32(r, n)
			w := randBF16(r, n)
			var want, wantBF, scale float64
			for i := range n {
				want += float64(a[i]) * float64(b[i])
				wantBF += float64(a[i]) * float64(bf16(w[i]))
				scale += math.Abs(float64(a[i]) * float64(b[i]))
			}
			near(t, "DotF32", DotF32(a, b), want, scale+1, 1e-6)
			near(t, "DotBF16", DotBF16(a, w), wantBF, scale+1, 1e-5)
			y := randF32(r, n)
			y0 := append([]float32(nil), y...)
			Axpy(0.75, a, y)
			for i := range n {
				near(t, "Axpy", y[i], float64(y0[i])+0.75*float64(a[i]), 2, 1e-6)
			}
		}
		for _, groups := range []int{0, 1, 2, 3, 64, 176} {
			n := groups * quant.GroupSize
			x, wf := randF32(r, n), randF32(r, n)
			m, err := quant.Quantize(wf, 1, max(n, quant.GroupSize))
			if n == 0 {
				if got := DotInt8(nil, nil, nil); got != 0 {
					t.Fatalf("empty DotInt8 = %v", got)
				}
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			deq := m.Dequantize()
			var want, scale float64
			for i := range n {
				want += float64(x[i]) * float64(deq[i])
				scale += math.Abs(float64(x[i]) * float64(deq[i]))
			}
			near(t, "DotInt8", DotInt8(x, m.Q, m.Scales), want, scale, 1e-5)
		}
	})
}

// A bf16 vector gives the same bits as its float32 widening (the CPU backend promises
// identical results for kept and widened bf16 weights).
func TestDotBF16IsDotF32OfWidened(t *testing.T) {
	eachSet(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(3, 4))
		for _, n := range []int{5, 40, 1001} {
			x, w := randF32(r, n), randBF16(r, n)
			wf := make([]float32, n)
			for i, h := range w {
				wf[i] = bf16(h)
			}
			if a, b := DotBF16(x, w), DotF32(x, wf); a != b {
				t.Fatalf("n=%d: DotBF16 %v, DotF32 of the widened values %v", n, a, b)
			}
		}
	})
}

// MatMul for each weight type, through the matrix-vector path (few rows) and the blocked
// path (tiles cut at every edge: rows of x and of w not multiples of the tile, inner
// dimensions across several chunks), against a float64 reference.
func TestMatMul(t *testing.T) {
	eachSet(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(7, 8))
		for _, sh := range []struct{ n, rows, cols int }{
			{1, 33, 64}, {3, 70, 96}, {4, 16, 32}, {5, 77, 32 * 9}, {13, 129, 32 * 17}, {40, 300, 256}, {7, 1, 608}, {6, 21, 301}, {2, 9, 45},
		} {
			x := randF32(r, sh.n*sh.cols)
			wf := randF32(r, sh.rows*sh.cols)
			q, err := quant.Quantize(wf, sh.rows, sh.cols)
			if err != nil && sh.cols%quant.GroupSize == 0 {
				t.Fatal(err)
			}
			w16 := make([]uint16, len(wf))
			for i, v := range wf {
				w16[i] = uint16(math.Float32bits(v) >> 16)
			}
			for _, c := range []struct {
				name string
				m    Matrix
				ref  func(i int) float64
			}{
				{"f32", Matrix{F32: wf}, func(i int) float64 { return float64(wf[i]) }},
				{"bf16", Matrix{BF16: w16}, func(i int) float64 { return float64(bf16(w16[i])) }},
				{"int8", Matrix{Int8: q}, func(i int) float64 { return float64(q.Q[i]) * float64(q.Scales[i/quant.GroupSize]) }},
			} {
				if c.name == "int8" && q == nil {
					continue // int8 rows are whole groups
				}
				c.m.Rows, c.m.Cols = sh.rows, sh.cols
				for _, threads := range []int{1, 3} {
					out := randF32(r, sh.n*sh.rows) // overwritten, not added to
					MatMul(out, x, sh.n, &c.m, threads)
					for i := range sh.n {
						for j := range sh.rows {
							var want, scale float64
							for k := range sh.cols {
								p := float64(x[i*sh.cols+k]) * c.ref(j*sh.cols+k)
								want += p
								scale += math.Abs(p)
							}
							near(t, c.name, out[i*sh.rows+j], want, scale, 2e-6)
						}
					}
				}
			}
		}
	})
}

func TestMatMulBadMatrix(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("a matrix without storage did not panic")
		}
	}()
	MatMul(make([]float32, 4), make([]float32, 4), 1, &Matrix{Rows: 2, Cols: 2, F32: make([]float32, 3)}, 1)
}

// DotRows and AddWeightedRows against float64 references, for head sizes on and off the
// assembly's multiples of 8 and 32, both giving the same bits whether the rows come in one
// run or one at a time (the paged cache hands them over one by one).
func TestRowKernels(t *testing.T) {
	eachSet(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(11, 12))
		for _, d := range []int{8, 12, 32, 40, 64, 72, 128} {
			for _, n := range []int{1, 3, 17} {
				q, m, w := randF32(r, d), randF32(r, n*d), randF32(r, n)
				out := make([]float32, n)
				DotRows(out, q, m)
				for j := range n {
					var want, scale float64
					for i := range d {
						want += float64(q[i]) * float64(m[j*d+i])
						scale += math.Abs(float64(q[i]) * float64(m[j*d+i]))
					}
					near(t, "DotRows", out[j], want, scale, 1e-6)
				}
				acc := randF32(r, d)
				init := append([]float32(nil), acc...)
				split := append([]float32(nil), acc...)
				AddWeightedRows(acc, w, m)
				for j := range n {
					AddWeightedRows(split, w[j:j+1], m[j*d:(j+1)*d])
				}
				for i := range d {
					want, scale := float64(init[i]), math.Abs(float64(init[i]))
					for j := range n {
						want += float64(w[j]) * float64(m[j*d+i])
						scale += math.Abs(float64(w[j]) * float64(m[j*d+i]))
					}
					near(t, "AddWeightedRows", acc[i], want, scale, 1e-6)
					if i == 0 {
						one := make([]float32, 1)
						for j := range n {
							DotRows(one, q, m[j*d:(j+1)*d])
							if one[0] != out[j] {
								t.Fatalf("d=%d n=%d: DotRows of row %d alone %v, in a run %v", d, n, j, one[0], out[j])
							}
						}
					}
					if acc[i] != split[i] {
						t.Fatalf("d=%d n=%d: one run %v, row by row %v", d, n, acc[i], split[i])
					}
				}
			}
		}
	})
}

// ExpSub is within a few ulps of math.Exp over softmax's range (down to the clamp), and
// returns the sum of what it wrote.
func TestExpSub(t *testing.T) {
	eachSet(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(13, 14))
		for _, n := range []int{0, 1, 8, 13, 64, 1000} {
			x := make([]float32, n)
			for i := range x {
				x[i] = float32(-r.Float64() * 90) // [-90, 0]
			}
			if n > 2 {
				x[0], x[1] = 0, -1e-7
			}
			m := float32(0.5)
			in := append([]float32(nil), x...)
			sum := ExpSub(x, m)
			var want float64
			for i, v := range in {
				e := math.Exp(float64(v - m))
				want += float64(x[i])
				if e > 1e-37 && math.Abs(float64(x[i])-e) > 4e-7*e {
					t.Fatalf("exp(%v) = %v, want %v", v-m, x[i], e)
				}
				if e <= 1e-37 && x[i] > 2e-37 {
					t.Fatalf("exp(%v) = %v, want about 0", v-m, x[i])
				}
			}
			near(t, "ExpSub sum", sum, want, want, 1e-6)
		}
	})
}

// MatMulRoundX with bf16 weights computes the product of x rounded to bf16 (on bf16
// dot-product instructions where the CPU has them, else exactly MatMul), over odd inner
// dimensions, several chunks and cut tiles.
func TestMatMulRoundX(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	for _, sh := range []struct{ n, rows, cols int }{{4, 33, 7}, {13, 70, 301}, {25, 40, 1100}, {2, 5, 64}} {
		x := randF32(r, sh.n*sh.cols)
		w := Matrix{Rows: sh.rows, Cols: sh.cols, BF16: randBF16(r, sh.rows*sh.cols)}
		got := randF32(r, sh.n*sh.rows)
		MatMulRoundX(got, x, sh.n, &w, 3)
		round := HasBF16Dot() && sh.n >= gemvMinRows
		if !round {
			want := make([]float32, len(got))
			MatMul(want, x, sh.n, &w, 3)
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("%v: without bf16 dot products MatMulRoundX differs from MatMul", sh)
				}
			}
			continue
		}
		for i := range sh.n {
			for j := range sh.rows {
				var want, scale float64
				for k := range sh.cols {
					p := float64(bf16(toBF16(x[i*sh.cols+k]))) * float64(bf16(w.BF16[j*sh.cols+k]))
					want += p
					scale += math.Abs(p)
				}
				near(t, "MatMulRoundX", got[i*sh.rows+j], want, scale, 2e-6)
			}
		}
	}
	if got := toBF16(1 + 1.0/256 + 1.0/512); bf16(got) != 1+2.0/256 { // a tie rounds to even
		t.Fatalf("toBF16 tie: %v", bf16(got))
	}
}
