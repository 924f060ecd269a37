package eviction

import (
	"container/heap"
	"fmt"
	"math"
)

// LU-KV's offline allocator (LUKV.md, profiling step 4): the marginal-utility greedy.
//
// Every head h holds T_h tokens and may evict its evictable tokens in its scorer's
// order; the k-th eviction costs x_h[k] (hull-relaxed, so x_h is non-decreasing). Given a
// global number E of evictions, the relaxed problem is
//
//	minimise sum_h X_h(e_h)  subject to  sum_h e_h = E,  0 <= e_h <= U_h,
//
// where X_h(e) = x_h[0] + ... + x_h[e-1] is convex in e and U_h is the most head h may
// evict without going below its floor. For a separable convex objective, taking the
// cheapest next eviction over all heads, one at a time, is optimal for every E at once
// (an exchange argument: any allocation that skips a cheaper eviction for a dearer one
// can swap them without raising the cost). So one greedy pass gives nested optimal
// allocations for all 99 ratios. The original (unrelaxed) losses c_h are not convex; the
// greedy solves the relaxation, and the tests measure how far that is from the
// unrelaxed optimum.

// CurveRatios is the number of rows of a budget curve: global ratios 1%..99%.
const CurveRatios = 99

// DefaultMinKeepFraction is the share of a head's tokens it always keeps (the released
// code's 1%).
const DefaultMinKeepFraction = 0.01

// CurveVersion names the solver and file conventions of the curves this package writes
// (stored in CurveMeta.Version).
const CurveVersion = "lukv-curve/1"

// KeepFloor is the fewest tokens a head of T tokens may keep:
// max(ceil(minKeepFraction*T), sink+window), at most T. The released code uses
// round(0.01*T) instead of the ceiling; the two differ by at most one token. The
// product is rounded to 1e-9 before the ceiling, so 0.01*4100 counts as 41, not 42.
func KeepFloor(T, sink, window int, minKeepFraction float64) int {
	x := minKeepFraction * float64(T)
	if r := math.Round(x); math.Abs(x-r) <= 1e-9*max(1, math.Abs(x)) {
		x = r
	}
	f := max(int(math.Ceil(x)), sink+window, 0)
	return min(f, T)
}

// HeadCosts is one head's input to the solver.
type HeadCosts struct {
	T     int       // tokens in the head, sink and window included: the prune ratio's denominator
	Costs []float64 // [E <= T] marginal cost of the head's 1st, 2nd, ... eviction; non-decreasing
	Floor int       // the head never keeps fewer than Floor tokens (KeepFloor); 0 <= Floor <= T
}

// limit is the most evictions the head may make.
func (hc HeadCosts) limit() int { return max(0, min(len(hc.Costs), hc.T-hc.Floor)) }

// validateHeads checks the solver's input; i names the head in errors.
func validateHeads(heads []HeadCosts) error {
	for i, hc := range heads {
		if hc.T < 1 {
			return fmt.Errorf("eviction: head %d has %d tokens, want >= 1", i, hc.T)
		}
		if len(hc.Costs) > hc.T {
			return fmt.Errorf("eviction: head %d has %d eviction costs for %d tokens", i, len(hc.Costs), hc.T)
		}
		if hc.Floor < 0 || hc.Floor > hc.T {
			return fmt.Errorf("eviction: head %d floor %d outside [0, %d]", i, hc.Floor, hc.T)
		}
		for k, x := range hc.Costs {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				return fmt.Errorf("eviction: head %d eviction %d costs %v", i, k, x)
			}
			if k > 0 && x < hc.Costs[k-1] {
				return fmt.Errorf("eviction: head %d costs decrease at eviction %d (%v after %v); relax them with MarginalCosts", i, k, x, hc.Costs[k-1])
			}
		}
	}
	return nil
}

