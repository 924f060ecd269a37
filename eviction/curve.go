package eviction

import (
	"errors"
	"fmt"
	"math"
	"sort"
)

// BudgetCurve is LU-KV's profile of one (model, scorer, sink, window): for every global
// compression ratio rho = (i+1)/100, i = 0..98, the fraction of each KV head's tokens to
// prune, counted over the head's full T (sink and window included). kvpress stores the
// same array as a .npy of shape (99, L, H).
type BudgetCurve struct {
	Ratios  int       // rows: CurveRatios (99)
	Layers  int       // L
	KVHeads int       // H
	Prune   []float64 // [Ratios][Layers][KVHeads] row-major; entry (i, l, h) at (i*L+l)*H+h
	Meta    CurveMeta
}

// CurveMeta says where a curve came from. It travels as a JSON sidecar next to the
// .npy (kvpress's files carry none).
type CurveMeta struct {
	Model             string `json:"model,omitempty"`
	Scorer            string `json:"scorer,omitempty"`
	Sink              int    `json:"sink"`
	Window            int    `json:"window"`
	CalibrationSHA256 string `json:"calibration_sha256,omitempty"` // of the calibration context and questions
	Version           string `json:"version,omitempty"`            // CurveVersion of the writer
	Questions         int    `json:"questions"`                    // questions averaged
	ContextTokens     int    `json:"context_tokens"`               // T of the calibration context
	Horizon           int    `json:"horizon,omitempty"`            // tokens decoded after each question
}

// ErrCurveShape is returned (wrapped, with the shapes) when a curve does not fit a model.
var ErrCurveShape = errors.New("budget curve shape does not fit the model")

// NewBudgetCurve returns a zero curve (nothing pruned) of CurveRatios x layers x kvHeads.
func NewBudgetCurve(layers, kvHeads int) *BudgetCurve {
	return &BudgetCurve{Ratios: CurveRatios, Layers: layers, KVHeads: kvHeads, Prune: make([]float64, CurveRatios*layers*kvHeads)}
}

// At is the prune ratio of head (layer, head) in row i.
func (c *BudgetCurve) At(i, layer, head int) float64 {
	return c.Prune[(i*c.Layers+layer)*c.KVHeads+head]
}

// Validate checks the curve's shape and that every prune ratio is a number in [0, 1].
func (c *BudgetCurve) Validate() error {
	if c == nil {
		return fmt.Errorf("budget curve is nil")
	}
	if c.Ratios != CurveRatios {
		return fmt.Errorf("budget curve has %d rows, want %d (ratios 1%%..99%%)", c.Ratios, CurveRatios)
	}
	if c.Layers < 1 || c.KVHeads < 1 {
		return fmt.Errorf("budget curve has %d layers x %d KV heads, want both >= 1", c.Layers, c.KVHeads)
	}
	if want := c.Ratios * c.Layers * c.KVHeads; len(c.Prune) != want {
		return fmt.Errorf("budget curve (%d, %d, %d) has %d values, want %d", c.Ratios, c.Layers, c.KVHeads, len(c.Prune), want)
	}
	for k, p := range c.Prune {
		if !(p >= 0 && p <= 1) {
			i, l, h := k/(c.Layers*c.KVHeads), k/c.KVHeads%c.Layers, k%c.KVHeads
			return fmt.Errorf("budget curve entry [%d, %d, %d] = %v: want a prune ratio in [0, 1]", i, l, h, p)
		}
	}
	return nil
}

// CheckFits returns an error wrapping ErrCurveShape when the curve is not for a model
// of layers x kvHeads.
func (c *BudgetCurve) CheckFits(layers, kvHeads int) error {
	if c == nil {
		return fmt.Errorf("%w: no curve", ErrCurveShape)
	}
	if c.Layers != layers || c.KVHeads != kvHeads || c.Ratios != CurveRatios {
		return fmt.Errorf("%w: curve is (%d ratios, %d layers, %d KV heads), model needs (%d, %d, %d)",
			ErrCurveShape, c.Ratios, c.Layers, c.KVHeads, CurveRatios, layers, kvHeads)
	}
	return nil
}

// rowIndex is kvpress's row for ratio rho: round(rho*100)-1, rounding half to even as
// Python's round does. rho must lie in [0.01, 0.99].
func rowIndex(rho float64) (int, error) {
	if !(rho >= 0.01 && rho <= 0.99) {
		return 0, fmt.Errorf("budget curve: compression ratio %v outside [0.01, 0.99] (rows are 1%%..99%%)", rho)
	}
	return int(math.RoundToEven(rho*100)) - 1, nil
}

// Row returns a copy of the [Layers][KVHeads] prune ratios (row-major) for global ratio
// rho: row round(rho*100)-1, so rho = 0.8 reads row 79. rho outside [0.01, 0.99] is an
// error.
func (c *BudgetCurve) Row(rho float64) ([]float64, error) {
	i, err := rowIndex(rho)
	if err != nil {
		return nil, err
	}
	n := c.Layers * c.KVHeads
	if len(c.Prune) < (i+1)*n {
		return nil, fmt.Errorf("budget curve: row %d missing (%d values for %d x %d heads)", i, len(c.Prune), c.Layers, c.KVHeads)
	}
	return append([]float64(nil), c.Prune[i*n:(i+1)*n]...), nil
}

