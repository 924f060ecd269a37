package cpu

import (
	"math"
	"math/rand/v2"
	"testing"
)

// refWindow computes sliding-window attention directly: query row i (position p0+i)
// over keys at positions p0+i-window+1 .. p0+i of its KV head.
func refWindow(q, k, v []float32, n, total, heads, kvHeads, d, window int, scale float64) []float32 {
	out := make([]float32, n*heads*d)
	group := heads / kvHeads
	for i := 0; i < n; i++ {
		p := total - n + i
		for h := 0; h < heads; h++ {
			kvh := h / group
			lo := max(0, p-window+1)
			var w []float64
			mx := math.Inf(-1)
			for j := lo; j <= p; j++ {
				var s float64
				for x := 0; x < d; x++ {
					s += float64(q[i*heads*d+h*d+x]) * float64(k[j*kvHeads*d+kvh*d+x])
				}
				w = append(w, s*scale)
				mx = math.Max(mx, s*scale)
			}
			var sum float64
			for j := range w {
				w[j] = math.Exp(w[j] - mx)
				sum += w[j]
			}
			for x := 0; x < d; x++ {
				var acc float64
				for j := range w {
					acc += w[j] / sum * float64(v[(lo+j)*kvHeads*d+kvh*d+x])
				}
				out[i*heads*d+h*d+x] = float32(acc)
			}
		}
	}
	return out
}

func TestAttentionWindow(t *testing.T) {
	const T, prefill, heads, kvHeads, d, window = 20, 13, 4, 2, 8, 5
	r := rand.New(rand.NewPCG(1, 2))
	randn := func(n int) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		return x
	}
	q, k, v := randn(T*heads*d), randn(T*kvHeads*d), randn(T*kvHeads*d)
	scale := 1 / math.Sqrt(d)
	b := New()
	cache := b.NewKVCache(1, kvHeads, d, 4)
	// A prefill of 13 tokens, then one token at a time.
	for start, n := 0, prefill; start < T; start, n = start+n, 1 {
		out := b.Alloc(n, heads*d)
		b.AttentionWindow(out, &Mat{R: n, C: heads * d, Data: q[start*heads*d : (start+n)*heads*d]},
			&Mat{R: n, C: kvHeads * d, Data: k[start*kvHeads*d : (start+n)*kvHeads*d]},
			&Mat{R: n, C: kvHeads * d, Data: v[start*kvHeads*d : (start+n)*kvHeads*d]}, cache, 0, float32(scale), window)
		want := refWindow(q[start*heads*d:(start+n)*heads*d], k, v, n, start+n, heads, kvHeads, d, window, scale)
		for i, g := range b.Read(out) {
			if math.Abs(float64(g-want[i])) > 1e-5 {
				t.Fatalf("tokens %d..%d: element %d is %g, want %g", start, start+n-1, i, g, want[i])
			}
		}
	}
}