// headHeap is a min-heap of head indices keyed by the cost of each head's next
// eviction; equal costs pop the lower head index first, so the solver is deterministic.
type headHeap struct {
	idx []int32   // heap order
	key []float64 // [heads] next eviction cost, indexed by head
}

func (h *headHeap) Len() int { return len(h.idx) }
func (h *headHeap) Less(i, j int) bool {
	a, b := h.idx[i], h.idx[j]
	if ka, kb := h.key[a], h.key[b]; ka != kb {
		return ka < kb
	}
	return a < b
}
func (h *headHeap) Swap(i, j int) { h.idx[i], h.idx[j] = h.idx[j], h.idx[i] }
func (h *headHeap) Push(x any)    { h.idx = append(h.idx, x.(int32)) }
func (h *headHeap) Pop() any {
	x := h.idx[len(h.idx)-1]
	h.idx = h.idx[:len(h.idx)-1]
	return x
}

// greedy is the solver's state: how many tokens each head has evicted so far.
type greedy struct {
	heads   []HeadCosts
	limit   []int // [heads] most evictions allowed
	evicted []int // [heads] evictions so far
	h       headHeap
}

func newGreedy(heads []HeadCosts) *greedy {
	g := &greedy{heads: heads, limit: make([]int, len(heads)), evicted: make([]int, len(heads))}
	g.h.key = make([]float64, len(heads))
	for i, hc := range heads {
		g.limit[i] = hc.limit()
		if g.limit[i] > 0 {
			g.h.key[i] = hc.Costs[0]
			g.h.idx = append(g.h.idx, int32(i))
		}
	}
	heap.Init(&g.h)
	return g
}

// next makes the cheapest eviction and returns its head, or -1 when every head is at
// its floor or out of evictable tokens.
func (g *greedy) next() int {
	if len(g.h.idx) == 0 {
		return -1
	}
	i := int(g.h.idx[0])
	g.evicted[i]++
	if e := g.evicted[i]; e < g.limit[i] {
		g.h.key[i] = g.heads[i].Costs[e]
		heap.Fix(&g.h, 0)
	} else {
		heap.Pop(&g.h)
	}
	return i
}

// solveRows runs the greedy over heads and returns [CurveRatios][len(heads)] prune
// ratios, row-major. Row i is recorded when the number of evictions first reaches
// ceil((i+1)/100 * sum_h T_h), so the global ratio is (i+1)/100 up to one token. When
// the floors stop the greedy before a row's target, that row and every later one hold
// the final state (the most the floors allow), so rows stay nested. (The released
// step2 script targets round((i+1)/100 * total) instead of the ceiling: at most one
// eviction apart.)
func solveRows(heads []HeadCosts) []float64 {
	n := len(heads)
	rows := make([]float64, CurveRatios*n)
	total := 0
	for _, hc := range heads {
		total += hc.T
	}
	g := newGreedy(heads)
	record := func(row int) {
		r := rows[row*n : (row+1)*n]
		for i, hc := range heads {
			r[i] = float64(g.evicted[i]) / float64(hc.T)
		}
	}
	row, done := 0, 0
	for row < CurveRatios {
		target := ((row+1)*total + 99) / 100
		if done >= target {
			record(row)
			row++
			continue
		}
		if g.next() < 0 {
			break
		}
		done++
	}
	for ; row < CurveRatios; row++ {
		record(row)
	}
	return rows
}

// checkHeadGrid checks that heads has one entry per (layer, KV head).
func checkHeadGrid(heads []HeadCosts, layers, kvHeads int) error {
	if layers < 1 || kvHeads < 1 {
		return fmt.Errorf("eviction: %d layers x %d KV heads: want both >= 1", layers, kvHeads)
	}
	if len(heads) != layers*kvHeads {
		return fmt.Errorf("eviction: %d heads for %d layers x %d KV heads", len(heads), layers, kvHeads)
	}
	return validateHeads(heads)
}