// KeepCounts is kvpress LUKVPress's online rounding for one layer of T tokens per head:
//
//	ideal_h = clamp(1 - prune[row, layer, h], 0, 1) * T        (float32, as kvpress)
//	total   = round(sum_h ideal_h), clamped to [H, H*T]        (half to even, as torch.round)
//	keep_h  = floor(ideal_h), plus one for the (total - sum floor) heads with the largest
//	          fractional parts (ties: lower head index), each then clamped to [1, T]
//
// kvpress sums the float32 ideals in float32; this sums them in float64, which can only
// differ when the sum lies within float32 rounding of a half-integer. torch.topk leaves
// the order of equal fractional parts unspecified; here the lower head wins.
func (c *BudgetCurve) KeepCounts(layer int, rho float64, T int) ([]int, error) {
	if layer < 0 || layer >= c.Layers {
		return nil, fmt.Errorf("budget curve: layer %d outside [0, %d)", layer, c.Layers)
	}
	if T < 1 {
		return nil, fmt.Errorf("budget curve: %d tokens, want >= 1", T)
	}
	row, err := c.Row(rho)
	if err != nil {
		return nil, err
	}
	H := c.KVHeads
	prune := row[layer*H : (layer+1)*H]
	ideal := make([]float32, H)
	var sum float64
	for h, p := range prune {
		rate := float32(1) - float32(p)
		if math.IsNaN(float64(rate)) {
			return nil, fmt.Errorf("budget curve: layer %d head %d prune ratio is NaN", layer, h)
		}
		rate = min(max(rate, 0), 1)
		ideal[h] = rate * float32(T)
		sum += float64(ideal[h])
	}
	total := int(math.RoundToEven(sum))
	total = max(H, min(H*T, total))
	keep := make([]int, H)
	base := 0
	for h, x := range ideal {
		keep[h] = int(math.Floor(float64(x)))
		base += keep[h]
	}
	if rem := total - base; rem > 0 {
		byFrac := make([]int, H)
		for h := range byFrac {
			byFrac[h] = h
		}
		frac := func(h int) float32 { return ideal[h] - float32(keep[h]) }
		sort.SliceStable(byFrac, func(a, b int) bool { return frac(byFrac[a]) > frac(byFrac[b]) })
		for _, h := range byFrac[:min(rem, H)] {
			keep[h]++
		}
	}
	for h := range keep {
		keep[h] = max(1, min(T, keep[h]))
	}
	return keep, nil
}

// AverageCurves averages per-question curves entry by entry (LUKV.md, step 5). The
// curves must have the same shape and the same Model, Scorer, Sink and Window. When
// every curve records Questions > 0 the mean is weighted by Questions (so averages of
// different sizes combine exactly; one-question curves give the plain mean), otherwise
// each curve counts once. The result's Meta: Questions is the sum, ContextTokens the
// rounded weighted mean, CalibrationSHA256 is kept only if all agree, Version is the
// first curve's.
func AverageCurves(curves []*BudgetCurve) (*BudgetCurve, error) {
	if len(curves) == 0 {
		return nil, fmt.Errorf("average curves: no curves")
	}
	first := curves[0]
	if err := first.Validate(); err != nil {
		return nil, fmt.Errorf("average curves: curve 0: %w", err)
	}
	weighted := true
	for i, c := range curves {
		if err := c.Validate(); err != nil {
			return nil, fmt.Errorf("average curves: curve %d: %w", i, err)
		}
		if c.Layers != first.Layers || c.KVHeads != first.KVHeads {
			return nil, fmt.Errorf("average curves: curve %d is %d x %d heads, curve 0 is %d x %d", i, c.Layers, c.KVHeads, first.Layers, first.KVHeads)
		}
		m, m0 := c.Meta, first.Meta
		if m.Model != m0.Model || m.Scorer != m0.Scorer || m.Sink != m0.Sink || m.Window != m0.Window {
			return nil, fmt.Errorf("average curves: curve %d is for (%q, %q, sink %d, window %d), curve 0 for (%q, %q, sink %d, window %d)",
				i, m.Model, m.Scorer, m.Sink, m.Window, m0.Model, m0.Scorer, m0.Sink, m0.Window)
		}
		if m.Questions <= 0 {
			weighted = false
		}
	}
	out := NewBudgetCurve(first.Layers, first.KVHeads)
	out.Meta = first.Meta
	var wsum, ctx float64
	questions := 0
	for _, c := range curves {
		w := 1.0
		if weighted {
			w = float64(c.Meta.Questions)
		}
		wsum += w
		ctx += w * float64(c.Meta.ContextTokens)
		questions += c.Meta.Questions
		for k, p := range c.Prune {
			out.Prune[k] += w * p
		}
		if c.Meta.CalibrationSHA256 != first.Meta.CalibrationSHA256 {
			out.Meta.CalibrationSHA256 = ""
		}
	}
	for k := range out.Prune {
		out.Prune[k] = min(1, out.Prune[k]/wsum)
	}
	out.Meta.Questions = questions
	out.Meta.ContextTokens = int(math.Round(ctx / wsum))
	return out, nil
}
