package eviction

import (
	"math"
	"slices"
	"testing"
)

// refPool pools x with an explicit padded copy: zeros around x for "avg" (always divided
// by kernel), -Inf around it for "max"; output j covers padded[j .. j+kernel-1].
func refPool(x []float64, kernel int, useMax bool) []float64 {
	pad := kernel / 2
	fill := 0.0
	if useMax {
		fill = math.Inf(-1)
	}
	padded := make([]float64, len(x)+2*pad)
	for i := range padded {
		padded[i] = fill
	}
	copy(padded[pad:], x)
	out := make([]float64, len(x))
	for j := range out {
		acc := fill
		for i := j; i < j+kernel; i++ {
			if useMax {
				acc = math.Max(acc, padded[i])
			} else {
				acc += padded[i] / float64(kernel)
			}
		}
		out[j] = acc
	}
	return out
}

// refSnapKV recomputes SnapKVScorer's scores before the window from full attention
// matrices; window entries are left 0.
func refSnapKV(v *LayerView, window, kernel int, useMax bool) [][]float64 {
	T, group := v.T(), v.NumHeads/v.NumKVHeads
	w := min(window, v.Tq())
	out := make([][]float64, v.NumKVHeads)
	for g := range out {
		out[g] = make([]float64, T)
		for hq := 0; hq < group; hq++ {
			A := refAttention(v, g*group+hq)
			colMean := make([]float64, T-w)
			for r := v.Tq() - w; r < v.Tq(); r++ {
				for j := range colMean {
					colMean[j] += A[r][j] / float64(w)
				}
			}
			for j, x := range refPool(colMean, kernel, useMax) {
				out[g][j] += x / float64(group)
			}
		}
	}
	return out
}

func TestSnapKVMatchesReference(t *testing.T) {
	cases := []struct {
		name string
		spec scorerViewSpec
		s    SnapKVScorer
	}{
		{"avg k5", scorerViewSpec{nq: 4, nkv: 2, d: 16, T: 40, tq: 40, seed: 11}, SnapKVScorer{Window: 8, Kernel: 5, Pool: "avg"}},
		{"max k7", scorerViewSpec{nq: 4, nkv: 2, d: 16, T: 40, tq: 40, seed: 12}, SnapKVScorer{Window: 6, Kernel: 7, Pool: "max"}},
		{"no pooling mha", scorerViewSpec{nq: 2, nkv: 2, d: 8, T: 20, tq: 20, seed: 13}, SnapKVScorer{Window: 5, Kernel: 1}},
		{"window 1", scorerViewSpec{nq: 2, nkv: 1, d: 8, T: 20, tq: 20, seed: 14}, SnapKVScorer{Window: 1, Kernel: 3}},
		{"decode view, window > Tq", scorerViewSpec{nq: 4, nkv: 2, d: 16, T: 40, tq: 6, start: 50, seed: 15}, SnapKVScorer{Window: 10, Kernel: 5}},
	}
	for _, c := range cases {
		v := newScorerTestView(c.spec)
		w := min(c.s.Window, v.Tq())
		got := c.s.Score(v)
		want := refSnapKV(v, c.s.Window, c.s.Kernel, c.s.Pool == "max")
		assertScoresClose(t, c.name, got, want, func(j int) bool { return j < v.T()-w }, 1e-4)
		assertProtected(t, c.name, got, func(j, T int) bool { return j >= T-w })
		// kvpress pads the window with the maximum over the layer's other scores + 1.
		var top float32
		for g := range got {
			top = max(top, slices.Max(got[g][:v.T()-w]))
		}
		if got[0][v.T()-1] != top+1 {
			t.Fatalf("%s: window score %v, want max %v + 1", c.name, got[0][v.T()-1], top)
		}
	}
}

func TestSnapKVShortView(t *testing.T) {
	s := DefaultSnapKVScorer()
	for _, T := range []int{1, 30, 64} {
		v := newScorerTestView(scorerViewSpec{nq: 2, nkv: 1, d: 8, T: T, tq: T, seed: 16})
		got := s.Score(v)
		for _, x := range got[0] {
			if x != got[0][0] {
				t.Fatalf("T=%d <= window: scores differ: %v", T, got[0])
			}
		}
	}
}

// refTOVA is the last row of every head's attention matrix, averaged over all query
// heads of the view, the same for every KV head; the last entry is left 0.
func refTOVA(v *LayerView) [][]float64 {
	T := v.T()
	row := make([]float64, T)
	for h := 0; h < v.NumHeads; h++ {
		A := refAttention(v, h)
		for j := 0; j < T-1; j++ {
			row[j] += A[v.Tq()-1][j] / float64(v.NumHeads)
		}
	}
	out := make([][]float64, v.NumKVHeads)
	for g := range out {
		out[g] = row
	}
	return out
}

