package eviction

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// rampCurve is a curve whose row i prunes (i+1)/100 everywhere, perturbed per head by
// delta*(h - (H-1)/2), clamped to [0, 1].
func rampCurve(L, H int, delta float64) *BudgetCurve {
	c := NewBudgetCurve(L, H)
	for i := 0; i < CurveRatios; i++ {
		for l := 0; l < L; l++ {
			for h := 0; h < H; h++ {
				p := float64(i+1)/100 + delta*(float64(h)-float64(H-1)/2)
				c.Prune[(i*L+l)*H+h] = min(1, max(0, p))
			}
		}
	}
	return c
}

func TestCurveRow(t *testing.T) {
	c := rampCurve(2, 3, 0)
	for _, tc := range []struct {
		rho float64
		row int
	}{{0.01, 0}, {0.8, 79}, {0.29, 28}, {0.99, 98}, {0.125, 11}, {0.135, 13}, {0.805, 79}} {
		// Halves round to even, as Python's round in kvpress: 0.125*100 = 12.5 -> 12,
		// 0.135*100 = 13.5 -> 14, 0.805*100 = 80.5 -> 80 (checked against CPython).
		got, err := c.Row(tc.rho)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 6 || got[0] != float64(tc.row+1)/100 {
			t.Errorf("Row(%v) = %v, want row %d", tc.rho, got, tc.row)
		}
	}
	row, _ := c.Row(0.5)
	row[0] = 42
	if c.At(49, 0, 0) == 42 {
		t.Error("Row returned the curve's own memory")
	}
	for _, rho := range []float64{0, 0.009, 0.995, 1, -0.5, math.NaN(), math.Inf(1)} {
		if _, err := c.Row(rho); err == nil || !strings.Contains(err.Error(), "outside [0.01, 0.99]") {
			t.Errorf("Row(%v): error %v", rho, err)
		}
	}
}

func TestKeepCountsKnown(t *testing.T) {
	cases := []struct {
		name  string
		prune []float64
		T     int
		want  []int
	}{
		// keep ideals 5, 4.996, 7.499: total round(17.495) = 17; floors 16; the one
		// extra token goes to the largest fraction (head 1).
		{"remainder to largest fraction", []float64{0.5, 0.5004, 0.2501}, 10, []int{5, 5, 7}},
		// four ideals of 4.5: total 18, floors 16; equal fractions: lower heads first.
		{"ties to lower head", []float64{0.55, 0.55, 0.55, 0.55}, 10, []int{5, 5, 4, 4}},
		// ideals 2.5 and 0: total round(2.5) = 2 (half to even, as torch.round), then
		// the empty head is clamped up to 1.
		{"half to even, clamp to 1", []float64{0.75, 1}, 10, []int{2, 1}},
		// nothing pruned: every head keeps T.
		{"full", []float64{0, 0}, 7, []int{7, 7}},
		// out-of-range ratios are clamped like kvpress's keep-rate clamp.
		{"clamp rates", []float64{-0.5, 1.5}, 8, []int{8, 1}},
	}
	for _, tc := range cases {
		H := len(tc.prune)
		c := NewBudgetCurve(2, H)
		copy(c.Prune[(79*2+1)*H:], tc.prune) // row 79 (rho 0.8), layer 1
		got, err := c.KeepCounts(1, 0.8, tc.T)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: keep %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestKeepCountsRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	for trial := 0; trial < 500; trial++ {
		L, H, T := 1+r.IntN(3), 1+r.IntN(9), 1+r.IntN(5000)
		c := NewBudgetCurve(L, H)
		for k := range c.Prune {
			c.Prune[k] = r.Float64()
			if r.IntN(10) == 0 {
				c.Prune[k] = float64(r.IntN(2))
			}
		}
		rho := float64(1+r.IntN(99)) / 100
		l := r.IntN(L)
		keep, err := c.KeepCounts(l, rho, T)
		if err != nil {
			t.Fatal(err)
		}
		row, _ := c.Row(rho)
		var ideal float64
		sum, raised := 0, 0
		for h, k := range keep {
			x := (1 - row[l*H+h]) * float64(T)
			ideal += x
			if k < 1 || k > T {
				t.Fatalf("head %d keeps %d of %d", h, k, T)
			}
			if float64(k) > math.Floor(x)+1 || float64(k) < math.Floor(x)-1 { // float32 may put an integer ideal just below it
				t.Fatalf("head %d keeps %d, ideal %v", h, k, x)
			}
			if x < 1 {
				raised++
			}
			sum += k
		}
		// The layer total is round(sum of ideals), except where the [1, T] clamp
		// lifted empty heads.
		if want := max(H, int(math.RoundToEven(ideal))); sum < want-1 || sum > want+raised+1 {
			t.Fatalf("total %d, ideal %v (H %d, %d heads raised)", sum, ideal, H, raised)
		}
	}
}

func TestKeepCountsErrors(t *testing.T) {
	c := rampCurve(2, 2, 0)
	if _, err := c.KeepCounts(2, 0.5, 10); err == nil {
		t.Error("layer out of range accepted")
	}
	if _, err := c.KeepCounts(0, 0.5, 0); err == nil {
		t.Error("T = 0 accepted")
	}
	if _, err := c.KeepCounts(0, 1, 10); err == nil {
		t.Error("rho = 1 accepted")
	}
}

func TestCheckFits(t *testing.T) {
	c := rampCurve(32, 8, 0)
	if err := c.CheckFits(32, 8); err != nil {
		t.Errorf("fitting curve: %v", err)
	}
	err := c.CheckFits(28, 4)
	if !errors.Is(err, ErrCurveShape) {
		t.Fatalf("error %v is not ErrCurveShape", err)
	}
	for _, s := range []string{"32 layers", "8 KV heads", "(99, 28, 4)"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not say %q", err, s)
		}
	}
	var nilCurve *BudgetCurve
	if err := nilCurve.CheckFits(1, 1); !errors.Is(err, ErrCurveShape) {
		t.Errorf("nil curve: %v", err)
	}
}

