package eviction

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// randHead draws one head's scores and importance: heavy-tailed importance and a scorer
// whose log-noise level sigma sets how imperfect it is (0 is the oracle's own order).
func randHead(r *rand.Rand, T int, sigma float64) ([]float32, []float64) {
	imp := make([]float64, T)
	s := make([]float32, T)
	for j := range imp {
		e := r.ExpFloat64()
		imp[j] = e * e * e
		s[j] = float32(imp[j] * math.Exp(sigma*r.NormFloat64()))
	}
	return s, imp
}

// instance is a random multi-head problem with each head's true and relaxed losses.
type instance struct {
	heads []HeadCosts
	cum   [][]float64 // [head][k] true cumulative loss c_h(k)
	relax [][]float64 // [head][k] relaxed cumulative loss X_h(k) = sum of the first k costs
}

func randInstance(r *rand.Rand, nHeads, T, sink, window int, minKeep float64) instance {
	var in instance
	for range nHeads {
		s, imp := randHead(r, T, 2*r.Float64())
		p, err := ProfileHead(s, imp, sink, window)
		if err != nil {
			panic(err)
		}
		x := make([]float64, len(p.Costs)+1)
		for k, c := range p.Costs {
			x[k+1] = x[k] + c
		}
		in.heads = append(in.heads, HeadCosts{T: T, Costs: p.Costs, Floor: KeepFloor(T, sink, window, minKeep)})
		in.cum = append(in.cum, p.Cumulative)
		in.relax = append(in.relax, x)
	}
	return in
}

// dpOptimum returns, for every total E = 0..sum U_h, the least sum_h f_h(e_h) over
// eviction counts with sum e_h = E and 0 <= e_h <= U_h (f = cum or relax): exact DP.
func dpOptimum(in instance, f [][]float64) []float64 {
	best := []float64{0}
	for h, hc := range in.heads {
		U := hc.limit()
		next := make([]float64, len(best)+U)
		for i := range next {
			next[i] = math.Inf(1)
		}
		for e, v := range best {
			for k := 0; k <= U; k++ {
				next[e+k] = min(next[e+k], v+f[h][k])
			}
		}
		best = next
	}
	return best
}

// gapStats summarises how far the greedy's allocation (optimal for the relaxed losses)
// is from the optimum of the true, unrelaxed losses, over every instance and every
// total number of evictions E >= 1 with a positive optimum.
type gapStats struct {
	cases        int
	meanRel      float64 // mean of (true loss of greedy - true optimum) / true optimum
	maxRel       float64
	bigCases     int     // cases with E >= 20% of the evictions the floors allow
	meanRelBig   float64 // the relative gap over those cases only (small E has tiny optima)
	maxRelBig    float64
	meanShare    float64 // mean of (true loss of greedy - true optimum) / (loss of evicting all it may)
	maxShare     float64
	exactShare   float64 // share of cases where the greedy hits the true optimum
	relaxedExact bool    // the greedy's relaxed loss equalled the relaxed DP optimum everywhere
}

func (g gapStats) String() string {
	return fmt.Sprintf("%d cases: relative gap mean %.3f%% max %.2f%%; with E >= 20%% of the room (%d cases) mean %.3f%% max %.2f%%; "+
		"gap / total evictable loss mean %.4f%% max %.3f%%; greedy exactly optimal in %.1f%%",
		g.cases, 100*g.meanRel, 100*g.maxRel, g.bigCases, 100*g.meanRelBig, 100*g.maxRelBig, 100*g.meanShare, 100*g.maxShare, 100*g.exactShare)
}

