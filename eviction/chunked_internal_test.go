package eviction

import "testing"

// TestHeadViewScoresLikeTheLayerView: a KV head scored in its own view (as chunked
// eviction scores heads that hold different tokens) gets the scores it gets in the
// layer's view, for every scorer whose heads are independent: all but TOVA (which
// averages over the layer's query heads) and the tokens a scorer itself puts on top
// (SnapKV's window, expected attention's sinks: the layer's maximum + 1 there, the head's
// here).
func TestHeadViewScoresLikeTheLayerView(t *testing.T) {
	v := newScorerTestView(scorerViewSpec{T: 40, tq: 12, nq: 6, nkv: 3, d: 8, start: 5, seed: 9})
	scorers := []struct {
		s         Scorer
		head, end int // tokens [head, T-end) compared
	}{
		{KeyDiffScorer{}, 0, 0},
		{KNormScorer{}, 0, 0},
		{ObservedAttentionScorer{}, 0, 0},
		{StreamingLLMScorer{Sink: 4}, 0, 0},
		{SnapKVScorer{Window: 5, Kernel: 3}, 0, 5},
		{DefaultExpectedAttentionScorer(), DefaultEANSink, 0},
	}
	for _, c := range scorers {
		full := c.s.Score(v)
		if full == nil {
			t.Fatalf("%s: layer view rejected: %v", c.s.Name(), CheckScorerView(c.s, v))
		}
		for h := 0; h < v.NumKVHeads; h++ {
			hv := headView(v, h, v.Positions, v.Keys[h], v.Values[h])
			one := c.s.Score(hv)
			if one == nil {
				t.Fatalf("%s head %d: view rejected: %v", c.s.Name(), h, CheckScorerView(c.s, hv))
			}
			for j := c.head; j < v.T()-c.end; j++ {
				if one[0][j] != full[h][j] {
					t.Fatalf("%s head %d token %d: %v in its own view, %v in the layer's", c.s.Name(), h, j, one[0][j], full[h][j])
				}
			}
		}
	}
}