func TestValidate(t *testing.T) {
	c := rampCurve(2, 2, 0)
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.Prune[(5*2+1)*2+1] = math.NaN()
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "[5, 1, 1]") {
		t.Errorf("NaN entry: %v", err)
	}
	c.Prune[(5*2+1)*2+1] = 1.5
	if err := c.Validate(); err == nil {
		t.Error("prune ratio 1.5 accepted")
	}
	c = rampCurve(2, 2, 0)
	c.Prune = c.Prune[1:]
	if err := c.Validate(); err == nil {
		t.Error("short data accepted")
	}
}

func TestAverageCurves(t *testing.T) {
	a, b := rampCurve(2, 3, 0), rampCurve(2, 3, 0.002)
	a.Meta = CurveMeta{Model: "m", Scorer: "expected_attention", Sink: 4, Window: 1, Questions: 1, ContextTokens: 4000, CalibrationSHA256: "x"}
	b.Meta = a.Meta
	b.Meta.Questions, b.Meta.ContextTokens = 3, 4100
	avg, err := AverageCurves([]*BudgetCurve{a, b})
	if err != nil {
		t.Fatal(err)
	}
	for k := range avg.Prune {
		if want := (a.Prune[k] + 3*b.Prune[k]) / 4; math.Abs(avg.Prune[k]-want) > 1e-12 {
			t.Fatalf("entry %d: %v, want the Questions-weighted mean %v", k, avg.Prune[k], want)
		}
	}
	if m := avg.Meta; m.Questions != 4 || m.ContextTokens != 4075 || m.CalibrationSHA256 != "x" || m.Model != "m" {
		t.Errorf("meta %+v", m)
	}
	// Without question counts each curve counts once; differing hashes are dropped.
	a.Meta.Questions, b.Meta.Questions, b.Meta.CalibrationSHA256 = 0, 0, "y"
	avg, err = AverageCurves([]*BudgetCurve{a, b})
	if err != nil {
		t.Fatal(err)
	}
	if want := (a.Prune[7] + b.Prune[7]) / 2; math.Abs(avg.Prune[7]-want) > 1e-12 || avg.Meta.CalibrationSHA256 != "" {
		t.Errorf("plain mean %v (want %v), hash %q", avg.Prune[7], want, avg.Meta.CalibrationSHA256)
	}
	if _, err := AverageCurves(nil); err == nil {
		t.Error("no curves accepted")
	}
	if _, err := AverageCurves([]*BudgetCurve{a, rampCurve(2, 4, 0)}); err == nil {
		t.Error("shape mismatch accepted")
	}
	c := rampCurve(2, 3, 0)
	c.Meta = a.Meta
	c.Meta.Window = 32
	if _, err := AverageCurves([]*BudgetCurve{a, c}); err == nil || !strings.Contains(err.Error(), "window 32") {
		t.Errorf("window mismatch: %v", err)
	}
}
