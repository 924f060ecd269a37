package eviction

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/backend/cpu"
)

// Tests of the policy as data: every allocator's per-head counts, AdaKV's pooled rule
// as counts, and the sink/window rule.

// nastyScores is [heads][T] of random scores with many ties, NaNs and infinities.
func nastyScores(r *rand.Rand, heads, T int) [][]float32 {
	s := make([][]float32, heads)
	for h := range s {
		s[h] = make([]float32, T)
		for j := range s[h] {
			switch r.IntN(12) {
			case 0:
				s[h][j] = float32(math.NaN())
			case 1:
				s[h][j] = float32(math.Inf(-1))
			case 2, 3, 4:
				s[h][j] = float32(r.IntN(3)) // ties, within and across heads
			default:
				s[h][j] = float32(r.NormFloat64())
			}
		}
	}
	return s
}

// TestAdaKVCountsReproducePooledSet: on random scores with ties and NaN, every head's
// top count tokens (the counts AdaKVAllocator returns) are exactly the set the pooled
// selection picks (refPooled, the rule the device kernel and the old Keep implemented).
func TestAdaKVCountsReproducePooledSet(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 9))
	for trial := 0; trial < 300; trial++ {
		heads, T := 1+r.IntN(8), 1+r.IntN(200)
		s := nastyScores(r, heads, T)
		ratio := []float64{0, 0.1, 0.5, 0.75, 0.9, 0.99, r.Float64() * 0.999}[r.IntN(7)]
		safeguard := []float64{0, 0.2, 0.5, 1}[r.IntN(4)]
		a := AdaKVAllocator{Safeguard: safeguard}
		counts, err := a.Counts(0, 1, s, ratio)
		if err != nil {
			t.Fatal(err)
		}
		nKept := uniformBudget(T, ratio)
		nSafe := int(float64(nKept) * safeguard)
		want := refPooled(s, nSafe, nKept*heads-heads*min(nSafe, T))
		got := KeepTop(s, counts)
		for h := range want {
			if !slices.Equal(got[h], want[h]) {
				t.Fatalf("trial %d (%d heads, T %d, ratio %v, safeguard %v) head %d: top %d keeps %v, the pooled rule %v",
					trial, heads, T, ratio, safeguard, h, counts[h], got[h], want[h])
			}
		}
	}
}

// TestAllocatorCounts: each allocator's counts follow its own formula (computed here
// independently), and Compress hands exactly these counts to a device while the host
// path keeps that many tokens per head.
func TestAllocatorCounts(t *testing.T) {
	const L, H, T = 4, 3, 100
	r := rand.New(rand.NewPCG(4, 4))
	curve := NewBudgetCurve(L, H)
	for i := range curve.Prune {
		curve.Prune[i] = r.Float64()
	}
	scores := make([][][]float32, L)
	for l := range scores {
		scores[l] = randScores(r, H, T)
	}
	pyr := PyramidAllocator{Window: 8, Beta: 20}
	cases := []struct {
		alloc Allocator
		want  func(l int, s [][]float32) []int
	}{
		{UniformAllocator{}, func(int, [][]float32) []int { return []int{30, 30, 30} }}, // floor(100*0.3)
		{pyr, func(l int, _ [][]float32) []int {
			n := pyr.LayerBudget(l, L, T, 0.7)
			return []int{n, n, n}
		}},
		{LUKVAllocator{Curve: curve}, func(l int, _ [][]float32) []int {
			c, err := curve.KeepCounts(l, 0.7, T)
			if err != nil {
				t.Fatal(err)
			}
			for h := range c {
				c[h] = max(c[h], Protected(T, 4, 1))
			}
			return c
		}},
		{AdaKVAllocator{Safeguard: 0.2}, func(l int, s [][]float32) []int {
			prot := [][]float32{slices.Clone(s[0]), slices.Clone(s[1]), slices.Clone(s[2])}
			ProtectSinkWindow(prot, 4, 1)
			keep := refPooled(prot, 6, 3*30-3*6)
			return []int{len(keep[0]), len(keep[1]), len(keep[2])}
		}},
	}
	for _, tc := range cases {
		method := Method{Scorer: KNormScorer{}, Allocator: tc.alloc, Ratio: 0.7, Sink: 4, Window: 1}
		dev, host := newFilledCache(L, H, T), newFilledCache(L, H, T)
		fc := &fakeCompaction{KVCache: dev}
		if err := method.Compress(fc, scores, 0); err != nil || len(fc.reqs) != 1 {
			t.Fatalf("%s: err %v, %d device requests", tc.alloc.Name(), err, len(fc.reqs))
		}
		method.HostOnly = true
		if err := method.Compress(host, scores, 0); err != nil {
			t.Fatal(err)
		}
		total := 0
		for l := 0; l < L; l++ {
			want := tc.want(l, scores[l])
			if got := fc.reqs[0].Counts[l]; !slices.Equal(got, want) {
				t.Fatalf("%s layer %d: device request counts %v, want %v", tc.alloc.Name(), l, got, want)
			}
			for h := range want {
				if host.Len(l, h) != want[h] {
					t.Fatalf("%s layer %d head %d: host path keeps %d, want %d", tc.alloc.Name(), l, h, host.Len(l, h), want[h])
				}
				total += want[h]
			}
		}
		if _, ok := tc.alloc.(AdaKVAllocator); ok && total != L*H*30 {
			t.Fatalf("adakv keeps %d tokens in all, want the uniform total %d", total, L*H*30)
		}
	}
}

