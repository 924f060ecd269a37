package eviction

import (
	"fmt"
	"math"
)

// Allocator decides how many tokens every KV head of a layer keeps. Given the layer's
// scores [Nkv][T] (sink and window already protected) and the compression ratio rho
// (the fraction of tokens to drop), it returns each head's count, in [0, T of the
// head]; the head then keeps its count best tokens (KeepTop). Counts are plain data, so
// the host and a device consume the same decision (Method.Plan). Method.Plan calls
// Counts for several layers concurrently.
type Allocator interface {
	Name() string
	Counts(layer, numLayers int, scores [][]float32, ratio float64) ([]int, error)
}

// FixedAllocator is an Allocator whose counts do not depend on the scores, only on the
// layer, the number of heads, their length T and the ratio (uniform, pyramid, LU-KV; not
// AdaKV, whose pooled counts follow the scores). CountsFor is Counts for any scores of
// heads x T: Method.FixedCounts plans with it without reading the scores, so they can
// stay where a device computed them.
type FixedAllocator interface {
	Allocator
	CountsFor(layer, numLayers, heads, T int, ratio float64) ([]int, error)
}

var (
	_ FixedAllocator = UniformAllocator{}
	_ FixedAllocator = PyramidAllocator{}
	_ FixedAllocator = LUKVAllocator{}
)

// fixedCounts is a FixedAllocator's Counts: CountsFor per distinct head length.
func fixedCounts(a FixedAllocator, layer, numLayers int, scores [][]float32, ratio float64) ([]int, error) {
	counts := make([]int, len(scores))
	for h, s := range scores {
		c, err := a.CountsFor(layer, numLayers, 1, len(s), ratio)
		if err != nil {
			return nil, err
		}
		counts[h] = c[0]
	}
	return counts, nil
}

// topK returns the indices of the k highest scores, ascending. Ties keep the later token
// (the more recent one), the same rule the profiler uses when it orders evictions; NaN
// ranks lowest. It selects the k best keys in linear expected time (selectBest) and then
// keeps every index whose key ranks at least as high as the k-th, scanning in index
// order, so no sort is needed: the evaluation calls it for every head, layer, method and
// ratio.
func topK(scores []float32, k int) []int {
	k = max(0, min(k, len(scores)))
	if k == 0 {
		return []int{}
	}
	keys := make([]rankKey, len(scores))
	for j, v := range scores {
		keys[j] = newRankKey(v, j)
	}
	selectBest(keys, k)
	kth := keys[0]
	for _, x := range keys[1:k] {
		kth = min(kth, x)
	}
	kept := make([]int, 0, k)
	for j, v := range scores {
		if newRankKey(v, j) >= kth {
			kept = append(kept, j)
		}
	}
	return kept
}

// rankKey orders a head's tokens as topK ranks them: sortable(score) << 32 | index, so a
// higher key is a higher score, or an equal one at a later token (kernels/topk.cu uses
// the same key).
type rankKey uint64

func newRankKey(score float32, index int) rankKey {
	return rankKey(uint64(sortable(score))<<32 | uint64(index))
}

func (x rankKey) better(y rankKey) bool { return x > y }

// selectBest reorders c so that c[:k] are its k best items under better, a strict total
// order (in no particular order), by quickselect with deterministic pivots: linear
// expected time.
func selectBest[T interface{ better(T) bool }](c []T, k int) {
	lo, hi := 0, len(c)-1
	seed := uint32(len(c))*2654435761 + uint32(k)
	for k > 0 && k < len(c) && lo < hi {
		seed = seed*1664525 + 1013904223 // a cheap deterministic pivot choice
		p := lo + int(seed%uint32(hi-lo+1))
		c[p], c[hi] = c[hi], c[p]
		store := lo
		for i := lo; i < hi; i++ {
			if c[i].better(c[hi]) {
				c[i], c[store] = c[store], c[i]
				store++
			}
		}
		c[store], c[hi] = c[hi], c[store]
		switch {
		case store == k-1 || store == k:
			return
		case store < k-1:
			lo = store + 1
		default:
			hi = store - 1
		}
	}
}

