package eviction

import (
	"cmp"
	"fmt"
	"math"
	"slices"
)

// Allocator decides how many tokens every KV head of a layer keeps. Given the layer's
// scores [Nkv][T] (sink and window already protected) and the compression ratio rho
// (the fraction of tokens to drop), it returns each head's count, in [0, T of the
// head]; the head then keeps its count best tokens (KeepTop). Counts are plain data, so
// the host and a device consume the same decision (Method.Plan).
type Allocator interface {
	Name() string
	Counts(layer, numLayers int, scores [][]float32, ratio float64) ([]int, error)
}

// topK returns the indices of the k highest scores, ascending. Ties keep the later token
// (the more recent one), the same rule the profiler uses when it orders evictions.
// It selects the k-th best in linear expected time (quickselect) and then keeps every
// index that ranks at least as high, scanning in index order, so no sort is needed: the
// evaluation calls it for every head, layer, method and ratio.
func topK(scores []float32, k int) []int {
	k = max(0, min(k, len(scores)))
	if k == 0 {
		return []int{}
	}
	// better reports whether token a ranks above token b: (score descending, index
	// descending), a total order (NaN ranks lowest, as cmp.Compare orders it).
	better := func(a, b int) bool {
		if c := cmp.Compare(scores[a], scores[b]); c != 0 {
			return c > 0
		}
		return a > b
	}
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	// Quickselect: afterwards idx[k-1] is the k-th best token.
	lo, hi := 0, len(idx)-1
	seed := uint32(len(idx))*2654435761 + uint32(k)
	for lo < hi {
		seed = seed*1664525 + 1013904223 // a cheap deterministic pivot choice
		p := lo + int(seed%uint32(hi-lo+1))
		idx[p], idx[hi] = idx[hi], idx[p]
		store := lo
		for i := lo; i < hi; i++ {
			if better(idx[i], idx[hi]) {
				idx[i], idx[store] = idx[store], idx[i]
				store++
			}
		}
		idx[store], idx[hi] = idx[hi], idx[store]
		switch {
		case store == k-1:
			lo = hi
		case store < k-1:
			lo = store + 1
		default:
			hi = store - 1
		}
	}
	kth := idx[k-1]
	kept := make([]int, 0, k)
	for i := range scores {
		if i == kth || better(i, kth) {
			kept = append(kept, i)
		}
	}
	return kept
}

// checkRatio rejects ratios outside [0, 1).
func checkRatio(ratio float64) error {
	if ratio < 0 || ratio >= 1 || math.IsNaN(ratio) {
		return fmt.Errorf("compression ratio %v: want 0 <= ratio < 1", ratio)
	}
	return nil
}

// KeepTop returns, for every head, the indices of its counts[h] best tokens (score
// descending, ties to the later token, NaN lowest), ascending: how a head keeps what its
// allocator counted. A device does the same (backend.DeviceCompaction).
func KeepTop(scores [][]float32, counts []int) [][]int {
	keep := make([][]int, len(scores))
	for h, s := range scores {
		keep[h] = topK(s, counts[h])
	}
	return keep
}

// UniformAllocator gives every head the same budget, floor(T*(1-rho)) (at least 1),
// as kvpress's ScorerPress does, except that the product is rounded to 1e-9 first: in
// floating point 100*(1-0.8) is 19.999999999999996, which kvpress floors to 19.
type UniformAllocator struct{}

func (UniformAllocator) Name() string { return "uniform" }

func (UniformAllocator) Counts(layer, numLayers int, scores [][]float32, ratio float64) ([]int, error) {
	if err := checkRatio(ratio); err != nil {
		return nil, err
	}
	counts := make([]int, len(scores))
	for h, s := range scores {
		counts[h] = min(len(s), max(1, uniformBudget(len(s), ratio)))
	}
	return counts, nil
}

// uniformBudget is floor(T*(1-ratio)), robust to the product's rounding error.
func uniformBudget(T int, ratio float64) int {
	return int(math.Floor(float64(T)*(1-ratio) + 1e-9))
}

// PyramidAllocator (PyramidKV) gives lower layers more tokens than higher ones: budgets
// fall linearly with depth from max to min = (budget)/Beta, keeping the average at the
// uniform budget, every head of a layer alike (kvpress's PyramidKVPress formula; when
// the pyramid does not fit it falls back to the uniform budget).
type PyramidAllocator struct {
	Window int
	Beta   float64
}

func (PyramidAllocator) Name() string { return "pyramid" }