func TestTOVAMatchesReference(t *testing.T) {
	for i, spec := range []scorerViewSpec{
		{nq: 4, nkv: 2, d: 16, T: 30, tq: 30, seed: 17},
		{nq: 6, nkv: 3, d: 8, T: 25, tq: 3, start: 9, seed: 18},
	} {
		v := newScorerTestView(spec)
		got := TOVAScorer{}.Score(v)
		assertScoresClose(t, "tova", got, refTOVA(v), func(j int) bool { return j < v.T()-1 }, 1e-4)
		assertProtected(t, "tova", got, func(j, T int) bool { return j == T-1 })
		for g := range got {
			for j := range got[g] {
				if got[g][j] != got[0][j] {
					t.Fatalf("case %d: KV heads 0 and %d differ at %d", i, g, j)
				}
			}
		}
	}
}

// refObserved sums every attention matrix's columns over the rows that may see the key
// and divides by how many do, then averages over the group.
func refObserved(v *LayerView) [][]float64 {
	T, group := v.T(), v.NumHeads/v.NumKVHeads
	out := make([][]float64, v.NumKVHeads)
	for g := range out {
		out[g] = make([]float64, T)
		for hq := 0; hq < group; hq++ {
			A := refAttention(v, g*group+hq)
			for j := 0; j < T; j++ {
				var sum float64
				n := 0
				for r := range A {
					if v.QueryPositions[r] >= v.Positions[j] {
						sum += A[r][j]
						n++
					}
				}
				out[g][j] += sum / float64(n) / float64(group)
			}
		}
	}
	return out
}

func TestObservedAttentionMatchesReference(t *testing.T) {
	for _, spec := range []scorerViewSpec{
		{nq: 4, nkv: 2, d: 16, T: 30, tq: 30, seed: 19},
		{nq: 2, nkv: 2, d: 8, T: 300, tq: 300, seed: 20}, // more rows than one block
		{nq: 4, nkv: 1, d: 8, T: 25, tq: 5, start: 3, seed: 21},
	} {
		v := newScorerTestView(spec)
		got := ObservedAttentionScorer{}.Score(v)
		assertScoresClose(t, "h2o", got, refObserved(v), everyToken, 1e-4)
	}
}

// After a prefill every query row's attention sums to 1, so the scores weighted by how
// many rows see each key (T-j) add up to T in every head.
func TestObservedAttentionMass(t *testing.T) {
	v := newScorerTestView(scorerViewSpec{nq: 4, nkv: 2, d: 8, T: 60, tq: 60, seed: 22})
	for g, row := range (ObservedAttentionScorer{}).Score(v) {
		var mass float64
		for j, x := range row {
			mass += float64(x) * float64(v.T()-j)
		}
		if math.Abs(mass-float64(v.T())) > 1e-4 {
			t.Fatalf("head %d: attention mass %v, want %d", g, mass, v.T())
		}
	}
}

func TestPool1d(t *testing.T) {
	x := []float64{1, 2, 3, 4, 5}
	// Hand-computed: zero padding counted in the average; -Inf padding for max.
	avg3 := []float64{1, 2, 3, 4, 3}
	max3 := []float64{2, 3, 4, 5, 5}
	avg4 := []float64{0.75, 1.5, 2.5, 3.5, 3} // PyTorch's first 5 of 6 outputs
	for i, c := range []struct {
		kernel int
		useMax bool
		want   []float64
	}{{3, false, avg3}, {3, true, max3}, {4, false, avg4}, {1, false, x}} {
		got := pool1d(x, c.kernel, c.useMax)
		for j := range x {
			if math.Abs(got[j]-c.want[j]) > 1e-12 {
				t.Fatalf("case %d: pool1d = %v, want %v", i, got, c.want)
			}
		}
	}
	for _, kernel := range []int{3, 5, 7} {
		y := []float64{0.3, -1, 2, 7, 0.1, 0.1, 4, -2, 0}
		for _, useMax := range []bool{false, true} {
			got, want := pool1d(y, kernel, useMax), refPool(y, kernel, useMax)
			for j := range y {
				if math.Abs(got[j]-want[j]) > 1e-12 {
					t.Fatalf("kernel %d max=%v: %v, want %v", kernel, useMax, got, want)
				}
			}
		}
	}
}

// Duplicating every query head leaves each KV group's mean unchanged, so scores must
// not move.
func TestQueryHeadDuplicationInvariance(t *testing.T) {
	v := newScorerTestView(scorerViewSpec{nq: 4, nkv: 2, d: 16, T: 40, tq: 40, seed: 23})
	dv := duplicateQueryHeads(v)
	for _, s := range []Scorer{DefaultExpectedAttentionScorer(), SnapKVScorer{Window: 8, Kernel: 5, Pool: "max"},
		TOVAScorer{}, ObservedAttentionScorer{}} {
		a, b := s.Score(v), s.Score(dv)
		want := make([][]float64, len(a))
		for g := range a {
			want[g] = make([]float64, len(a[g]))
			for j, x := range a[g] {
				want[g][j] = float64(x)
			}
		}
		assertScoresClose(t, s.Name()+" duplicated heads", b, want, everyToken, 1e-5)
	}
}
