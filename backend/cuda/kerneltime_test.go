//go:build cuda

package cuda

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/lukv/lukv/backend/backendtest"
)

// TestKernelTimes: with Options.KernelTimes, KernelTimes names every kernel launched
// since the previous call (held-back launches included: it flushes them), counts them,
// gives each a positive GPU time, and starts a new period; without the option it fails.
func TestKernelTimes(t *testing.T) {
	if _, err := testBackend(t).KernelTimes(); err == nil || !strings.Contains(err.Error(), "off") {
		t.Fatalf("KernelTimes without Options.KernelTimes: %v, want an error saying it is off", err)
	}
	b := backendWith(t, Options{KernelTimes: true, TensorCores: true})
	if _, err := b.KernelTimes(); err != nil { // drop whatever came before
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(9, 9))
	const in, out = 512, 384
	w := backendtest.Upload(t, b, roundTo(randn(r, out*in), bf16), out, in)
	norm := backendtest.Upload(t, b, randn(r, in), 1, in)
	x1, x64 := backendtest.Upload(t, b, randn(r, in), 1, in), backendtest.Upload(t, b, randn(r, 64*in), 64, in)
	y1, y64 := b.Alloc(1, out), b.Alloc(64, out)
	xn := b.Alloc(1, in)
	b.RMSNorm(xn, x1, norm, 1e-5)
	b.MatMul(y1, xn, w)   // decode GEMV, held back until the next operation
	b.MatMul(y64, x64, w) // prefill: bf16 conversion + cuBLAS
	b.MatMul(y64, x64, w)
	b.Add(y1, y1)
	stats, err := b.KernelTimes()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]KernelTime{}
	for _, s := range stats {
		got[s.Name] = s
		if !(s.Seconds > 0 && s.Seconds < 1) {
			t.Errorf("%s: %d calls, %g s: want a positive time under a second", s.Name, s.Calls, s.Seconds)
		}
	}
	for name, calls := range map[string]int{"rmsnorm": 1, "gemv_bf16_n1": 1, "f32_to_bf16": 2, "cublasGemmEx": 2, "add_inplace": 1} {
		if got[name].Calls != calls {
			t.Errorf("%s: %d calls in the kernel times, want %d (times: %+v)", name, got[name].Calls, calls, stats)
		}
	}
	for i := 1; i < len(stats); i++ {
		if stats[i].Seconds > stats[i-1].Seconds {
			t.Errorf("kernel times not sorted by time: %+v", stats)
		}
	}
	if again, err := b.KernelTimes(); err != nil || len(again) != 0 {
		t.Errorf("second KernelTimes: %+v, %v; want a new, empty period", again, err)
	}
}
