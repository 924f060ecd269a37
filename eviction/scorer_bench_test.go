package eviction

import (
	"fmt"
	"testing"
)

// BenchmarkScorers scores one Llama-3.1-8B-shaped layer (32 query heads, 8 KV heads,
// head dim 128) of a 1024-token prefill with every default scorer. Rough FLOP counts per
// layer: expected-attention ~ Nq*(Tstat + 2T)*D^2*2 (0.8 GFLOP here), h2o ~ Nq*T^2*D*2
// (8.6 GFLOP), snapkv ~ Nq*64*T*D*2 (0.5 GFLOP).
func BenchmarkScorers(b *testing.B) {
	v := newScorerTestView(scorerViewSpec{nq: 32, nkv: 8, d: 128, T: 1024, tq: 1024, seed: 99})
	for _, name := range ScorerNames() {
		s, err := NewScorer(name)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("%s/T=%d", name, v.T()), func(b *testing.B) {
			for b.Loop() {
				if s.Score(v) == nil {
					b.Fatal("nil scores")
				}
			}
		})
	}
}
