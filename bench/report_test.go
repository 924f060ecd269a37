package bench

import (
	"strings"
	"testing"

	"github.com/lukv/lukv/backend"
)

// TestKernelTimesTables: timed rows get a table each, per token for decode (calls
// and time divided by the timed steps), with the kernels' sum against the wall time;
// rows without kernel times get none.
func TestKernelTimesTables(t *testing.T) {
	rep := &Report{Contexts: []Context{{
		Context: 8192,
		Prefill: &Prefill{Seconds: 0.3, Kernels: []backend.KernelTime{{Name: "cublasGemmEx", Calls: 224, Seconds: 0.2}}},
		Decode: []Decode{
			{MsPerToken: 6, KernelSteps: 4, Kernels: []backend.KernelTime{
				{Name: "gemv_bf16_n1", Calls: 4 * 96, Seconds: 4 * 3.6e-3}, {Name: "rmsnorm", Calls: 4 * 65, Seconds: 4 * 0.4e-3}}},
			{Compression: 0.8, MsPerToken: 5},
		},
	}}}
	var b strings.Builder
	WriteKernelTimes(&b, rep)
	out := b.String()
	for _, want := range []string{
		"### context 8192: prefill", "Kernels: 200.000 ms of GPU time against 300.000 ms of wall time",
		"| cublasGemmEx | 224.0 | 200000.0 | 100.0% |",
		"### context 8192: decode, full cache", "Kernels: 4.000 ms/token of GPU time against 6.000 ms/token",
		"| gemv_bf16_n1 | 96.0 | 3600.0 | 90.0% |", "| rmsnorm | 65.0 | 400.0 | 10.0% |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("kernel times table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "80% evicted") {
		t.Errorf("a row without kernel times got a table:\n%s", out)
	}
	b.Reset()
	WriteKernelTimes(&b, &Report{Contexts: []Context{{Context: 64, Decode: []Decode{{MsPerToken: 1}}}}})
	if b.Len() != 0 {
		t.Errorf("no kernel times, yet output: %q", b.String())
	}
}
