package eviction

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/lukv/lukv/backend"
)

// scorerViewSpec describes a random LayerView for the scorer tests: nq query heads,
// nkv KV heads, head dim d, T keys at positions start..start+T-1, and queries for the
// last tq of those tokens (tq == T: a prefill view; tq < T: a decode-time view).
type scorerViewSpec struct {
	nq, nkv, d, T, tq, start int
	seed                     uint64
}

// testInvFreq is Llama's RoPE frequency table for head dim d and base 10000.
func testInvFreq(d int) []float64 {
	f := make([]float64, d/2)
	for i := range f {
		f[i] = math.Pow(10000, -2*float64(i)/float64(d))
	}
	return f
}

// testRotate applies RoPE to one head vector x [d] at position p, written out pair by
// pair: (x_i, x_{i+d/2}) turns by the angle p*f_i, formed in float32 as transformers
// forms it.
func testRotate(x []float32, p int, invFreq []float64) []float32 {
	half := len(invFreq)
	out := make([]float32, len(x))
	for i := 0; i < half; i++ {
		angle := float64(float32(p) * float32(invFreq[i]))
		c, s := math.Cos(angle), math.Sin(angle)
		a, b := float64(x[i]), float64(x[i+half])
		out[i] = float32(a*c - b*s)
		out[i+half] = float32(a*s + b*c)
	}
	return out
}

// newScorerTestView builds a random view whose rotated queries and keys are the
// test's own RoPE applied to random pre-RoPE ones. Queries of a head share a random
// mean direction (so their mean is far from 0) and keys have varied norms, so that
// attention is far from uniform.
func newScorerTestView(s scorerViewSpec) *LayerView {
	r := rand.New(rand.NewPCG(s.seed, 0x5c0e))
	invFreq := testInvFreq(s.d)
	v := &LayerView{Layer: 3, NumHeads: s.nq, NumKVHeads: s.nkv, HeadDim: s.d, RoPE: &backend.RoPE{InvFreq: invFreq}}
	for j := 0; j < s.T; j++ {
		v.Positions = append(v.Positions, s.start+j)
	}
	v.QueryPositions = append([]int(nil), v.Positions[s.T-s.tq:]...)
	v.Keys, v.Values = make([][]float32, s.nkv), make([][]float32, s.nkv)
	for g := 0; g < s.nkv; g++ {
		for j := 0; j < s.T; j++ {
			scale := 0.5 + r.Float64()*1.5
			k := make([]float32, s.d)
			for i := range k {
				k[i] = float32(r.NormFloat64() * scale)
				v.Values[g] = append(v.Values[g], float32(r.NormFloat64()*(0.2+r.Float64())))
			}
			v.Keys[g] = append(v.Keys[g], testRotate(k, v.Positions[j], invFreq)...)
		}
	}
	means := make([][]float64, s.nq)
	for h := range means {
		means[h] = make([]float64, s.d)
		for i := range means[h] {
			means[h][i] = r.NormFloat64() * 1.5
		}
	}
	for row := 0; row < s.tq; row++ {
		for h := 0; h < s.nq; h++ {
			q := make([]float32, s.d)
			for i := range q {
				q[i] = float32(means[h][i] + r.NormFloat64()*(0.5+0.2*float64(i%3)))
			}
			v.PreRoPEQueries = append(v.PreRoPEQueries, q...)
			v.Queries = append(v.Queries, testRotate(q, v.QueryPositions[row], invFreq)...)
		}
	}
	return v
}

// duplicateQueryHeads returns a copy of v with every query head repeated twice next to
// itself, so every KV group holds each of its original query heads twice.
func duplicateQueryHeads(v *LayerView) *LayerView {
	w := *v
	w.NumHeads = 2 * v.NumHeads
	d := v.HeadDim
	dup := func(x []float32) []float32 {
		var out []float32
		for row := 0; row < v.Tq(); row++ {
			for h := 0; h < v.NumHeads; h++ {
				head := x[(row*v.NumHeads+h)*d : (row*v.NumHeads+h+1)*d]
				out = append(out, head...)
				out = append(out, head...)
			}
		}
		return out
	}
	w.Queries, w.PreRoPEQueries = dup(v.Queries), dup(v.PreRoPEQueries)
	return &w
}

