//go:build cuda

package cuda

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"gorgonia.org/cu"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/backend/backendtest"
	"github.com/lukv/lukv/backend/cpu"
	"github.com/lukv/lukv/generate"
	"github.com/lukv/lukv/model"
)

// Tolerances of the tensor-core matmul (relative: max|got-want| / max|want|).
const (
	// tcRoundedTol: against the float64 product of x rounded to bf16 (what the tensor
	// cores multiply, exactly: bf16 x bf16 products are exact in float32), only the
	// float32 accumulation differs, ~1e-6 here; tensor cores may truncate partial sums
	// instead of rounding them, hence more room than f32Tol. A matmul that skipped the
	// rounding lands near 1e-3 and fails this check.
	tcRoundedTol = 2e-4
	// tcExactTol: against the product of the unrounded x. Rounding moves every x by at
	// most 2^-9 relative; with random signs the output error is ~2^-9/sqrt(3) of the
	// output's scale (measured: ~1e-3). The bound is 4 * 2^-9; a transposed or
	// misaligned operand gives errors of order 1.
	tcExactTol = 4.0 / 512
	// tcModelTol: the default model's prompt logits, every matmul of the prefill rounding
	// its activations to bf16 (8 layers). A CPU simulation of that rounding gave 5.5e-3.
	tcModelTol = 2e-2
)

// tcBackend is a backend with TensorCores on (every launch checked).
func tcBackend(t testing.TB) *Backend { return backendWith(t, Options{TensorCores: true, Sync: true}) }

// refMatMulPar is refMatMul (x @ w^T in float64) over all CPU cores.
func refMatMulPar(x, w []float32, n, in, out int) []float32 {
	res := make([]float32, n*out)
	var wg sync.WaitGroup
	workers := runtime.NumCPU()
	for p := 0; p < workers; p++ {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			for i := p; i < n; i += workers {
				copy(res[i*out:(i+1)*out], refMatMul(x[i*in:(i+1)*in], w, 1, in, out))
			}
		}(p)
	}
	wg.Wait()
	return res
}

// poisoned is a float32 tensor [rows, cols] filled with NaN: a value the matmul does
// not write stays NaN, and backendtest.Check rejects it.
func poisoned(b *Backend, rows, cols int) *Tensor {
	out := b.Alloc(rows, cols).(*Tensor)
	defer b.enter()()
	if err := cu.MemsetD32Async(out.ptr, 0x7fc00000, count(out), cu.NoStream); err != nil {
		panic(err)
	}
	return out
}

// TestTensorCoreMatMul: with TensorCores, bf16 weights and more than gemvMaxRows rows,
// MatMul runs cuBLAS (one GEMM per call) and matches the product of bf16-rounded x to
// float32 accuracy and the exact product to bf16 accuracy, at aligned, odd and large
// shapes (the scratch buffer shrinking and growing between them).
func TestTensorCoreMatMul(t *testing.T) {
	b := tcBackend(t)
	if !strings.Contains(b.MatMulPath(), "cuBLAS") {
		t.Fatalf("tensor cores requested, but MatMulPath is %q", b.MatMulPath())
	}
	r := rand.New(rand.NewPCG(21, 21))
	for _, s := range [][3]int{{1000, 4104, 1000}, {64, 4104, 1000}, {9, 64, 48}, {9, 33, 17}, {130, 200, 4104}, {1000, 256, 4096}} {
		n, in, nout := s[0], s[1], s[2]
		x := randn(r, n*in)
		w := roundTo(randn(r, nout*in), bf16)
		wt := backendtest.Upload(t, b, w, nout, in)
		if got := wt.(*Tensor).dt; got != bf16 {
			t.Fatalf("weights stored as %v, want bf16", got)
		}
		res := poisoned(b, n, nout)
		calls := b.blas.calls
		b.MatMul(res, backendtest.Upload(t, b, x, n, in), wt)
		if b.blas.calls != calls+1 {
			t.Fatalf("MatMul %v ran %d tensor-core GEMMs, want 1 (path: %s)", s, b.blas.calls-calls, b.MatMulPath())
		}
		got := b.Read(res)
		backendtest.Check(t, fmt.Sprintf("tensor-core MatMul %v vs bf16-rounded x", s), got, refMatMulPar(roundTo(x, bf16), w, n, in, nout), tcRoundedTol)
		backendtest.Check(t, fmt.Sprintf("tensor-core MatMul %v vs exact", s), got, refMatMulPar(x, w, n, in, nout), tcExactTol)
	}
}