// measureRelaxationGap runs the greedy on n random instances of the given size and
// checks it against exact DP optima of the relaxed and the true problem.
func measureRelaxationGap(t testing.TB, r *rand.Rand, n int, size func() (heads, T, sink, window int)) gapStats {
	t.Helper()
	st := gapStats{relaxedExact: true}
	exact := 0
	for trial := 0; trial < n; trial++ {
		H, T, sink, window := size()
		in := randInstance(r, H, T, sink, window, DefaultMinKeepFraction)
		relaxOpt, trueOpt := dpOptimum(in, in.relax), dpOptimum(in, in.cum)
		room, full := len(relaxOpt)-1, 0.0
		for h, hc := range in.heads {
			full += in.cum[h][hc.limit()]
		}
		g := newGreedy(in.heads)
		for E := 0; ; E++ {
			var relaxed, truth float64
			for h, e := range g.evicted {
				relaxed += in.relax[h][e]
				truth += in.cum[h][e]
			}
			if !near(relaxed, relaxOpt[E], relaxOpt[E]) {
				st.relaxedExact = false
				t.Errorf("trial %d E %d: greedy's relaxed loss %v, relaxed optimum %v (evicted %v)", trial, E, relaxed, relaxOpt[E], g.evicted)
			}
			if relaxOpt[E] > trueOpt[E]+1e-9*max(1, trueOpt[E]) {
				t.Errorf("trial %d E %d: relaxed optimum %v above the true one %v: the hull is not a minorant", trial, E, relaxOpt[E], trueOpt[E])
			}
			if truth < trueOpt[E]-1e-9*max(1, trueOpt[E]) {
				t.Errorf("trial %d E %d: greedy's true loss %v below the DP optimum %v: DP is wrong", trial, E, truth, trueOpt[E])
			}
			if E > 0 && trueOpt[E] > 0 {
				rel := max(0, truth-trueOpt[E]) / trueOpt[E]
				st.cases++
				st.meanRel += rel
				st.maxRel = max(st.maxRel, rel)
				if 5*E >= room {
					st.bigCases++
					st.meanRelBig += rel
					st.maxRelBig = max(st.maxRelBig, rel)
				}
				share := max(0, truth-trueOpt[E]) / full
				st.meanShare += share
				st.maxShare = max(st.maxShare, share)
				if rel <= 1e-9 {
					exact++
				}
			}
			if g.next() < 0 {
				if E+1 != len(relaxOpt) {
					t.Errorf("trial %d: greedy stopped after %d evictions, the floors allow %d", trial, E, len(relaxOpt)-1)
				}
				break
			}
		}
	}
	if st.cases > 0 {
		st.meanRel /= float64(st.cases)
		st.meanShare /= float64(st.cases)
		st.meanRelBig /= float64(max(1, st.bigCases))
		st.exactShare = float64(exact) / float64(st.cases)
	}
	return st
}

// TestGreedyIsRelaxedOptimum checks that the greedy's allocation is the exact optimum of
// the relaxed problem at every total, and reports its gap to the unrelaxed optimum.
func TestGreedyIsRelaxedOptimum(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	small := measureRelaxationGap(t, r, 200, func() (int, int, int, int) {
		return 2 + r.IntN(3), 1 + r.IntN(8), r.IntN(2), r.IntN(2)
	})
	t.Logf("relaxation gap, 200 instances of 2-4 heads x T<=8: %v", small)
	medium := measureRelaxationGap(t, r, 20, func() (int, int, int, int) { return 8, 128, 4, 1 })
	t.Logf("relaxation gap, 20 instances of 8 heads x T=128 (sink 4, window 1): %v", medium)
	for _, s := range []gapStats{small, medium} {
		if !s.relaxedExact || s.cases == 0 || s.meanRel < 0 || s.maxRel < s.meanRel || s.exactShare > 1 {
			t.Errorf("implausible gap statistics: %+v", s)
		}
	}
}

// solveFixture builds random heads for an L x H model.
func solveFixture(r *rand.Rand, L, H, T, sink, window int, minKeep float64) []HeadCosts {
	heads := make([]HeadCosts, 0, L*H)
	for range L * H {
		s, imp := randHead(r, T, 2*r.Float64())
		p, err := ProfileHead(s, imp, sink, window)
		if err != nil {
			panic(err)
		}
		heads = append(heads, HeadCosts{T: T, Costs: p.Costs, Floor: KeepFloor(T, sink, window, minKeep)})
	}
	return heads
}

// checkCurve asserts the properties every solved curve has: nested rows, floors and
// protected tokens respected, each group's total exactly at its target (or at the
// floors' limit), and the optimality (exchange) condition of a convex separable
// problem: no head could take a cheaper eviction than one another head has made.
func checkCurve(t *testing.T, c *BudgetCurve, heads []HeadCosts, sink, window int, groups [][]int) {
	t.Helper()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	n := len(heads)
	evicted := func(i, head int) int {
		x := c.Prune[i*n+head] * float64(heads[head].T)
		e := int(math.Round(x))
		if math.Abs(x-float64(e)) > 1e-6 {
			t.Fatalf("row %d head %d: prune*T = %v is not a whole number of tokens", i, head, x)
		}
		return e
	}
	for i := 0; i < CurveRatios; i++ {
		for hd, hc := range heads {
			e := evicted(i, hd)
			if i > 0 && e < evicted(i-1, hd) {
				t.Fatalf("row %d head %d: prune ratio falls from the previous row", i, hd)
			}
			if hc.T-e < hc.Floor || hc.T-e < min(hc.T, sink+window) || e > len(hc.Costs) {
				t.Fatalf("row %d head %d keeps %d of %d (floor %d, sink+window %d)", i, hd, hc.T-e, hc.T, hc.Floor, sink+window)
			}
		}
		for _, g := range groups {
			total, done, room := 0, 0, 0
			for _, hd := range g {
				total += heads[hd].T
				done += evicted(i, hd)
				room += heads[hd].limit()
			}
			target := ((i+1)*total + 99) / 100
			if done != min(target, room) {
				t.Fatalf("row %d group %v: %d evicted, target %d (room %d)", i, g, done, target, room)
			}
			for _, a := range g {
				ea := evicted(i, a)
				if ea >= heads[a].limit() {
					continue
				}
				for _, b := range g {
					if eb := evicted(i, b); eb > 0 && heads[a].Costs[ea] < heads[b].Costs[eb-1] {
						t.Fatalf("row %d: head %d's next eviction costs %v, less than head %d's last (%v)", i, a, heads[a].Costs[ea], b, heads[b].Costs[eb-1])
					}
				}
			}
		}
	}
}

