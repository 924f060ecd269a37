package eviction

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
)

func randScores(r *rand.Rand, heads, T int) [][]float32 {
	s := make([][]float32, heads)
	for h := range s {
		s[h] = make([]float32, T)
		for j := range s[h] {
			s[h][j] = float32(r.Float64())
		}
	}
	return s
}

// allocKeep is what allocator a keeps of a layer's (already protected) scores: each
// head's top count tokens.
func allocKeep(a Allocator, layer, numLayers int, scores [][]float32, ratio float64) ([][]int, error) {
	counts, err := a.Counts(layer, numLayers, scores, ratio)
	if err != nil {
		return nil, err
	}
	return KeepTop(scores, counts), nil
}

func TestTopK(t *testing.T) {
	s := []float32{0.5, 0.9, 0.1, 0.9, 0.3}
	if got := topK(s, 2); !slices.Equal(got, []int{1, 3}) {
		t.Errorf("topK 2 = %v", got)
	}
	// Ties keep the later token.
	if got := topK([]float32{1, 1, 1, 1}, 2); !slices.Equal(got, []int{2, 3}) {
		t.Errorf("tie rule: %v, want [2 3]", got)
	}
	if got := topK(s, 9); len(got) != 5 {
		t.Errorf("topK past len: %v", got)
	}
}

// checkKeep asserts ascending, in-range, unique indices and that each kept set is the top
// of its head's scores (no dropped token scores above a kept one).
func checkKeep(t *testing.T, scores [][]float32, keep [][]int) {
	t.Helper()
	for h, idx := range keep {
		if !sort.IntsAreSorted(idx) {
			t.Fatalf("head %d: indices not ascending: %v", h, idx)
		}
		kept := map[int]bool{}
		minKept := float32(math.Inf(1))
		for _, j := range idx {
			if j < 0 || j >= len(scores[h]) || kept[j] {
				t.Fatalf("head %d: bad index %d", h, j)
			}
			kept[j] = true
			minKept = min(minKept, scores[h][j])
		}
		for j, s := range scores[h] {
			if !kept[j] && s > minKept {
				t.Fatalf("head %d: dropped token %d (score %v) above a kept one (%v)", h, j, s, minKept)
			}
		}
	}
}

func TestUniformAllocator(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	s := randScores(r, 4, 100)
	keep, err := allocKeep(UniformAllocator{}, 0, 2, s, 0.8)
	if err != nil {
		t.Fatal(err)
	}
	checkKeep(t, s, keep)
	for h := range keep {
		if len(keep[h]) != 20 {
			t.Errorf("head %d keeps %d, want 20", h, len(keep[h]))
		}
	}
	if _, err := (UniformAllocator{}).Counts(0, 2, s, 1); err == nil {
		t.Error("ratio 1: no error")
	}
}

// TestPyramidAllocator: budgets fall with depth from kvpress's max to its min, with the
// average at the uniform budget. Worked by hand for T 1000, rho 0.8, window 8, beta 20:
// max_capacity = 8 + 200; min_num = 200/20 = 10; max_num = 2*200 - 10 = 390; step
// (390-10)/7. A uniform budget (200 everywhere) fails it.
func TestPyramidAllocator(t *testing.T) {
	p := PyramidAllocator{Window: 8, Beta: 20}
	L, T := 8, 1000
	total, prev := 0, T+1
	var budgets []int
	for l := 0; l < L; l++ {
		b := p.LayerBudget(l, L, T, 0.8)
		if b >= prev {
			t.Errorf("layer %d budget %d not below layer %d's %d: budgets must fall with depth", l, b, l-1, prev)
		}
		prev = b
		total += b
		budgets = append(budgets, b)
	}
	want := []int{390, 336, 281, 227, 173, 119, 64, 10} // round(390 - l*380/7)
	if !slices.Equal(budgets, want) {
		t.Errorf("layer budgets %v, want %v", budgets, want)
	}
	// The pyramid keeps the average budget at T*(1-rho) per layer.
	if total < L*200-L || total > L*200+L {
		t.Errorf("total budget %d, want %d (±1 per layer)", total, L*200)
	}
	r := rand.New(rand.NewPCG(2, 2))
	s := randScores(r, 2, T)
	for _, l := range []int{0, L - 1} {
		keep, err := allocKeep(p, l, L, s, 0.8)
		if err != nil {
			t.Fatal(err)
		}
		checkKeep(t, s, keep)
		for h := range keep {
			if len(keep[h]) != want[l] {
				t.Errorf("layer %d head %d keeps %d, want %d", l, h, len(keep[h]), want[l])
			}
		}
	}
	// Where the pyramid does not fit (a single layer) every layer gets the uniform budget.
	if b := p.LayerBudget(0, 1, T, 0.8); b != 200 {
		t.Errorf("one layer: budget %d, want the uniform 200", b)
	}
}

func TestAdaKVAllocator(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	heads, T := 4, 200
	s := randScores(r, heads, T)
	// Head 0's scores dwarf the others: pooled selection favours it.
	for j := range s[0] {
		s[0][j] += 10
	}
	keep, err := allocKeep(AdaKVAllocator{Safeguard: 0.2}, 0, 1, s, 0.75)
	if err != nil {
		t.Fatal(err)
	}
	nKept := int(float64(T) * 0.25)
	total := 0
	for h := range keep {
		total += len(keep[h])
		if len(keep[h]) < int(float64(nKept)*0.2) {
			t.Errorf("head %d keeps %d, below its safeguard %d", h, len(keep[h]), int(float64(nKept)*0.2))
		}
	}
	if total != heads*nKept {
		t.Errorf("layer keeps %d tokens, want %d", total, heads*nKept)
	}
	if len(keep[0]) <= nKept {
		t.Errorf("high-scoring head keeps %d, want more than the uniform %d", len(keep[0]), nKept)
	}
	checkKeep(t, s, keep)
}

// TestTopKMatchesSort: the quickselect topK keeps exactly the tokens a full sort by
// (score descending, index descending) puts first, on random scores with many ties and
// NaNs, at every k.
func TestTopKMatchesSort(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for trial := 0; trial < 200; trial++ {
		n := 1 + r.IntN(300)
		s := make([]float32, n)
		for i := range s {
			switch r.IntN(10) {
			case 0:
				s[i] = float32(math.NaN())
			case 1, 2, 3:
				s[i] = float32(r.IntN(3)) // ties
			default:
				s[i] = float32(r.NormFloat64())
			}
		}
		order := make([]int, n)
		for i := range order {
			order[i] = i
		}
		slices.SortStableFunc(order, func(a, b int) int {
			if c := cmp.Compare(s[b], s[a]); c != 0 {
				return c
			}
			return cmp.Compare(b, a)
		})
		for _, k := range []int{0, 1, r.IntN(n + 1), n / 2, n - 1, n, n + 3} {
			want := slices.Clone(order[:max(0, min(k, n))])
			slices.Sort(want)
			if got := topK(s, k); !slices.Equal(got, want) {
				t.Fatalf("n %d k %d: topK %v, sort gives %v", n, k, got, want)
			}
		}
	}
}
