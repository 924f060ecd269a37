package eviction

import "math"

// KeyDiffScorer keeps the tokens whose keys differ most from the head's average key
// direction (KeyDiff; kvpress KeyDiffPress, keydiff_press.py), per KV head:
//
//	anchor = mean_i k_i / max(||k_i||, 1e-12)        (F.normalize, then mean over T)
//	score_j = -(k_j.anchor) / (max(||k_j||, 1e-8) * max(||anchor||, 1e-8))
//
// the negated cosine similarity (F.cosine_similarity's epsilon convention). It reads
// only the keys (rotated, as cached). kvpress notes the paper applies it block-wise
// (BlockPress); this is the one-shot form.
type KeyDiffScorer struct{}

// Name is the scorer's CLI name.
func (KeyDiffScorer) Name() string { return "keydiff" }

func (KeyDiffScorer) needs() viewNeeds { return viewNeeds{} }

// Validate accepts every KeyDiffScorer.
func (KeyDiffScorer) Validate() error { return nil }

// Score returns [Nkv][T] KeyDiff scores, or nil if CheckScorerView rejects the view.
func (s KeyDiffScorer) Score(v *LayerView) [][]float32 {
	if CheckScorerView(s, v) != nil {
		return nil
	}
	T, d := v.T(), v.HeadDim
	out := make([][]float32, v.NumKVHeads)
	for g := range out {
		keys := tokenMatrix(v.Keys[g], T, d)
		norms := rowNorms(keys)
		anchor := make([]float64, d)
		for j := 0; j < T; j++ {
			inv := 1 / math.Max(norms[j], 1e-12)
			for i, x := range keys.Data[j*d : (j+1)*d] {
				anchor[i] += x * inv
			}
		}
		var an float64
		for i := range anchor {
			anchor[i] /= float64(max(T, 1))
			an += anchor[i] * anchor[i]
		}
		an = math.Max(math.Sqrt(an), 1e-8)
		out[g] = make([]float32, T)
		for j := 0; j < T; j++ {
			var dot float64
			for i, x := range keys.Data[j*d : (j+1)*d] {
				dot += x * anchor[i]
			}
			out[g][j] = float32(-dot / (math.Max(norms[j], 1e-8) * an))
		}
	}
	return out
}

// KNormScorer keeps the tokens with the smallest key norms: score_j = -||k_j|| per KV
// head (kvpress KnormPress, knorm_press.py; arXiv 2406.11430 found low-norm keys draw
// high attention). It reads only the keys (rotated, as cached; RoPE preserves norms).
type KNormScorer struct{}

// Name is the scorer's CLI name.
func (KNormScorer) Name() string { return "knorm" }

func (KNormScorer) needs() viewNeeds { return viewNeeds{} }

// Validate accepts every KNormScorer.
func (KNormScorer) Validate() error { return nil }

// Score returns [Nkv][T] scores -||k_j||, or nil if CheckScorerView rejects the view.
func (s KNormScorer) Score(v *LayerView) [][]float32 {
	if CheckScorerView(s, v) != nil {
		return nil
	}
	out := make([][]float32, v.NumKVHeads)
	for g := range out {
		norms := rowNorms(tokenMatrix(v.Keys[g], v.T(), v.HeadDim))
		out[g] = make([]float32, len(norms))
		for j, n := range norms {
			out[g][j] = float32(-n)
		}
	}
	return out
}