// newFilledCache is a CPU cache of L layers x H heads (head dim 4) holding T tokens in
// every head, token j's key and value all j (so a kept token is recognisable).
func newFilledCache(L, H, T int) backend.KVCache {
	b := cpu.New()
	c := b.NewKVCache(L, H, 4, T)
	q, k, v := b.Alloc(T, H*4), b.Alloc(T, H*4), b.Alloc(T, H*4)
	kk, vv := k.(*cpu.Mat), v.(*cpu.Mat)
	for j := 0; j < T; j++ {
		for i := 0; i < H*4; i++ {
			kk.Data[j*H*4+i], vv.Data[j*H*4+i] = float32(j), float32(j)
		}
	}
	out := b.Alloc(T, H*4)
	for l := 0; l < L; l++ {
		b.Attention(out, q, k, v, c, l, 1)
	}
	return c
}

// keptTokens is head (l, h)'s kept token indices, read from a newFilledCache's keys.
func keptTokens(c backend.KVCache, l, h int) []int {
	keys := c.Keys(l, h)
	out := make([]int, 0, len(keys)/4)
	for i := 0; i < len(keys); i += 4 {
		out = append(out, int(keys[i]))
	}
	return out
}

// TestSinkWindowRule: sink and window tokens are kept whatever the budget and whatever
// the other scores (+Inf, the largest float32, NaN in the protected slots), on both
// paths; a head whose budget is below min(T, sink+window) keeps exactly those tokens,
// and a budget above it keeps them plus the best of the rest.
func TestSinkWindowRule(t *testing.T) {
	const T = 20
	inf, maxF, nan := float32(math.Inf(1)), float32(math.MaxFloat32), float32(math.NaN())
	head := func() []float32 {
		s := make([]float32, T)
		for j := range s {
			s[j] = float32(j % 7)
		}
		s[0], s[1], s[19] = nan, float32(math.Inf(-1)), -5 // protected slots scored worst
		s[10], s[11], s[12] = inf, maxF, maxF              // unprotected slots scored best
		return s
	}
	curve := NewBudgetCurve(1, 2)
	for i := range curve.Prune {
		curve.Prune[i] = 0.99 // LU-KV gives each head 1 token of 20 at any ratio
	}
	cases := []struct {
		name         string
		alloc        Allocator
		ratio        float64
		sink, window int
		want         []int
	}{
		{"uniform budget 1 < sink+window", UniformAllocator{}, 0.99, 4, 1, []int{0, 1, 2, 3, 19}},
		{"lukv budget 1 < sink+window", LUKVAllocator{Curve: curve}, 0.5, 4, 1, []int{0, 1, 2, 3, 19}},
		{"adakv budget 1 < sink+window", AdaKVAllocator{Safeguard: 0.2}, 0.95, 2, 2, []int{0, 1, 18, 19}},
		{"sink+window > T", UniformAllocator{}, 0.9, 15, 10, seqInts(T)},
		{"budget above sink+window", UniformAllocator{}, 0.6, 4, 1, []int{0, 1, 2, 3, 10, 11, 12, 19}}, // floor(20*0.4) = 8: 5 protected, the 3 best of the rest
		{"no sink or window", UniformAllocator{}, 0.9, 0, 0, []int{10, 12}},                            // +Inf, then the later of two ties
	}
	for _, tc := range cases {
		scores := [][][]float32{{head(), head()}}
		method := Method{Scorer: KNormScorer{}, Allocator: tc.alloc, Ratio: tc.ratio, Sink: tc.sink, Window: tc.window}
		dev, host := newFilledCache(1, 2, T), newFilledCache(1, 2, T)
		if err := method.Compress(&fakeCompaction{KVCache: dev}, scores, 0); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		method.HostOnly = true
		if err := method.Compress(host, scores, 0); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		for h := 0; h < 2; h++ {
			for _, c := range []backend.KVCache{dev, host} {
				if got := keptTokens(c, 0, h); !slices.Equal(got, tc.want) {
					t.Fatalf("%s head %d: kept %v, want %v", tc.name, h, got, tc.want)
				}
			}
		}
		if fmt.Sprint(scores[0][0]) != fmt.Sprint(head()) {
			t.Fatalf("%s: Compress changed the caller's scores", tc.name)
		}
	}
}

func seqInts(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}