// TestTensorCoreOtherPaths: with TensorCores on, decode-sized products (n <= 8) and
// float16 / float32 weights keep the float32 kernels: no GEMM, float32 accuracy against
// the unrounded x.
func TestTensorCoreOtherPaths(t *testing.T) {
	b := tcBackend(t)
	r := rand.New(rand.NewPCG(22, 22))
	for _, c := range []struct {
		dt        dtype
		n, in, nn int
	}{{bf16, 8, 256, 300}, {bf16, 1, 4104, 100}, {f16, 64, 256, 130}, {f32, 40, 72, 50}} {
		x := randn(r, c.n*c.in)
		w := randn(r, c.nn*c.in)
		if c.dt != f32 {
			w = roundTo(w, c.dt)
		}
		wt := backendtest.Upload(t, b, w, c.nn, c.in)
		if got := wt.(*Tensor).dt; got != c.dt {
			t.Fatalf("weights stored as %v, want %v", got, c.dt)
		}
		res := poisoned(b, c.n, c.nn)
		calls := b.blas.calls
		b.MatMul(res, backendtest.Upload(t, b, x, c.n, c.in), wt)
		name := fmt.Sprintf("MatMul %v [%d, %d] x [%d, %d]", c.dt, c.n, c.in, c.nn, c.in)
		if b.blas.calls != calls {
			t.Errorf("%s ran on the tensor cores", name)
		}
		backendtest.Check(t, name, b.Read(res), refMatMul(x, w, c.n, c.in, c.nn), f32Tol)
	}
}

