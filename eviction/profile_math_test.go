package eviction

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestEvictionOrder(t *testing.T) {
	//                 0    1    2    3    4    5    6    7
	s := []float32{9, 0.5, 0.2, 0.5, 0.1, 0.2, 0.7, 0}
	got, err := EvictionOrder(s, 1, 2) // 0 is a sink, 6 and 7 are the window
	if err != nil {
		t.Fatal(err)
	}
	// Lowest score first; equal scores evict the lower position first.
	if want := []int{4, 2, 5, 1, 3}; !slices.Equal(got, want) {
		t.Errorf("order = %v, want %v", got, want)
	}
	// The order agrees with the online tie rule: topK keeps the tokens evicted last.
	mid := s[1:6]
	kept := topK(mid, 2)
	for i := range kept {
		kept[i]++
	}
	if !slices.Equal(kept, []int{1, 3}) || !slices.Contains(got[3:], 1) || !slices.Contains(got[3:], 3) {
		t.Errorf("online topK keeps %v, offline order evicts last %v", kept, got[3:])
	}
	for _, c := range []struct{ sink, window int }{{4, 4}, {8, 0}, {0, 8}, {20, 3}} {
		got, err := EvictionOrder(s, c.sink, c.window)
		if err != nil || len(got) != 0 {
			t.Errorf("sink %d window %d: %v, %v; want nothing evictable", c.sink, c.window, got, err)
		}
	}
	if _, err := EvictionOrder(s, -1, 0); err == nil {
		t.Error("negative sink accepted")
	}
	if _, err := EvictionOrder([]float32{1, float32(math.NaN()), 2}, 0, 0); err == nil {
		t.Error("NaN score accepted")
	}
	got, err = EvictionOrder([]float32{float32(math.Inf(1)), 1, float32(math.Inf(-1))}, 0, 0)
	if err != nil || !slices.Equal(got, []int{2, 1, 0}) {
		t.Errorf("infinite scores: %v, %v", got, err)
	}
}

func TestProfileHead(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for trial := 0; trial < 50; trial++ {
		T := 1 + r.IntN(40)
		sink, window := r.IntN(3), r.IntN(3)
		imp := make([]float64, T)
		perfect := make([]float32, T)
		noisy := make([]float32, T)
		for j := range imp {
			imp[j] = r.ExpFloat64()
			perfect[j] = float32(imp[j])
			noisy[j] = float32(imp[j] * math.Exp(r.NormFloat64()))
		}
		p, err := ProfileHead(noisy, imp, sink, window)
		if err != nil {
			t.Fatal(err)
		}
		E := max(0, T-sink-window)
		if len(p.Order) != E || len(p.Cumulative) != E+1 || len(p.Costs) != E || p.T != T {
			t.Fatalf("T %d sink %d window %d: lengths %d %d %d", T, sink, window, len(p.Order), len(p.Cumulative), len(p.Costs))
		}
		for k, j := range p.Order {
			if j < sink || j >= T-window {
				t.Fatalf("protected token %d in the eviction order", j)
			}
			if !near(p.Cumulative[k+1], p.Cumulative[k]+imp[j], 100) {
				t.Fatalf("c(%d) = %v, want c(%d) + I[%d]", k+1, p.Cumulative[k+1], k, j)
			}
		}
		hull := LowerConvexHull(p.Cumulative)
		for k, x := range p.Costs {
			if !near(x, hull[k+1]-hull[k], 100) {
				t.Fatalf("cost %d = %v, hull slope %v", k, x, hull[k+1]-hull[k])
			}
		}
		// A perfect scorer evicts in increasing importance: c is already convex and the
		// relaxation changes nothing.
		q, err := ProfileHead(perfect, imp, sink, window)
		if err != nil {
			t.Fatal(err)
		}
		for k, j := range q.Order {
			if q.Costs[k] != imp[j] {
				t.Fatalf("perfect scorer: cost %d = %v, want I[%d] = %v", k, q.Costs[k], j, imp[j])
			}
		}
	}
	if _, err := ProfileHead([]float32{1, 2}, []float64{1}, 0, 0); err == nil {
		t.Error("length mismatch accepted")
	}
	if _, err := ProfileHead([]float32{1, 2}, []float64{1, math.Inf(1)}, 0, 0); err == nil {
		t.Error("infinite importance accepted")
	}
}

func TestOracleImportance(t *testing.T) {
	// Two query heads share the KV head; three context tokens; rows also cover two
	// later tokens, which must be ignored.
	attn := [][][]float64{
		{{0.5, 0.2, 0.1, 0.1, 0.1}, {0.1, 0.6, 0.1, 0.1, 0.1}},
		{{0.2, 0.2, 0.4, 0.1, 0.1}},
	}
	norms := [][]float64{{0.1, 0.2, 0.1}, {0.3, 0.1, 0.2}}
	got, err := OracleImportance(attn, norms)
	if err != nil {
		t.Fatal(err)
	}
	want := []float64{
		max(0.5*0.1, 0.1*0.1, 0.2*0.3),
		max(0.2*0.2, 0.6*0.2, 0.2*0.1),
		max(0.1*0.1, 0.1*0.1, 0.4*0.2),
	}
	for j := range want {
		if !near(got[j], want[j], 1) {
			t.Fatalf("I = %v, want %v", got, want)
		}
	}
	if _, err := OracleImportance(attn, norms[:1]); err == nil {
		t.Error("head count mismatch accepted")
	}
	if _, err := OracleImportance([][][]float64{{{0.5, 0.5}}}, [][]float64{{1, 1, 1}}); err == nil {
		t.Error("row shorter than the context accepted")
	}
	if _, err := OracleImportance([][][]float64{{{math.NaN(), 0.5}}}, [][]float64{{1, 1}}); err == nil {
		t.Error("NaN attention accepted")
	}
	if got, err := OracleImportance([][][]float64{{}}, [][]float64{{1, 1}}); err != nil || !slices.Equal(got, []float64{0, 0}) {
		t.Errorf("no decode steps: %v, %v", got, err)
	}
}

func TestNormalizeValueOutputNorms(t *testing.T) {
	n := [][]float64{{1, 2, 3}, {4, 0, 10}}
	if err := NormalizeValueOutputNorms(n); err != nil {
		t.Fatal(err)
	}
	var s float64
	for _, row := range n {
		for _, v := range row {
			s += v
		}
	}
	if !near(s, 1, 1) || !near(n[1][2], 0.5, 1) {
		t.Errorf("normalised norms %v (sum %v)", n, s)
	}
	if err := NormalizeValueOutputNorms([][]float64{{1, -1}}); err == nil {
		t.Error("negative norm accepted")
	}
	z := [][]float64{{0, 0}}
	if err := NormalizeValueOutputNorms(z); err != nil || z[0][0] != 0 {
		t.Errorf("zero layer: %v, %v", z, err)
	}
}