func TestSolveGlobal(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	const L, H, T, sink, window = 3, 4, 50, 2, 3
	heads := solveFixture(r, L, H, T, sink, window, DefaultMinKeepFraction)
	c, err := SolveGlobal(heads, L, H)
	if err != nil {
		t.Fatal(err)
	}
	all := make([]int, L*H)
	for i := range all {
		all[i] = i
	}
	checkCurve(t, c, heads, sink, window, [][]int{all})
	// The curve read back online gives the same per-head budgets.
	for _, rho := range []float64{0.1, 0.5, 0.8, 0.9} {
		for l := 0; l < L; l++ {
			keep, err := c.KeepCounts(l, rho, T)
			if err != nil {
				t.Fatal(err)
			}
			row, _ := c.Row(rho)
			for h, k := range keep {
				if want := T - int(math.Round(row[l*H+h]*T)); k != want {
					t.Fatalf("rho %v layer %d head %d: KeepCounts %d, curve says %d", rho, l, h, k, want)
				}
			}
		}
	}
}

func TestSolvePerLayer(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	const L, H, T, sink, window = 3, 4, 40, 1, 1
	heads := solveFixture(r, L, H, T, sink, window, DefaultMinKeepFraction)
	c, err := SolvePerLayer(heads, L, H)
	if err != nil {
		t.Fatal(err)
	}
	var groups [][]int
	for l := 0; l < L; l++ {
		var g []int
		for h := 0; h < H; h++ {
			g = append(g, l*H+h)
		}
		groups = append(groups, g)
	}
	checkCurve(t, c, heads, sink, window, groups)
}

// TestSolveFloors: with a 30% floor no head may prune more than 70%, so the rows past
// 70% repeat the fullest state the floors allow.
func TestSolveFloors(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	const L, H, T = 2, 3, 20
	heads := solveFixture(r, L, H, T, 1, 1, 0.3)
	c, err := SolveGlobal(heads, L, H)
	if err != nil {
		t.Fatal(err)
	}
	all := []int{0, 1, 2, 3, 4, 5}
	checkCurve(t, c, heads, 1, 1, [][]int{all})
	for i := 69; i < CurveRatios; i++ {
		for hd := range heads {
			if got := c.Prune[i*L*H+hd]; got != 0.7 {
				t.Fatalf("row %d head %d prunes %v, want the floor's 0.7", i, hd, got)
			}
		}
	}
	if KeepFloor(4100, 4, 1, 0.01) != 41 || KeepFloor(4096, 4, 1, 0.01) != 41 || KeepFloor(100, 4, 1, 0.01) != 5 || KeepFloor(3, 4, 1, 0.01) != 3 {
		t.Errorf("KeepFloor: %d %d %d %d", KeepFloor(4100, 4, 1, 0.01), KeepFloor(4096, 4, 1, 0.01), KeepFloor(100, 4, 1, 0.01), KeepFloor(3, 4, 1, 0.01))
	}
}

// TestSolveTieRule: identical heads take turns, the lower index first.
func TestSolveTieRule(t *testing.T) {
	costs := []float64{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}
	heads := []HeadCosts{{T: 10, Costs: costs}, {T: 10, Costs: costs}}
	g := newGreedy(heads)
	var seq []int
	for h := g.next(); h >= 0; h = g.next() {
		seq = append(seq, h)
	}
	// Equal keys pop the lower head: head 0 drains first.
	if len(seq) != 20 || seq[0] != 0 || seq[9] != 0 || seq[10] != 1 {
		t.Errorf("eviction sequence %v", seq)
	}
	heads = []HeadCosts{{T: 4, Costs: []float64{1, 3}}, {T: 4, Costs: []float64{1, 2}}}
	g = newGreedy(heads)
	seq = seq[:0]
	for h := g.next(); h >= 0; h = g.next() {
		seq = append(seq, h)
	}
	if fmt.Sprint(seq) != "[0 1 1 0]" {
		t.Errorf("eviction sequence %v, want [0 1 1 0]", seq)
	}
}

