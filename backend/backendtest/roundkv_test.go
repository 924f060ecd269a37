package backendtest_test

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/lukv/lukv/backend/backendtest"
	"github.com/lukv/lukv/backend/cpu"
)

func TestRoundBF16(t *testing.T) {
	one := func(x float64) float32 { return float32(1 + x) }
	in := []float32{1, one(0x1p-8), one(3 * 0x1p-8), one(0x1p-8 + 0x1p-20), -2.5, 0}
	want := []float32{1, 1, one(0x1p-6), one(0x1p-7), -2.5, 0} // ties to even; above a tie rounds up
	if got := backendtest.RoundBF16(in); !slices.Equal(got, want) {
		t.Errorf("RoundBF16(%v) = %v, want %v", in, got, want)
	}
}

// TestRoundedKV: without jitter its attention is the CPU's over bf16-rounded keys and
// values, exactly; with jitter of up to a quarter of a bf16 step (2^14 float32 ulps) each
// key and value rounds to the same or a neighbouring bf16, so the output moves, by no
// more than bf16 accuracy.
func TestRoundedKV(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	n, heads, kvHeads, hd := 40, 4, 2, 16
	randn := func(k int) []float32 {
		x := make([]float32, k)
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		return x
	}
	q, k, v := randn(n*heads*hd), randn(n*kvHeads*hd), randn(n*kvHeads*hd)
	scale := float32(1 / math.Sqrt(float64(hd)))
	c := cpu.New()
	run := func(rk backendtest.RoundedKV, k, v []float32) []float32 {
		out := c.Alloc(n, heads*hd)
		rk.Attention(out, backendtest.Upload(t, c, q, n, heads*hd), backendtest.Upload(t, c, k, n, kvHeads*hd),
			backendtest.Upload(t, c, v, n, kvHeads*hd), c.NewKVCache(1, kvHeads, hd, n), 0, scale)
		return c.Read(out)
	}
	plain := func(k, v []float32) []float32 {
		out := c.Alloc(n, heads*hd)
		c.Attention(out, backendtest.Upload(t, c, q, n, heads*hd), backendtest.Upload(t, c, k, n, kvHeads*hd),
			backendtest.Upload(t, c, v, n, kvHeads*hd), c.NewKVCache(1, kvHeads, hd, n), 0, scale)
		return c.Read(out)
	}
	rounded := run(backendtest.RoundedKV{Backend: c}, k, v)
	if want := plain(backendtest.RoundBF16(k), backendtest.RoundBF16(v)); !slices.Equal(rounded, want) {
		t.Errorf("RoundedKV differs from attention over pre-rounded keys and values (rel. error %.3g)", backendtest.RelErr(rounded, want))
	}
	if e := backendtest.RelErr(rounded, plain(k, v)); e == 0 {
		t.Error("RoundedKV gave the unrounded attention: it did not round")
	}
	jittered := run(backendtest.RoundedKV{Backend: c, JitterULPs: 1 << 14, Rand: rand.New(rand.NewPCG(5, 6))}, k, v)
	if e := backendtest.RelErr(jittered, rounded); e == 0 || e > 1.0/128 {
		t.Errorf("jitter of 2^14 ulps moved the output by %.3g, want more than 0 and at most 2^-7", e)
	}
}
