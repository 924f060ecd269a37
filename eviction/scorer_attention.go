package eviction

import "math"

// TOVAScorer ranks tokens by the attention the last query pays them (TOVA; kvpress
// TOVAPress, tova_press.py): the last query row attends causally over the T keys
// (softmax of q.k_j/sqrt(D) over the keys at or before its position), and the
// attention is averaged over ALL query heads of the view, not only the KV group, so
// every KV head gets the same scores — kvpress does exactly this (attn_weights.mean(1)
// over the layer's heads, then repeat per KV head). The last token scores above every
// other (the maximum + 1, as kvpress pads it). A view holding a single KV head (as
// decode-time eviction builds them) thus averages over that head's group only.
type TOVAScorer struct{}

// Name is the scorer's CLI name.
func (TOVAScorer) Name() string { return "tova" }

func (TOVAScorer) needs() viewNeeds { return viewNeeds{queries: true} }

// Validate accepts every TOVAScorer.
func (TOVAScorer) Validate() error { return nil }

// Score returns [Nkv][T] TOVA scores, or nil if CheckScorerView rejects the view.
func (s TOVAScorer) Score(v *LayerView) [][]float32 {
	if CheckScorerView(s, v) != nil {
		return nil
	}
	T, tq, nq, nkv, d := v.T(), v.Tq(), v.NumHeads, v.NumKVHeads, v.HeadDim
	if T <= 1 {
		return filledScores(nkv, T, 1)
	}
	group := nq / nkv
	scale := 1 / math.Sqrt(float64(d))
	qpos := v.QueryPositions[tq-1:]
	mean := make([]float64, T-1)
	for g := 0; g < nkv; g++ {
		keys := tokenMatrix(v.Keys[g], T, d)
		for hq := 0; hq < group; hq++ {
			q := headMatrix(v.Queries, tq-1, tq, nq, g*group+hq, d)
			probs := attentionProbs(q, qpos, keys, v.Positions, scale)
			for j := range mean {
				mean[j] += probs[j]
			}
		}
	}
	for j := range mean {
		mean[j] /= float64(nq)
	}
	row := toFloat32(mean)
	out := make([][]float32, nkv)
	top := aboveAll([][]float32{row})
	for g := range out {
		out[g] = make([]float32, T)
		copy(out[g], row)
		out[g][T-1] = top
	}
	return out
}

// ObservedAttentionScorer ranks tokens by the attention the view's queries actually paid
// them (H2O's heavy hitters; kvpress ObservedAttentionPress, observed_attention_press.py):
// every query row attends causally over the T keys (softmax of q.k_j/sqrt(D) over the
// keys at or before its position), the attention each key receives is summed over the
// rows and divided by the number of rows that can see it — so it is the mean attention
// over the queries that saw the key, kvpress's division by arange(T, 0, -1) after a
// prefill, where key j is seen by T-j queries — and then averaged over the query heads
// of the KV group. A key no query can see scores 0. Cost O(Tq*T*D) per query head.
type ObservedAttentionScorer struct{}

// Name is the scorer's CLI name.
func (ObservedAttentionScorer) Name() string { return "h2o" }

func (ObservedAttentionScorer) needs() viewNeeds { return viewNeeds{queries: true} }

// Validate accepts every ObservedAttentionScorer.
func (ObservedAttentionScorer) Validate() error { return nil }

// observedBlock is how many query rows are turned into attention at a time (bounds
// the [rows, T] float64 buffer).
const observedBlock = 256

// Score returns [Nkv][T] observed-attention scores, or nil if CheckScorerView rejects
// the view.
func (s ObservedAttentionScorer) Score(v *LayerView) [][]float32 {
	if CheckScorerView(s, v) != nil {
		return nil
	}
	T, tq, nq, nkv, d := v.T(), v.Tq(), v.NumHeads, v.NumKVHeads, v.HeadDim
	group := nq / nkv
	scale := 1 / math.Sqrt(float64(d))
	seen := make([]int, T) // how many query rows see each key
	for j, p := range v.Positions {
		for _, qp := range v.QueryPositions {
			if qp >= p {
				seen[j]++
			}
		}
	}
	out := make([][]float32, nkv)
	for g := 0; g < nkv; g++ {
		keys := tokenMatrix(v.Keys[g], T, d)
		mean := make([]float64, T)
		for hq := 0; hq < group; hq++ {
			sum := make([]float64, T)
			for r0 := 0; r0 < tq; r0 += observedBlock {
				r1 := min(tq, r0+observedBlock)
				q := headMatrix(v.Queries, r0, r1, nq, g*group+hq, d)
				probs := attentionProbs(q, v.QueryPositions[r0:r1], keys, v.Positions, scale)
				for r := 0; r < r1-r0; r++ {
					for j, a := range probs[r*T : (r+1)*T] {
						sum[j] += a
					}
				}
			}
			for j := range mean {
				if seen[j] > 0 {
					mean[j] += sum[j] / float64(seen[j])
				}
			}
		}
		for j := range mean {
			mean[j] /= float64(group)
		}
		out[g] = toFloat32(mean)
	}
	return out
}