// LayerBudget is the number of tokens every head of layer keeps out of T.
func (p PyramidAllocator) LayerBudget(layer, numLayers, T int, ratio float64) int {
	w := float64(p.Window)
	maxCap := w + float64(T)*(1-ratio)
	minNum := (maxCap - w) / p.Beta
	maxNum := (maxCap-w)*2 - minNum
	if maxNum >= float64(T)-w {
		maxNum = float64(T) - w
		minNum = (maxCap-w)*2 - maxNum
	}
	if numLayers < 2 || !(float64(T) >= maxNum && maxNum >= minNum && minNum >= w) {
		return int(math.Round(float64(T) * (1 - ratio)))
	}
	steps := (maxNum - minNum) / float64(numLayers-1)
	return int(math.Round(maxNum - float64(layer)*steps))
}

func (p PyramidAllocator) Counts(layer, numLayers int, scores [][]float32, ratio float64) ([]int, error) {
	if err := checkRatio(ratio); err != nil {
		return nil, err
	}
	counts := make([]int, len(scores))
	for h, s := range scores {
		counts[h] = min(len(s), max(1, p.LayerBudget(layer, numLayers, len(s), ratio)))
	}
	return counts, nil
}

// AdaKVAllocator pools a layer's budget across its heads: each head first keeps its top
// Safeguard share of the uniform budget, then the rest of the layer's budget
// (Nkv * uniform) goes to the highest remaining scores of any head (kvpress AdaKVPress);
// a head left with nothing keeps its best token.
//
// The pooled choice is returned as per-head counts: within one head the pool ranks
// tokens as KeepTop does (score descending, later token first), so the tokens the pool
// takes from a head are the best ones its safeguard left, and each head's top count is
// exactly the pooled set (TestAdaKVCountsReproducePooledSet checks it against the
// pooled selection itself).
type AdaKVAllocator struct {
	Safeguard float64
}

func (AdaKVAllocator) Name() string { return "adakv" }

func (a AdaKVAllocator) Counts(layer, numLayers int, scores [][]float32, ratio float64) ([]int, error) {
	if err := checkRatio(ratio); err != nil {
		return nil, err
	}
	if len(scores) == 0 {
		return nil, nil
	}
	nKept := uniformBudget(len(scores[0]), ratio)
	nSafe := int(float64(nKept) * a.Safeguard)
	type cand struct {
		head, tok int
		s         float32
	}
	counts := make([]int, len(scores))
	var rest []cand
	left := nKept * len(scores)
	for h, s := range scores {
		safe := topK(s, nSafe)
		counts[h] = len(safe)
		left -= len(safe)
		chosen := make([]bool, len(s))
		for _, j := range safe {
			chosen[j] = true
		}
		for j, v := range s {
			if !chosen[j] {
				rest = append(rest, cand{h, j, v})
			}
		}
	}
	// Score descending, later token first, then lower head first (the order a stable
	// sort of the head-major list gives): a total order, so the fast sort is deterministic.
	slices.SortFunc(rest, func(x, y cand) int {
		if c := cmp.Compare(y.s, x.s); c != 0 {
			return c
		}
		if c := cmp.Compare(y.tok, x.tok); c != 0 {
			return c
		}
		return cmp.Compare(x.head, y.head)
	})
	for _, c := range rest[:max(0, min(left, len(rest)))] {
		counts[c.head]++
	}
	for h, s := range scores {
		if counts[h] == 0 { // a head always keeps its best token
			counts[h] = min(1, len(s))
		}
	}
	return counts, nil
}

// LUKVAllocator reads each head's budget from an LU-KV budget curve (kvpress's online
// rounding, BudgetCurve.KeepCounts).
type LUKVAllocator struct {
	Curve *BudgetCurve
}

func (LUKVAllocator) Name() string { return "lukv" }

func (a LUKVAllocator) Counts(layer, numLayers int, scores [][]float32, ratio float64) ([]int, error) {
	if err := checkRatio(ratio); err != nil {
		return nil, err
	}
	if a.Curve == nil {
		return nil, fmt.Errorf("allocator lukv needs a budget curve")
	}
	if err := a.Curve.CheckFits(numLayers, len(scores)); err != nil {
		return nil, err
	}
	if ratio == 0 {
		return UniformAllocator{}.Counts(layer, numLayers, scores, 0)
	}
	counts, err := a.Curve.KeepCounts(layer, ratio, len(scores[0]))
	if err != nil {
		return nil, err
	}
	for h, s := range scores {
		counts[h] = max(0, min(len(s), counts[h]))
	}
	return counts, nil
}
