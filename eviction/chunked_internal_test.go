package eviction

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/lukv/lukv/backend"
)

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

// TestChunkedKeepLiveMatchesPadded: EndChunk's O(live) selection (keepLive) keeps exactly
// what the reference over all S positions (keepPadded) keeps, chunk after chunk, for the
// fixed allocators, with ties, sink and window, and heads of different lengths; with
// scores at -Inf it either agrees or declines (and keepPadded decides).
func TestChunkedKeepLiveMatchesPadded(t *testing.T) {
	const L, nkv = 3, 4
	curve := NewBudgetCurve(L, nkv)
	r := rand.New(rand.NewPCG(17, 3))
	for i := 0; i < CurveRatios; i++ {
		for l := 0; l < L; l++ {
			for h := 0; h < nkv; h++ {
				x := float64(i) / float64(CurveRatios-1) * (0.5 + r.Float64())
				curve.Prune[(i*L+l)*nkv+h] = min(x, 1)
			}
		}
	}
	allocs := []Allocator{UniformAllocator{}, PyramidAllocator{Window: 4, Beta: 20}, LUKVAllocator{Curve: curve}}
	live, declined := 0, 0
	for _, a := range allocs {
		for _, ratio := range []float64{0.5, 0.8, 0.9} {
			for _, negInf := range []bool{false, true} {
				e := &ChunkedEvictor{Method: Method{Allocator: a, Ratio: ratio, Sink: 3, Window: 5}, pos: make([][][]int, L)}
				scores := make([][][]float32, L) // [l][h] over e.pos[l][h]
				for l := range e.pos {
					e.pos[l] = make([][]int, nkv)
					scores[l] = make([][]float32, nkv)
				}
				S := 0
				for chunk := 0; chunk < 12; chunk++ {
					n := 1 + r.IntN(40)
					for l := 0; l < L; l++ {
						for h := 0; h < nkv; h++ {
							for p := S; p < S+n; p++ {
								e.pos[l][h] = append(e.pos[l][h], p)
								v := float32(r.IntN(8)) // ties
								if negInf && r.IntN(6) == 0 {
									v = float32(math.Inf(-1))
								}
								scores[l][h] = append(scores[l][h], v)
							}
						}
					}
					S += n
					for l := 0; l < L; l++ {
						want, err := e.keepPadded(l, L, S, scores[l])
						if err != nil {
							t.Fatal(err)
						}
						got, ok, err := e.keepLive(l, L, S, scores[l])
						if err != nil {
							t.Fatal(err)
						}
						what := fmt.Sprintf("%s@%.1f -inf %v chunk %d layer %d (S %d)", a.Name(), ratio, negInf, chunk, l, S)
						if !ok {
							if !negInf {
								t.Fatalf("%s: keepLive declined scores with no -Inf", what)
							}
							declined++
						} else {
							live++
							for h := range want {
								if !slices.Equal(got[h], want[h]) {
									t.Fatalf("%s head %d: keepLive keeps %v, keepPadded %v", what, h, got[h], want[h])
								}
							}
						}
						for h := range want { // evict as EndChunk does
							kp, ks := make([]int, len(want[h])), make([]float32, len(want[h]))
							for j, i := range want[h] {
								kp[j], ks[j] = e.pos[l][h][i], scores[l][h][i]
							}
							e.pos[l][h], scores[l][h] = kp, ks
						}
					}
				}
			}
		}
	}
	if live < 200 {
		t.Errorf("keepLive decided only %d selections (%d declined)", live, declined)
	}
}

// TestChunkedKeepLiveDeclinesAdaKV: AdaKV's counts follow the scores, so keepLive leaves
// it to keepPadded.
func TestChunkedKeepLiveDeclinesAdaKV(t *testing.T) {
	e := &ChunkedEvictor{Method: Method{Allocator: AdaKVAllocator{Safeguard: 0.2}, Ratio: 0.5}, pos: [][][]int{{{0, 1, 2}}}}
	if _, ok, err := e.keepLive(0, 1, 3, [][]float32{{1, 2, 3}}); ok || err != nil {
		t.Fatalf("keepLive with AdaKV: ok %v, err %v; want it to decline", ok, err)
	}
}

// reserveSpy records a CapacityReserver's reservations (only Layers, KVHeads and
// ReserveRows are called).
type reserveSpy struct {
	backend.KVCache
	layers, kvHeads int
	rows            []int
}

func (s *reserveSpy) Layers() int  { return s.layers }
func (s *reserveSpy) KVHeads() int { return s.kvHeads }
func (s *reserveSpy) ReserveRows(layer, rows int) error {
	s.rows[layer] = rows
	return nil
}

// TestChunkedReservationCoversEveryChunk: the reservation made at the first compaction
// holds what every layer's heads keep after every later chunk plus one chunk's room,
// for the fixed allocators, including PyramidKV, whose budgets for short contexts fall
// back to uniform ones larger than its final top-layer budget.
func TestChunkedReservationCoversEveryChunk(t *testing.T) {
	const L, nkv = 6, 4
	curve := NewBudgetCurve(L, nkv)
	for i := range curve.Prune {
		curve.Prune[i] = float64(i%CurveRatios) / float64(CurveRatios-1) * (0.6 + 0.1*float64(i%5))
	}
	for _, a := range []Allocator{UniformAllocator{}, PyramidAllocator{Window: 8, Beta: 20}, LUKVAllocator{Curve: curve}} {
		for _, c := range []struct{ total, chunk, reserve int }{{3000, 64, 5}, {700, 64, 100}, {5000, 1000, 0}} {
			e := &ChunkedEvictor{Method: Method{Allocator: a, Ratio: 0.8, Sink: 4, Window: 1}}
			e.PlanChunks(c.total, c.chunk, c.reserve)
			e.seen = c.chunk // the first compaction, after the first chunk
			spy := &reserveSpy{layers: L, kvHeads: nkv, rows: make([]int, L)}
			if err := e.reserveCapacity(spy, e.room); err != nil {
				t.Fatal(err)
			}
			for S := c.chunk; ; S = min(S+c.chunk, c.total) {
				for l := 0; l < L; l++ {
					counts, err := e.Method.LayerCounts(l, L, slices.Repeat([][]float32{make([]float32, S)}, nkv))
					if err != nil {
						t.Fatal(err)
					}
					need := 0
					for _, n := range counts {
						need += n + max(c.chunk, c.reserve)
					}
					if need > spy.rows[l] {
						t.Fatalf("%s %+v: layer %d after %d tokens needs %d rows, %d reserved", a.Name(), c, l, S, need, spy.rows[l])
					}
				}
				if S == c.total {
					break
				}
			}
		}
	}
}