func TestSolveErrors(t *testing.T) {
	ok := HeadCosts{T: 4, Costs: []float64{1, 2}, Floor: 1}
	cases := []struct {
		name  string
		heads []HeadCosts
		L, H  int
		want  string
	}{
		{"grid", []HeadCosts{ok}, 1, 2, "1 heads for 1 layers x 2"},
		{"zero layers", nil, 0, 1, "want both >= 1"},
		{"decreasing", []HeadCosts{{T: 4, Costs: []float64{2, 1}}}, 1, 1, "costs decrease"},
		{"nan", []HeadCosts{{T: 4, Costs: []float64{math.NaN()}}}, 1, 1, "costs NaN"},
		{"floor", []HeadCosts{{T: 4, Floor: 5}}, 1, 1, "floor 5"},
		{"too many costs", []HeadCosts{{T: 1, Costs: []float64{1, 2}}}, 1, 1, "2 eviction costs for 1 tokens"},
		{"empty head", []HeadCosts{{T: 0}}, 1, 1, "0 tokens"},
	}
	for _, c := range cases {
		for _, solve := range []func([]HeadCosts, int, int) (*BudgetCurve, error){SolveGlobal, SolvePerLayer} {
			_, err := solve(c.heads, c.L, c.H)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
			}
		}
	}
}

// TestQuestionCurve: a head whose importance sits on a few tokens its scorer ranks
// perfectly is cheap to prune; a head with flat importance and a random scorer is not.
// LU-KV must prune the first more.
func TestQuestionCurve(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	const T = 64
	scores := [][][]float32{{make([]float32, T), make([]float32, T)}}
	imp := [][][]float64{{make([]float64, T), make([]float64, T)}}
	for j := 0; j < T; j++ {
		if j%16 == 5 {
			imp[0][0][j] = 10
		}
		scores[0][0][j] = float32(imp[0][0][j]) + float32(r.Float64())*0.01
		imp[0][1][j] = 1 + 0.1*r.Float64()
		scores[0][1][j] = float32(r.Float64())
	}
	c, err := QuestionCurve(scores, imp, ProfileOptions{Sink: 4, Window: 1, MinKeepFraction: DefaultMinKeepFraction})
	if err != nil {
		t.Fatal(err)
	}
	row, _ := c.Row(0.5)
	if row[0] <= row[1] {
		t.Errorf("at 50%% the sparse, well-ranked head prunes %v, the flat one %v", row[0], row[1])
	}
	if m := c.Meta; m.Sink != 4 || m.Window != 1 || m.Questions != 1 || m.ContextTokens != T || m.Version != CurveVersion {
		t.Errorf("meta %+v", m)
	}
	per, err := QuestionCurve(scores, imp, ProfileOptions{Sink: 4, Window: 1, MinKeepFraction: DefaultMinKeepFraction, PerLayer: true})
	if err != nil {
		t.Fatal(err)
	}
	// One layer: per-layer and global solve the same problem.
	for k := range c.Prune {
		if c.Prune[k] != per.Prune[k] {
			t.Fatalf("one layer: global and per-layer differ at %d", k)
		}
	}
	if _, err := QuestionCurve(scores, imp[:0], ProfileOptions{}); err == nil {
		t.Error("missing importance accepted")
	}
	bad := [][][]float32{{make([]float32, T), make([]float32, T-1)}}
	if _, err := QuestionCurve(bad, imp, ProfileOptions{}); err == nil {
		t.Error("ragged heads accepted")
	}
}

// benchHeads builds n heads of T tokens with random non-decreasing costs.
func benchHeads(n, T int) []HeadCosts {
	r := rand.New(rand.NewPCG(17, 18))
	heads := make([]HeadCosts, n)
	for i := range heads {
		inc := make([]float64, T-5)
		for k := range inc {
			inc[k] = r.ExpFloat64() * r.ExpFloat64()
		}
		heads[i] = HeadCosts{T: T, Costs: MarginalCosts(inc), Floor: KeepFloor(T, 4, 1, DefaultMinKeepFraction)}
	}
	return heads
}

// BenchmarkGreedy times the global solve of a Llama-3.1-8B-sized profile (32 layers x 8
// KV heads = 256 heads): about 1M evictions at T=4096, 4M at T=16384.
func BenchmarkGreedy(b *testing.B) {
	for _, T := range []int{4096, 16384} {
		heads := benchHeads(256, T)
		evictions := 0
		for _, hc := range heads {
			evictions += hc.limit()
		}
		b.Run(fmt.Sprintf("heads=256/T=%d", T), func(b *testing.B) {
			for b.Loop() {
				if _, err := SolveGlobal(heads, 32, 8); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(evictions), "ns/eviction")
		})
	}
}