// SolveGlobal runs LU-KV's greedy across all layers at once (the released default):
// heads is [layers*kvHeads], head (l, h) at l*kvHeads+h. It returns a budget curve whose
// row i holds every head's prune ratio evicted_h/T_h when the global ratio first reaches
// (i+1)/100 of sum_h T_h. Meta is left for the caller.
func SolveGlobal(heads []HeadCosts, layers, kvHeads int) (*BudgetCurve, error) {
	if err := checkHeadGrid(heads, layers, kvHeads); err != nil {
		return nil, err
	}
	c := NewBudgetCurve(layers, kvHeads)
	c.Prune = solveRows(heads)
	return c, nil
}

// SolvePerLayer is the per-layer variant: each layer's heads share that layer's budget,
// solved separately at the same ratio, so every layer prunes (i+1)/100 of its own
// tokens in row i (up to one token, and unless its floors stop it first).
func SolvePerLayer(heads []HeadCosts, layers, kvHeads int) (*BudgetCurve, error) {
	if err := checkHeadGrid(heads, layers, kvHeads); err != nil {
		return nil, err
	}
	c := NewBudgetCurve(layers, kvHeads)
	for l := 0; l < layers; l++ {
		rows := solveRows(heads[l*kvHeads : (l+1)*kvHeads])
		for i := 0; i < CurveRatios; i++ {
			copy(c.Prune[(i*layers+l)*kvHeads:(i*layers+l+1)*kvHeads], rows[i*kvHeads:(i+1)*kvHeads])
		}
	}
	return c, nil
}

// ProfileOptions configures QuestionCurve.
type ProfileOptions struct {
	Sink, Window    int     // protected first and last tokens of every head
	MinKeepFraction float64 // floor share of T per head (DefaultMinKeepFraction)
	PerLayer        bool    // solve each layer separately instead of globally
}

// QuestionCurve is the whole offline solve for one question: scores and importance are
// [L][H][T] (scorer scores after the context's prefill; oracle importance from the
// question's decode). Every head is profiled (ProfileHead), floored (KeepFloor) and the
// greedy runs globally or per layer. Meta gets Sink, Window, ContextTokens = T,
// Questions = 1 and Version; the caller fills the rest. Average the curves of all
// questions with AverageCurves.
func QuestionCurve(scores [][][]float32, importance [][][]float64, opt ProfileOptions) (*BudgetCurve, error) {
	L := len(scores)
	if L == 0 || len(scores[0]) == 0 {
		return nil, fmt.Errorf("eviction: question curve: empty scores")
	}
	H, T := len(scores[0]), len(scores[0][0])
	if len(importance) != L {
		return nil, fmt.Errorf("eviction: question curve: scores for %d layers, importance for %d", L, len(importance))
	}
	heads := make([]HeadCosts, 0, L*H)
	for l := range scores {
		if len(scores[l]) != H || len(importance[l]) != H {
			return nil, fmt.Errorf("eviction: question curve: layer %d has %d scored and %d importance heads, want %d", l, len(scores[l]), len(importance[l]), H)
		}
		for h := range scores[l] {
			if len(scores[l][h]) != T {
				return nil, fmt.Errorf("eviction: question curve: layer %d head %d has %d tokens, want %d", l, h, len(scores[l][h]), T)
			}
			p, err := ProfileHead(scores[l][h], importance[l][h], opt.Sink, opt.Window)
			if err != nil {
				return nil, fmt.Errorf("layer %d head %d: %w", l, h, err)
			}
			heads = append(heads, HeadCosts{T: T, Costs: p.Costs, Floor: KeepFloor(T, opt.Sink, opt.Window, opt.MinKeepFraction)})
		}
	}
	solve := SolveGlobal
	if opt.PerLayer {
		solve = SolvePerLayer
	}
	c, err := solve(heads, L, H)
	if err != nil {
		return nil, err
	}
	c.Meta = CurveMeta{Sink: opt.Sink, Window: opt.Window, Questions: 1, ContextTokens: T, Version: CurveVersion}
	return c, nil
}
