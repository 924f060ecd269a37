//go:build cuda

package cuda

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/backend/backendtest"
	"github.com/lukv/lukv/backend/cpu"
	"github.com/lukv/lukv/generate"
	"github.com/lukv/lukv/model"
	"github.com/lukv/lukv/quant"
)

// Tests of int8 weights (int8.go, kernels/matmul.cu gemv_i8_* and dequant_i8_*): every
// path against the float64 product with quant.Dequantize's weights, and the CPU backend
// given the same dequantized weights.

// int8Matrix is a random [rows, cols] matrix quantized, every seventh group all zero
// (scale 0) and every third scaled up 8x, so that per-group scales differ.
func int8Matrix(t testing.TB, r *rand.Rand, rows, cols int) *quant.Int8 {
	w := randn(r, rows*cols)
	for g := 0; g < len(w)/quant.GroupSize; g += 7 {
		clear(w[g*quant.GroupSize : (g+1)*quant.GroupSize])
	}
	for g := 1; g < len(w)/quant.GroupSize; g += 3 {
		for i := g * quant.GroupSize; i < (g+1)*quant.GroupSize; i++ {
			w[i] *= 8
		}
	}
	m, err := quant.Quantize(w, rows, cols)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func uploadInt8(t testing.TB, b *Backend, m *quant.Int8) backend.Tensor {
	w, err := b.WeightInt8(m)
	if err != nil {
		t.Fatal(err)
	}
	if w.(*Int8Tensor).DType() != "int8" || w.Rows() != m.Rows || w.Cols() != m.Cols {
		t.Fatalf("int8 weight [%d, %d] uploaded as %s [%d, %d]", m.Rows, m.Cols, w.(*Int8Tensor).DType(), w.Rows(), w.Cols())
	}
	return w
}

// TestInt8MatMul: decode GEMV (1..8 rows: kernels for 1, 2, 4, 8), the generic path
// for more rows (dequantized to float32, the tiled kernel), at inner sizes from one
// group (one 16-byte chunk pair) to 14336 (several chunks per thread, a partial last
// pass) and output counts that are and are not multiples of the 4 rows a block takes.
// Outputs start as NaN.
func TestInt8MatMul(t *testing.T) {
	b := testBackend(t)
	r := rand.New(rand.NewPCG(80, 80))
	shapes := [][2]int{{32, 3}, {64, 1}, {96, 5}, {4096, 1000}, {4128, 13}, {14336, 6}, {8224, 7}}
	for _, n := range []int{1, 2, 3, 4, 5, 7, 8, 9, 33} {
		for si, s := range shapes {
			if (n+si)%3 != 0 && s[0] >= 4096 { // the big ones for a third of the row counts
				continue
			}
			in, nout := s[0], s[1]
			m := int8Matrix(t, r, nout, in)
			x := randn(r, n*in)
			res := poisoned(b, n, nout)
			b.MatMul(res, backendtest.Upload(t, b, x, n, in), uploadInt8(t, b, m))
			backendtest.Check(t, fmt.Sprintf("int8 MatMul n=%d in=%d out=%d", n, in, nout), b.Read(res), refMatMul(x, m.Dequantize(), n, in, nout), f32Tol)
		}
	}
}

// TestInt8AgainstCPU: the same product on the CPU backend from the dequantized weights
// (what the CPU's int8 path computes, by quant's definition).
func TestInt8AgainstCPU(t *testing.T) {
	b := testBackend(t)
	c := cpu.New()
	r := rand.New(rand.NewPCG(81, 81))
	for _, n := range []int{1, 4, 17} {
		const in, nout = 1024, 300
		m := int8Matrix(t, r, nout, in)
		x := randn(r, n*in)
		cw, err := c.Weight(m.Dequantize(), nout, in)
		if err != nil {
			t.Fatal(err)
		}
		cx, _ := c.Weight(append([]float32(nil), x...), n, in)
		cres := c.Alloc(n, nout)
		c.MatMul(cres, cx, cw)
		res := poisoned(b, n, nout)
		b.MatMul(res, backendtest.Upload(t, b, x, n, in), uploadInt8(t, b, m))
		backendtest.Check(t, fmt.Sprintf("int8 MatMul n=%d vs CPU backend", n), b.Read(res), c.Read(cres), f32Tol)
	}
}

// TestInt8TensorCores: with TensorCores, prefill-sized products widen the int8 matrix to
// bf16 and run one cuBLAS GEMM; the result is the product of bf16-rounded x and
// bf16-rounded dequantized weights to float32 accuracy. Decode sizes stay on the GEMV
// (no GEMM, float32 accuracy).
func TestInt8TensorCores(t *testing.T) {
	b := tcBackend(t)
	r := rand.New(rand.NewPCG(82, 82))
	for _, s := range [][3]int{{64, 4096, 1000}, {9, 64, 48}, {130, 224, 4104}, {3, 512, 200}} {
		n, in, nout := s[0], s[1], s[2]
		m := int8Matrix(t, r, nout, in)
		x := randn(r, n*in)
		res := poisoned(b, n, nout)
		calls := b.blas.calls
		b.MatMul(res, backendtest.Upload(t, b, x, n, in), uploadInt8(t, b, m))
		got := b.Read(res)
		w := m.Dequantize()
		if n <= gemvMaxRows {
			if b.blas.calls != calls {
				t.Fatalf("int8 MatMul %v ran a GEMM", s)
			}
			backendtest.Check(t, fmt.Sprintf("int8 MatMul %v (GEMV)", s), got, refMatMul(x, w, n, in, nout), f32Tol)
			continue
		}
		if b.blas.calls != calls+1 {
			t.Fatalf("int8 MatMul %v ran %d tensor-core GEMMs, want 1", s, b.blas.calls-calls)
		}
		backendtest.Check(t, fmt.Sprintf("int8 tensor-core MatMul %v vs bf16-rounded operands", s), got,
			refMatMulPar(roundTo(x, bf16), roundTo(w, bf16), n, in, nout), tcRoundedTol)
	}
}

// TestInt8Grouping: int8 decode matmuls sharing x are held back and launched together,
// up to three (q, k, v), and never grouped with a bf16 matmul on the same x.
func TestInt8Grouping(t *testing.T) {
	b := testBackend(t)
	r := rand.New(rand.NewPCG(83, 83))
	const n, in = 3, 512
	x := randn(r, n*in)
	xt := backendtest.Upload(t, b, x, n, in)
	outs := []int{512, 128, 96, 64}
	ms := make([]*quant.Int8, len(outs))
	res := make([]*Tensor, len(outs)+1)
	ws := make([]backend.Tensor, len(outs))
	// Outputs and weights first: making them (NaN fill, upload) launches whatever is held back.
	for i, o := range outs {
		ms[i] = int8Matrix(t, r, o, in)
		res[i] = poisoned(b, n, o)
		ws[i] = uploadInt8(t, b, ms[i])
	}
	wb := roundTo(randn(r, 40*in), bf16)
	res[len(outs)] = poisoned(b, n, 40)
	wbt := backendtest.Upload(t, b, wb, 40, in)
	for i := range outs {
		b.MatMul(res[i], xt, ws[i])
		if want := []int{1, 2, 3, 1}[i]; len(b.pend.gemv) != want {
			t.Fatalf("after int8 matmul %d: %d held back, want %d", i, len(b.pend.gemv), want)
		}
	}
	b.MatMul(res[len(outs)], xt, wbt)
	if len(b.pend.gemv) != 1 || b.pend.gemv[0].i8 {
		t.Fatalf("a bf16 matmul after an int8 one: %d held back (want the bf16 one alone)", len(b.pend.gemv))
	}
	for i := range outs {
		backendtest.Check(t, fmt.Sprintf("grouped int8 matmul %d", i), b.Read(res[i]), refMatMul(x, ms[i].Dequantize(), n, in, outs[i]), f32Tol)
	}
	backendtest.Check(t, "bf16 matmul after int8", b.Read(res[len(outs)]), refMatMul(x, wb, n, in, 40), f32Tol)
}

// TestWeightInt8Refused: shapes that do not fit the format are errors, not panics.
func TestWeightInt8Refused(t *testing.T) {
	b := testBackend(t)
	for _, m := range []*quant.Int8{
		nil,
		{Rows: 2, Cols: 48, Q: make([]int8, 96), Scales: make([]float32, 3)},
		{Rows: 2, Cols: 64, Q: make([]int8, 100), Scales: make([]float32, 4)},
		{Rows: 2, Cols: 64, Q: make([]int8, 128), Scales: make([]float32, 3)},
	} {
		if _, err := b.WeightInt8(m); err == nil {
			t.Errorf("WeightInt8(%+v) accepted", m)
		}
	}
}

// BenchmarkMatMulDecode8BInt8: the int8 decode GEMV on the 8B shapes. GB/s counts the
// int8 values, their scales, x and the output once.
func BenchmarkMatMulDecode8BInt8(bm *testing.B) {
	for _, s := range []struct {
		name string
		in   int
		outs []int
	}{
		{"4096x4096", 4096, []int{4096}}, {"4096x1024", 4096, []int{1024}}, {"4096x14336", 4096, []int{14336}},
		{"14336x4096", 14336, []int{4096}}, {"4096x128256", 4096, []int{128256}},
		{"qkv", 4096, []int{4096, 1024, 1024}}, {"gate+up", 4096, []int{14336, 14336}},
	} {
		for _, n := range []int{1, 8} {
			bm.Run(fmt.Sprintf("%s/n=%d", s.name, n), func(bm *testing.B) { benchDecodeGEMVInt8(bm, n, s.in, s.outs) })
		}
	}
}

var benchInt8Weights = map[[2]int]backend.Tensor{}

// benchInt8Weight is a random int8 [out, in] matrix with random scales, made directly in
// the format (quantizing 525M float32 values would take minutes).
func benchInt8Weight(bm *testing.B, b *Backend, out, in int) backend.Tensor {
	if w, ok := benchInt8Weights[[2]int{out, in}]; ok {
		return w
	}
	r := rand.New(rand.NewPCG(uint64(out), uint64(in)+1))
	m := &quant.Int8{Rows: out, Cols: in, Q: make([]int8, out*in), Scales: make([]float32, out*in/quant.GroupSize)}
	for i := range m.Q {
		m.Q[i] = int8(r.IntN(255) - 127)
	}
	for i := range m.Scales {
		m.Scales[i] = float32(r.Float64()+0.5) / 1024
	}
	w, err := b.WeightInt8(m)
	if err != nil {
		bm.Fatal(err)
	}
	benchInt8Weights[[2]int{out, in}] = w
	return w
}

func benchDecodeGEMVInt8(bm *testing.B, n, in int, outs []int) {
	b := benchBackend(bm)
	r := rand.New(rand.NewPCG(45, 45))
	xt, _ := b.Weight(randn(r, n*in), n, in)
	var wts, res []backend.Tensor
	bytes := float64(n * in * 4)
	for _, o := range outs {
		wts, res = append(wts, benchInt8Weight(bm, b, o, in)), append(res, b.Alloc(n, o))
		bytes += float64(o*in) * (1 + 4.0/quant.GroupSize)
		bytes += float64(n * o * 4)
	}
	sec := gpuSeconds(bm, b, func() {
		for i := range wts {
			b.MatMul(res[i], xt, wts[i])
		}
	})
	bm.ReportMetric(bytes/sec/1e9, "GB/s")
	bm.ReportMetric(bytes/4.3e12*1e6, "floor-us")
}

// TestInt8Model: the default model with every matrix (and the LM head) quantized to int8
// on the GPU decodes like the CPU backend given the same dequantized weights: prompt
// logits (the prefill's dequantized float32 path) and 8 decode steps (gemv_i8 with the
// held-back grouping and the Add and SwiGLU epilogues), same tokens.
func TestInt8Model(t *testing.T) {
	b := testBackend(t)
	c := cpu.New()
	gm, cm := loadTiny(t, b), loadTiny(t, c)
	quantize := func(gw *backend.Tensor, cw *backend.Tensor) {
		t.Helper()
		w := b.Read(*gw)
		m, err := quant.Quantize(w, (*gw).Rows(), (*gw).Cols())
		if err != nil {
			t.Fatal(err)
		}
		*gw = uploadInt8(t, b, m)
		if *cw, err = c.Weight(m.Dequantize(), m.Rows, m.Cols); err != nil {
			t.Fatal(err)
		}
	}
	for i := range gm.Layers {
		gl, cl := &gm.Layers[i], &cm.Layers[i]
		for _, p := range [][2]*backend.Tensor{{&gl.Wq, &cl.Wq}, {&gl.Wk, &cl.Wk}, {&gl.Wv, &cl.Wv}, {&gl.Wo, &cl.Wo},
			{&gl.Wgate, &cl.Wgate}, {&gl.Wup, &cl.Wup}, {&gl.Wdown, &cl.Wdown}} {
			quantize(p[0], p[1])
		}
	}
	quantize(&gm.LMHead, &cm.LMHead)
	ids := []int{1, 450, 2030, 17, 3, 99, 1200, 5, 77, 4000, 12} // 11 rows: the prefill path
	gc, cc := gm.NewCache(len(ids)+8), cm.NewCache(len(ids)+8)
	gl, err := gm.Forward(context.Background(), ids, 0, gc, model.ForwardOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := cm.Forward(context.Background(), ids, 0, cc, model.ForwardOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const tol = 1e-3 // float32 on both sides, 8 layers; bf16 rounding anywhere gives ~1e-2
	backendtest.Check(t, "int8 prompt logits", gl, cl, tol)
	tok := generate.Argmax(cl)
	for i := 0; i < 8; i++ {
		if gl, err = gm.Forward(context.Background(), []int{tok}, len(ids)+i, gc, model.ForwardOptions{}); err != nil {
			t.Fatal(err)
		}
		if cl, err = cm.Forward(context.Background(), []int{tok}, len(ids)+i, cc, model.ForwardOptions{}); err != nil {
			t.Fatal(err)
		}
		backendtest.Check(t, fmt.Sprintf("int8 step %d logits", i), gl, cl, tol)
		if generate.Argmax(gl) != generate.Argmax(cl) {
			t.Fatalf("step %d: token %d on the GPU, %d on the CPU", i, generate.Argmax(gl), generate.Argmax(cl))
		}
		tok = generate.Argmax(cl)
	}
}