// TestTensorCoreFallback: when cuBLAS cannot be loaded (LUKV_CUBLAS names a missing
// file), MatMul falls back to the tiled float32 kernel, exactly, and MatMulPath says
// why, naming what was tried. Without TensorCores it says they are off.
func TestTensorCoreFallback(t *testing.T) {
	testBackend(t)
	bogus := filepath.Join(t.TempDir(), "libcublas.so.99")
	t.Setenv("LUKV_CUBLAS", bogus)
	b, err := New(Options{TensorCores: true, Sync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	r := rand.New(rand.NewPCG(23, 23))
	n, in, nout := 64, 256, 100
	x, w := randn(r, n*in), roundTo(randn(r, nout*in), bf16)
	res := poisoned(b, n, nout)
	b.MatMul(res, backendtest.Upload(t, b, x, n, in), backendtest.Upload(t, b, w, nout, in))
	if b.blas.calls != 0 {
		t.Errorf("%d tensor-core GEMMs without cuBLAS", b.blas.calls)
	}
	backendtest.Check(t, "fallback MatMul", b.Read(res), refMatMul(x, w, n, in, nout), f32Tol)
	path := b.MatMulPath()
	for _, want := range []string{"tiled float32", "unavailable", "LUKV_CUBLAS", bogus} {
		if !strings.Contains(path, want) {
			t.Errorf("MatMulPath %q lacks %q", path, want)
		}
	}
	if p := testBackend(t).MatMulPath(); !strings.Contains(p, "TensorCores off") {
		t.Errorf("MatMulPath without tensor cores: %q", p)
	}
}

// TestConvertBF16Kernel: f32_to_bf16 rounds exactly as the host's toBF16Rounded (ties to
// even, overflow to infinity, NaN kept) on the vector path and, from an unaligned
// start, on the scalar path, over a count that is not a multiple of 4.
func TestConvertBF16Kernel(t *testing.T) {
	b := tcBackend(t)
	r := rand.New(rand.NewPCG(24, 24))
	vals := []float32{0, float32(math.Copysign(0, -1)), 1, 1 + 1.0/256, 1 + 3.0/256, 1 + 1.0/128, -2, math.MaxFloat32,
		3.3961776e38, float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), math.Float32frombits(0xffc00001),
		math.Float32frombits(0x7f800001), 1e-45, -1e-40, 65504, 1.0 / 3}
	for len(vals) < 1027 {
		vals = append(vals, float32(r.NormFloat64()*math.Pow(10, float64(r.IntN(20)-10))))
	}
	want := toBF16Rounded(vals)
	defer b.enter()()
	var in, out devBuf
	defer in.free()
	defer out.free()
	if err := in.uploadFloat32(vals, "test input"); err != nil {
		t.Fatal(err)
	}
	if err := out.ensure(int64(len(vals))*2, "test output"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		skip int // elements skipped at the start: 1 makes both pointers unaligned
	}{{"aligned", 0}, {"unaligned", 1}} {
		cnt := int64(len(vals) - c.skip)
		if err := cu.MemsetD8(out.ptr, 0xAB, out.size); err != nil {
			t.Fatal(err)
		}
		b.launch("f32_to_bf16", gridFor(cnt/4+1, b.sms), dim3{256, 1, 1}, 0, out.ptr+cu.DevicePtr(2*c.skip), in.ptr+cu.DevicePtr(4*c.skip), cnt)
		got := make([]uint16, len(vals))
		if err := cu.MemcpyDtoH(unsafe.Pointer(&got[0]), out.ptr, int64(len(got))*2); err != nil {
			t.Fatal(err)
		}
		for i := c.skip; i < len(vals); i++ {
			if got[i] != want[i] {
				t.Errorf("%s: bf16(%g = %#08x) = %#04x, want %#04x", c.name, vals[i], math.Float32bits(vals[i]), got[i], want[i])
			}
		}
	}
}

// TestTensorCoresDefaultModel: the default model (models/lukv-tiny, bf16) with TensorCores
// prefills a 31-token prompt on the tensor cores, giving logits within tcModelTol of the
// CPU's, and then the same 16 greedy tokens (decode steps are one row: exact float32
// kernels, over a cache filled from the bf16 prefill). On the CPU, the smallest gap
// between the top two logits over these steps is 0.11, about seven times the largest
// logit change (0.016) that a CPU simulation of the bf16 prefill caused in them.
func TestTensorCoresDefaultModel(t *testing.T) {
	b := tcBackend(t)
	tok := tinyTokenizer(t)
	ids := tok.Encode("The old lighthouse keeper climbed the stairs every evening to light the lamp. One night a storm came in from the sea, and the ships", true)
	if len(ids) <= gemvMaxRows {
		t.Fatalf("prompt of %d tokens is too short for the tensor-core path", len(ids))
	}
	gm := loadTiny(t, b)
	cm := loadTiny(t, cpu.New())
	if got := gm.Layers[0].Wq.(*Tensor).DType(); got != "bfloat16" {
		t.Fatalf("q_proj stored as %s, want bfloat16", got)
	}
	const steps = 16
	gc, cc := gm.NewCache(steps), cm.NewCache(steps)
	calls := b.blas.calls
	got, err := gm.Forward(context.Background(), ids, 0, gc, model.ForwardOptions{AllLogits: true})
	if err != nil {
		t.Fatal(err)
	}
	if b.blas.calls == calls {
		t.Fatalf("the prefill ran no tensor-core GEMM (path: %s)", b.MatMulPath())
	}
	ref, err := cm.Forward(context.Background(), ids, 0, cc, model.ForwardOptions{AllLogits: true})
	if err != nil {
		t.Fatal(err)
	}
	backendtest.Check(t, "prompt logits with tensor cores vs CPU", got, ref, tcModelTol)
	if e := backendtest.RelErr(got, ref); e == 0 {
		t.Error("prompt logits equal the CPU's exactly: the activations were not rounded to bf16")
	}
	vocab := gm.Config.VocabSize
	n := len(ids)
	greedy := func(m *model.Model, cache backend.KVCache, logits []float32) []int {
		next := generate.Argmax(logits[(n-1)*vocab : n*vocab])
		var out []int
		for i := 0; i < steps; i++ {
			out = append(out, next)
			l, err := m.Forward(context.Background(), []int{next}, n+i, cache, model.ForwardOptions{})
			if err != nil {
				t.Fatal(err)
			}
			next = generate.Argmax(l)
		}
		return out
	}
	gg, cg := greedy(gm, gc, got), greedy(cm, cc, ref)
	if fmt.Sprint(gg) != fmt.Sprint(cg) {
		t.Errorf("greedy tokens with tensor cores differ from the CPU's\n got %v\nwant %v", gg, cg)
	}
}
