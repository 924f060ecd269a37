package eviction

import (
	"math"
	"math/rand/v2"
	"testing"
)

// randCurve returns a cumulative curve c[0..n] with c[0] = 0. Half the curves have
// non-negative increments (eviction losses), half arbitrary ones, some with repeats so
// that collinear points and flat runs occur.
func randCurve(r *rand.Rand, n int) []float64 {
	c := make([]float64, n+1)
	signed := r.IntN(2) == 0
	for k := 1; k <= n; k++ {
		x := r.ExpFloat64()
		switch {
		case r.IntN(5) == 0:
			x = float64(r.IntN(3)) // exact small values: ties and collinear runs
		case signed:
			x = r.NormFloat64()
		}
		c[k] = c[k-1] + x
	}
	return c
}

// gcmBrute is the greatest convex minorant at k by its characterisation: the minimum,
// over i <= k <= j, of the chord through (i, c[i]) and (j, c[j]) evaluated at k.
func gcmBrute(c []float64, k int) float64 {
	best := c[k]
	for i := 0; i <= k; i++ {
		for j := k; j < len(c); j++ {
			if i == j {
				continue
			}
			v := c[i] + (c[j]-c[i])*float64(k-i)/float64(j-i)
			best = min(best, v)
		}
	}
	return best
}

func near(a, b, scale float64) bool { return math.Abs(a-b) <= 1e-9*max(1, scale) }

func TestLowerConvexHullKnown(t *testing.T) {
	// (1, 3) and (2, 3) lie above the chord from (0, 0) to (3, 4).
	got := LowerConvexHull([]float64{0, 3, 3, 4})
	want := []float64{0, 4.0 / 3, 8.0 / 3, 4}
	for k := range want {
		if !near(got[k], want[k], 4) {
			t.Fatalf("hull = %v, want %v", got, want)
		}
	}
	if len(LowerConvexHull(nil)) != 0 {
		t.Error("empty input should give an empty hull")
	}
	if g := LowerConvexHull([]float64{2.5}); len(g) != 1 || g[0] != 2.5 {
		t.Errorf("one point: %v", g)
	}
}

func TestLowerConvexHullIsGreatestConvexMinorant(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 300; trial++ {
		n := r.IntN(40)
		c := randCurve(r, n)
		g := LowerConvexHull(c)
		scale := 0.0
		for _, v := range c {
			scale = max(scale, math.Abs(v))
		}
		if len(g) != len(c) {
			t.Fatalf("len %d, want %d", len(g), len(c))
		}
		if g[0] != c[0] || g[n] != c[n] {
			t.Fatalf("trial %d: endpoints %v %v, want %v %v", trial, g[0], g[n], c[0], c[n])
		}
		for k := range c {
			if g[k] > c[k]+1e-9*max(1, scale) {
				t.Fatalf("trial %d: hull above the curve at %d: %v > %v", trial, k, g[k], c[k])
			}
			if b := gcmBrute(c, k); !near(g[k], b, scale) {
				t.Fatalf("trial %d: hull(%d) = %v, brute-force GCM %v (c = %v)", trial, k, g[k], b, c)
			}
			if k >= 1 && k+1 < len(g) {
				if g[k+1]-g[k] < g[k]-g[k-1]-1e-9*max(1, scale) {
					t.Fatalf("trial %d: not convex at %d: %v", trial, k, g)
				}
			}
		}
	}
}

// pavaBrute is the isotonic regression of x by the max-min formula
// y[k] = max over i <= k of min over j >= k of mean(x[i..j]), O(n^3).
func pavaBrute(x []float64) []float64 {
	y := make([]float64, len(x))
	for k := range x {
		best := math.Inf(-1)
		for i := 0; i <= k; i++ {
			worst := math.Inf(1)
			for j := k; j < len(x); j++ {
				var s float64
				for _, v := range x[i : j+1] {
					s += v
				}
				worst = min(worst, s/float64(j-i+1))
			}
			best = max(best, worst)
		}
		y[k] = best
	}
	return y
}

func TestMarginalCostsIsPAVA(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for trial := 0; trial < 300; trial++ {
		n := r.IntN(30)
		c := randCurve(r, n)
		inc := make([]float64, n)
		for k := range inc {
			inc[k] = c[k+1] - c[k]
		}
		got := MarginalCosts(inc)
		want := pavaBrute(inc)
		hull := LowerConvexHull(c)
		var sumGot, sumInc, scale float64
		for k := range inc {
			scale = max(scale, math.Abs(c[k+1]))
			if !near(got[k], want[k], 10) {
				t.Fatalf("trial %d: PAVA[%d] = %v, brute %v (x = %v)", trial, k, got[k], want[k], inc)
			}
			if d := hull[k+1] - hull[k]; !near(got[k], d, 10*scale) {
				t.Fatalf("trial %d: cost %d = %v, hull slope %v", trial, k, got[k], d)
			}
			if k > 0 && got[k] < got[k-1] {
				t.Fatalf("trial %d: costs decrease at %d: %v", trial, k, got)
			}
			sumGot += got[k]
			sumInc += inc[k]
		}
		if !near(sumGot, sumInc, scale) {
			t.Fatalf("trial %d: costs sum to %v, increments to %v", trial, sumGot, sumInc)
		}
	}
	if len(MarginalCosts(nil)) != 0 {
		t.Error("empty increments should give no costs")
	}
}