// sortable maps a float32 to a uint32 in cmp.Compare's order: NaN lowest, -0 equal to
// +0 (kernels/topk.cu ranks with the same map).
func sortable(f float32) uint32 {
	if f != f {
		return 0
	}
	u := math.Float32bits(f)
	if f == 0 {
		u = 0
	}
	if u&0x80000000 != 0 {
		return ^u
	}
	return u | 0x80000000
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

func (a UniformAllocator) Counts(layer, numLayers int, scores [][]float32, ratio float64) ([]int, error) {
	return fixedCounts(a, layer, numLayers, scores, ratio)
}

func (UniformAllocator) CountsFor(layer, numLayers, heads, T int, ratio float64) ([]int, error) {
	if err := checkRatio(ratio); err != nil {
		return nil, err
	}
	counts := make([]int, heads)
	for h := range counts {
		counts[h] = min(T, max(1, uniformBudget(T, ratio)))
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
	return fixedCounts(p, layer, numLayers, scores, ratio)
}

func (p PyramidAllocator) CountsFor(layer, numLayers, heads, T int, ratio float64) ([]int, error) {
	if err := checkRatio(ratio); err != nil {
		return nil, err
	}
	counts := make([]int, heads)
	for h := range counts {
		counts[h] = min(T, max(1, p.LayerBudget(layer, numLayers, T, ratio)))
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
	counts := make([]int, len(scores))
	n := 0
	for _, s := range scores {
		n += len(s)
	}
	rest := make([]poolToken, 0, n)
	left := nKept * len(scores)
	for h, s := range scores {
		safe := topK(s, nSafe)
		counts[h] = len(safe)
		left -= len(safe)
		for j, v := range s {
			if len(safe) > 0 && j == safe[0] {
				safe = safe[1:]
				continue
			}
			rest = append(rest, poolToken{uint64(sortable(v))<<32 | uint64(j), h})
		}
	}
	// The pool takes the left best of the rest (poolToken.better: a strict total order,
	// so a selection decides the pooled set exactly, in linear expected time).
	k := max(0, min(left, len(rest)))
	selectBest(rest, k)
	for _, c := range rest[:k] {
		counts[c.head]++
	}
	for h, s := range scores {
		if counts[h] == 0 { // a head always keeps its best token
			counts[h] = min(1, len(s))
		}
	}
	return counts, nil
}

// poolToken is a token in AdaKV's pool: key orders it by score, then later token
// (sortable(score) << 32 | token); equal keys (the same token in two heads) go to the
// lower head, the order a stable sort of the head-major list gives.
type poolToken struct {
	key  uint64
	head int
}

func (x poolToken) better(y poolToken) bool {
	return x.key > y.key || (x.key == y.key && x.head < y.head)
}

// LUKVAllocator reads each head's budget from an LU-KV budget curve (kvpress's online
// rounding, BudgetCurve.KeepCounts).
type LUKVAllocator struct {
	Curve *BudgetCurve
}

func (LUKVAllocator) Name() string { return "lukv" }

// Counts reads the curve at the length of the first head (kvpress's LUKVPress keeps
// one length per layer) and clamps each head's count to its own length.
func (a LUKVAllocator) Counts(layer, numLayers int, scores [][]float32, ratio float64) ([]int, error) {
	T := 0
	if len(scores) > 0 {
		T = len(scores[0])
	}
	counts, err := a.CountsFor(layer, numLayers, len(scores), T, ratio)
	if err != nil {
		return nil, err
	}
	for h, s := range scores {
		counts[h] = max(0, min(len(s), counts[h]))
	}
	return counts, nil
}

func (a LUKVAllocator) CountsFor(layer, numLayers, heads, T int, ratio float64) ([]int, error) {
	if err := checkRatio(ratio); err != nil {
		return nil, err
	}
	if a.Curve == nil {
		return nil, fmt.Errorf("allocator lukv needs a budget curve")
	}
	if err := a.Curve.CheckFits(numLayers, heads); err != nil {
		return nil, err
	}
	if ratio == 0 {
		return UniformAllocator{}.CountsFor(layer, numLayers, heads, T, 0)
	}
	counts, err := a.Curve.KeepCounts(layer, ratio, T)
	if err != nil {
		return nil, err
	}
	for h := range counts {
		counts[h] = max(0, min(T, counts[h]))
	}
	return counts, nil
}
