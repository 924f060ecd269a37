//go:build cuda

package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/backend/backendtest"
)

// Tests of the GEMV epilogues (fusion.go fuseAdd, fuseSwiGLU; kernels/matmul.cu
// GemvOut): the residual Add and SwiGLU taken into the held-back matmuls' launch, for
// bf16 and int8 weights, 1 to 8 rows, output counts that are and are not multiples of
// the rows a block takes; and the cases that must not fuse.

// epilogueWeight is a random [out, in] weight, bf16 or int8, and the float32 matrix it
// stands for.
func epilogueWeight(t *testing.T, b *Backend, r *rand.Rand, i8 bool, out, in int) (backend.Tensor, []float32) {
	if i8 {
		m := int8Matrix(t, r, out, in)
		return uploadInt8(t, b, m), m.Dequantize()
	}
	w := roundTo(randn(r, out*in), bf16)
	return backendtest.Upload(t, b, w, out, in), w
}

func silu(g float32) float32 { return float32(float64(g) / (1 + math.Exp(-float64(g)))) }

func TestGEMVEpilogueAdd(t *testing.T) {
	b := testBackend(t)
	r := rand.New(rand.NewPCG(90, 90))
	for _, i8 := range []bool{false, true} {
		for _, n := range []int{1, 3, 8} {
			for _, s := range [][2]int{{256, 1000}, {4096, 13}, {64, 2}} {
				in, nout := s[0], s[1]
				name := fmt.Sprintf("int8=%v n=%d in=%d out=%d", i8, n, in, nout)
				wt, w := epilogueWeight(t, b, r, i8, nout, in)
				x := randn(r, n*in)
				res0 := randn(r, n*nout)
				xt := backendtest.Upload(t, b, x, n, in)
				rt := backendtest.Upload(t, b, res0, n, nout)
				y := poisoned(b, n, nout)
				b.MatMul(y, xt, wt)
				b.Add(rt, y)
				if !b.pend.epi.set() || b.pend.epi.res != rt.(*Tensor).ptr {
					t.Fatalf("%s: Add after the matmul was not taken into its launch", name)
				}
				want := refMatMul(x, w, n, in, nout)
				sum := make([]float32, len(want))
				for i := range sum {
					sum[i] = res0[i] + want[i]
				}
				backendtest.Check(t, name+": matmul output", b.Read(y), want, f32Tol)
				backendtest.Check(t, name+": residual", b.Read(rt), sum, f32Tol)
			}
		}
	}
	// Add into the matmul's own input: not fused (other blocks still read it), same result.
	const n, in, nout = 1, 128, 128
	wt, w := epilogueWeight(t, b, r, false, nout, in)
	x := randn(r, n*in)
	xt := backendtest.Upload(t, b, x, n, in)
	y := poisoned(b, n, nout)
	b.MatMul(y, xt, wt)
	b.Add(xt, y)
	if b.pend.epi.set() {
		t.Fatal("Add into the matmul's input was fused")
	}
	want := refMatMul(x, w, n, in, nout)
	for i := range want {
		want[i] += x[i]
	}
	backendtest.Check(t, "Add into the matmul's input", b.Read(xt), want, f32Tol)
}

func TestGEMVEpilogueSwiGLU(t *testing.T) {
	b := testBackend(t)
	r := rand.New(rand.NewPCG(91, 91))
	for _, i8 := range []bool{false, true} {
		for _, n := range []int{1, 2, 5, 8} {
			for _, s := range [][2]int{{4096, 1001}, {512, 14}, {96, 1}} {
				for _, into := range []string{"gate", "up", "apart"} {
					in, nout := s[0], s[1]
					name := fmt.Sprintf("int8=%v n=%d in=%d out=%d into %s", i8, n, in, nout, into)
					gw, gref := epilogueWeight(t, b, r, i8, nout, in)
					uw, uref := epilogueWeight(t, b, r, i8, nout, in)
					x := randn(r, n*in)
					xt := backendtest.Upload(t, b, x, n, in)
					g, u := poisoned(b, n, nout), poisoned(b, n, nout)
					o := map[string]*Tensor{"gate": g, "up": u, "apart": poisoned(b, n, nout)}[into]
					b.MatMul(g, xt, gw)
					b.MatMul(u, xt, uw)
					b.SwiGLU(o, g, u)
					if b.pend.epi.swo != o.ptr || len(b.pend.gemv) != 2 {
						t.Fatalf("%s: SwiGLU after gate and up was not taken into their launch", name)
					}
					wg, wu := refMatMul(x, gref, n, in, nout), refMatMul(x, uref, n, in, nout)
					prod := make([]float32, len(wg))
					for i := range prod {
						prod[i] = silu(wg[i]) * wu[i]
					}
					backendtest.Check(t, name+": product", b.Read(o), prod, f32Tol)
					if into != "gate" {
						backendtest.Check(t, name+": gate", b.Read(g), wg, f32Tol)
					}
					if into != "up" {
						backendtest.Check(t, name+": up", b.Read(u), wu, f32Tol)
					}
				}
			}
		}
	}
	// A third matmul held back with them, or outputs that are not the matmuls': no fusion.
	const n, in, nout = 2, 64, 32
	x := randn(r, n*in)
	xt := backendtest.Upload(t, b, x, n, in)
	gw, gref := epilogueWeight(t, b, r, false, nout, in)
	uw, uref := epilogueWeight(t, b, r, false, nout, in)
	g, u := poisoned(b, n, nout), poisoned(b, n, nout)
	b.MatMul(g, xt, gw)
	b.MatMul(u, xt, uw)
	b.SwiGLU(u, u, g) // swapped: gate is the second matmul's output
	if b.pend.epi.set() {
		t.Fatal("SwiGLU with gate and up swapped was fused")
	}
	wg, wu := refMatMul(x, gref, n, in, nout), refMatMul(x, uref, n, in, nout)
	for i := range wu {
		wu[i] = silu(wu[i]) * wg[i]
	}
	backendtest.Check(t, "swapped SwiGLU", b.Read(u), wu, f32Tol)
}

// TestRMSNormShapes: the register-cached rows (up to 8192 aligned values) and the
// two-pass fallback (longer, or a length not a multiple of 4), in place and not.
func TestRMSNormShapes(t *testing.T) {
	b := testBackend(t)
	r := rand.New(rand.NewPCG(92, 92))
	for _, cols := range []int{1, 3, 4, 100, 1024, 4096, 4097, 8192, 8196, 14336} {
		for _, rows := range []int{1, 3} {
			for _, inPlace := range []bool{false, true} {
				x, w := randn(r, rows*cols), randn(r, cols)
				want := make([]float32, len(x))
				for i := 0; i < rows; i++ {
					ss := 0.0
					for _, v := range x[i*cols : (i+1)*cols] {
						ss += float64(v) * float64(v)
					}
					inv := 1 / math.Sqrt(ss/float64(cols)+1e-5)
					for c := range cols {
						want[i*cols+c] = float32(float64(x[i*cols+c]) * inv * float64(w[c]))
					}
				}
				xt, wt := backendtest.Upload(t, b, x, rows, cols), backendtest.Upload(t, b, w, 1, cols)
				out := xt
				if !inPlace {
					out = poisoned(b, rows, cols)
				}
				b.RMSNorm(out, xt, wt, 1e-5)
				backendtest.Check(t, fmt.Sprintf("RMSNorm [%d, %d] in place %v", rows, cols, inPlace), b.Read(out), want, f32Tol)
			}
		}
	}
}
