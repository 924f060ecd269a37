package eviction

import (
	"fmt"
	"math"
	"slices"
)

// The per-question, per-head mathematics of LU-KV's offline profiling (LUKV.md, steps
// 1-3): oracle importance from future attention, the scorer's eviction order, the
// cumulative loss along that order and its hull-relaxed marginal costs.

// NormalizeValueOutputNorms divides one layer's value-output norms by their sum over
// the layer, in place, as the authors' released code does: norms[q][j] = ||v_j W_O^(q)||
// for query head q and context position j, shape [Nq][T], where W_O^(q) is q's slice of
// the output projection and v_j the value of q's KV head at j. After the call the norms
// of the whole layer (all query heads, all positions) sum to 1, which puts importances
// of different layers on a comparable scale before the global greedy compares them. A
// layer whose norms sum to 0 is left as is. Negative or non-finite norms are an error.
func NormalizeValueOutputNorms(norms [][]float64) error {
	var total float64
	for q, row := range norms {
		for j, n := range row {
			if n < 0 || math.IsNaN(n) || math.IsInf(n, 0) {
				return fmt.Errorf("eviction: value-output norm [%d][%d] = %v: want finite and >= 0", q, j, n)
			}
			total += n
		}
	}
	if total == 0 {
		return nil
	}
	for _, row := range norms {
		for j := range row {
			row[j] /= total
		}
	}
	return nil
}

// OracleImportance is LU-KV's long-horizon importance of the T context tokens of one KV
// head:
//
//	I[j] = max over query heads g of the KV group, max over decode steps k, of a[g][k][j] * norms[g][j]
//
// attn is [G][K][>=T]: for each of the G query heads that share the KV head, the
// attention (softmax probabilities) that the query of each of the K future decode steps
// pays to every key it sees; only the first T entries of a row (the context) are read,
// so rows may also cover the question and the tokens generated so far. Only decode steps
// belong in attn, not the forward pass over the question. norms is [G][T], the
// value-output norms of the same query heads, already normalised per layer (see
// NormalizeValueOutputNorms). With no decode steps every importance is 0. The result is
// [T]. Short rows, ragged shapes and non-finite values are errors.
func OracleImportance(attn [][][]float64, norms [][]float64) ([]float64, error) {
	if len(attn) != len(norms) {
		return nil, fmt.Errorf("eviction: oracle importance: attention for %d query heads, norms for %d", len(attn), len(norms))
	}
	if len(norms) == 0 {
		return nil, fmt.Errorf("eviction: oracle importance: no query heads")
	}
	T := len(norms[0])
	imp := make([]float64, T)
	for g, steps := range attn {
		nrm := norms[g]
		if len(nrm) != T {
			return nil, fmt.Errorf("eviction: oracle importance: query head %d has %d norms, head 0 has %d", g, len(nrm), T)
		}
		for k, row := range steps {
			if len(row) < T {
				return nil, fmt.Errorf("eviction: oracle importance: query head %d step %d attends to %d keys, fewer than the %d context tokens", g, k, len(row), T)
			}
			for j := 0; j < T; j++ {
				v := row[j] * nrm[j]
				if math.IsNaN(v) || math.IsInf(v, 0) {
					return nil, fmt.Errorf("eviction: oracle importance: query head %d step %d token %d: attention %v times norm %v is not finite", g, k, j, row[j], nrm[j])
				}
				imp[j] = max(imp[j], v)
			}
		}
	}
	return imp, nil
}

// EvictionOrder returns the positions of one head's evictable tokens in the order the
// scorer evicts them: every position except the first sink and the last window ones
// (those are protected and never evicted), sorted by score ascending. Tie rule: among
// equal scores the lower (older) position is evicted first, so the more recent token is
// kept, the rule topK uses online. When sink+window >= T nothing is evictable and the
// result is empty. A NaN score is an error (it has no rank); ±Inf scores are ranked.
func EvictionOrder(scores []float32, sink, window int) ([]int, error) {
	if sink < 0 || window < 0 {
		return nil, fmt.Errorf("eviction: sink %d and window %d must be >= 0", sink, window)
	}
	T := len(scores)
	lo, hi := min(sink, T), max(0, T-window) // evictable positions are [lo, hi)
	if lo >= hi {
		return []int{}, nil
	}
	order := make([]int, 0, hi-lo)
	for j := lo; j < hi; j++ {
		if math.IsNaN(float64(scores[j])) {
			return nil, fmt.Errorf("eviction: score of token %d is NaN", j)
		}
		order = append(order, j)
	}
	slices.SortFunc(order, func(a, b int) int {
		if sa, sb := scores[a], scores[b]; sa != sb {
			if sa < sb {
				return -1
			}
			return 1
		}
		return a - b
	})
	return order, nil
}

// HeadProfile is one head's eviction profile for one question.
type HeadProfile struct {
	T          int       // tokens in the head, sink and window included
	Order      []int     // [E] evictable positions, first evicted first (EvictionOrder)
	Cumulative []float64 // [E+1] c(k): importance lost after the first k evictions; c(0) = 0
	Costs      []float64 // [E] hull-relaxed marginal cost of the k-th eviction, non-decreasing
}

// ProfileHead builds one head's profile from the scorer's scores [T] and the oracle
// importance [T] of one question: the eviction order, the cumulative loss
// c(k) = sum of importance over the first k evicted tokens, and the marginal costs of
// the convex-hull relaxation (MarginalCosts of c's increments). Importance must be
// finite; lengths must match.
func ProfileHead(scores []float32, importance []float64, sink, window int) (HeadProfile, error) {
	if len(scores) != len(importance) {
		return HeadProfile{}, fmt.Errorf("eviction: %d scores but %d importances", len(scores), len(importance))
	}
	order, err := EvictionOrder(scores, sink, window)
	if err != nil {
		return HeadProfile{}, err
	}
	inc := make([]float64, len(order))
	cum := make([]float64, len(order)+1)
	for k, j := range order {
		x := importance[j]
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return HeadProfile{}, fmt.Errorf("eviction: importance of token %d is %v", j, x)
		}
		inc[k] = x
		cum[k+1] = cum[k] + x
	}
	return HeadProfile{T: len(scores), Order: order, Cumulative: cum, Costs: MarginalCosts(inc)}, nil
}
