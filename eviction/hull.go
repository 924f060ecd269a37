package eviction

// Convex-hull relaxation of a head's eviction loss (LUKV.md, profiling step 3).
//
// A head that evicts its tokens in the scorer's order (lowest-ranked first) loses
// c(k) = I[o_1] + ... + I[o_k] of oracle importance after k evictions. When the scorer
// is imperfect c is not convex: an important token ranked low makes c jump early. The
// allocator needs convex losses (non-decreasing marginal costs) for the greedy to be
// optimal, so LU-KV replaces c by its greatest convex minorant and charges every
// eviction inside a hull segment that segment's slope.

// LowerConvexHull returns the greatest convex minorant of the points (k, c[k]),
// k = 0..n (n = len(c)-1), evaluated at every integer k: the largest convex function
// g with g(k) <= c[k] for all k. Equivalently
//
//	g(k) = min over i <= k <= j of the chord through (i, c[i]) and (j, c[j]) at k,
//
// so g(0) = c[0], g(n) = c[n], and g is linear between consecutive hull vertices. The
// vertices come from Andrew's monotone chain (a stack; a point is dropped when it lies
// on or above the chord of its neighbours), O(n). The result has the length of c; an
// empty c gives an empty result. Non-finite inputs give non-finite outputs.
func LowerConvexHull(c []float64) []float64 {
	n := len(c)
	g := make([]float64, n)
	if n == 0 {
		return g
	}
	hull := make([]int, 0, n) // indices of the hull's vertices, increasing
	for k := range c {
		for len(hull) >= 2 {
			a, b := hull[len(hull)-2], hull[len(hull)-1]
			// b lies on or above the chord a-k when slope(a,b) >= slope(b,k), written
			// without division: (c[b]-c[a])*(k-b) >= (c[k]-c[b])*(b-a).
			if (c[b]-c[a])*float64(k-b) >= (c[k]-c[b])*float64(b-a) {
				hull = hull[:len(hull)-1]
				continue
			}
			break
		}
		hull = append(hull, k)
	}
	g[0] = c[0]
	for v := 1; v < len(hull); v++ {
		a, b := hull[v-1], hull[v]
		slope := (c[b] - c[a]) / float64(b-a)
		for k := a + 1; k < b; k++ {
			g[k] = c[a] + slope*float64(k-a)
		}
		g[b] = c[b]
	}
	return g
}

// MarginalCosts returns the hull-relaxed cost of every eviction: given the increments
// x[k] = c(k+1) - c(k) of a cumulative loss, it returns the slopes of c's greatest
// convex minorant, one per increment, so that
//
//	MarginalCosts(x)[k] = LowerConvexHull(c)[k+1] - LowerConvexHull(c)[k]
//
// (up to rounding). These are the isotonic (non-decreasing) least-squares fit to x,
// computed by the pool-adjacent-violators algorithm (PAVA): a stack of blocks, each
// holding the sum and length of a run of increments; a new block merges with the block
// below it while that block's mean exceeds its own. Every increment then gets its
// block's mean. O(n) time. The result is exactly non-decreasing in floating point
// (block means are compared as stored), which the greedy solver relies on.
func MarginalCosts(increments []float64) []float64 {
	type block struct {
		sum  float64
		n    int
		mean float64
	}
	stack := make([]block, 0, len(increments))
	for _, x := range increments {
		b := block{sum: x, n: 1, mean: x}
		for len(stack) > 0 && stack[len(stack)-1].mean > b.mean {
			top := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			b.sum += top.sum
			b.n += top.n
			b.mean = b.sum / float64(b.n)
		}
		stack = append(stack, b)
	}
	out := make([]float64, 0, len(increments))
	for _, b := range stack {
		for range b.n {
			out = append(out, b.mean)
		}
	}
	return out
}