// testQuery returns query head h of query row r (rotated or pre-RoPE).
func testQuery(x []float32, v *LayerView, r, h int) []float64 {
	d := v.HeadDim
	out := make([]float64, d)
	for i := range out {
		out[i] = float64(x[(r*v.NumHeads+h)*d+i])
	}
	return out
}

// testVec returns token j of one head's [T*d] keys or values.
func testVec(x []float32, j, d int) []float64 {
	out := make([]float64, d)
	for i := range out {
		out[i] = float64(x[j*d+i])
	}
	return out
}

func testDot(a, b []float64) float64 {
	var s float64
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

// refAttention is the full causal attention matrix [Tq][T] of query head h, built
// entry by entry: row r holds exp(logit - max) / sum over the keys its position may
// see, 0 elsewhere.
func refAttention(v *LayerView, h int) [][]float64 {
	d := v.HeadDim
	g := h / (v.NumHeads / v.NumKVHeads)
	A := make([][]float64, v.Tq())
	for r := range A {
		q := testQuery(v.Queries, v, r, h)
		A[r] = make([]float64, v.T())
		logits := map[int]float64{}
		best := math.Inf(-1)
		for j := 0; j < v.T(); j++ {
			if v.Positions[j] <= v.QueryPositions[r] {
				logits[j] = testDot(q, testVec(v.Keys[g], j, d)) / math.Sqrt(float64(d))
				best = math.Max(best, logits[j])
			}
		}
		var z float64
		for _, l := range logits {
			z += math.Exp(l - best)
		}
		for j, l := range logits {
			A[r][j] = math.Exp(l-best) / z
		}
	}
	return A
}

// assertScoresClose checks got against want on the positions compare accepts, with
// relative error at most tol (relative to |want|, floored at 1e-6 of the head's
// largest |want| so that tiny entries are not judged by float32 rounding alone).
func assertScoresClose(t *testing.T, name string, got [][]float32, want [][]float64, compare func(j int) bool, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d heads, want %d", name, len(got), len(want))
	}
	for h := range want {
		if len(got[h]) != len(want[h]) {
			t.Fatalf("%s: head %d has %d scores, want %d", name, h, len(got[h]), len(want[h]))
		}
		var scale float64
		for j, w := range want[h] {
			if compare(j) {
				scale = math.Max(scale, math.Abs(w))
			}
		}
		for j, w := range want[h] {
			if !compare(j) {
				continue
			}
			g := float64(got[h][j])
			if err := math.Abs(g - w); err > tol*math.Max(math.Abs(w), 1e-6*scale) || math.IsNaN(g) {
				t.Fatalf("%s: head %d token %d: got %.9g, want %.9g (rel err %.3g)", name, h, j, g, w, err/math.Abs(w))
			}
		}
	}
}

func everyToken(int) bool { return true }

// testRanking returns token indices from the highest score to the lowest (ties: later
// token first).
func testRanking(s []float32) []int {
	idx := make([]int, len(s))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool {
		if s[idx[a]] != s[idx[b]] {
			return s[idx[a]] > s[idx[b]]
		}
		return idx[a] > idx[b]
	})
	return idx
}

// assertProtected checks that the tokens protected says are protected score strictly
// above every other token of every head.
func assertProtected(t *testing.T, name string, scores [][]float32, protected func(j, T int) bool) {
	t.Helper()
	low := float32(math.Inf(1))
	high := float32(math.Inf(-1))
	for _, s := range scores {
		for j, x := range s {
			if protected(j, len(s)) {
				low = min(low, x)
			} else {
				high = max(high, x)
			}
		}
	}
	if !(low > high) {
		t.Fatalf("%s: lowest protected score %v is not above the highest other score %v", name, low, high)
	}
}
