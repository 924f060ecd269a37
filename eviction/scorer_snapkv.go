package eviction

import (
	"fmt"
	"math"
)

// SnapKVScorer ranks tokens by the attention that the last Window tokens (the
// "observation window") pay them (kvpress SnapKVPress, snapkv_press.py). With
// w = min(Window, Tq) and the last w query rows (rotated queries, as cached keys are):
//
//  1. each window query r attends causally over all T keys: softmax over the keys whose
//     position is <= its own of q_r.k_j/sqrt(D) (the window's own keys included);
//  2. the attention to the T-w keys before the window is averaged over the w queries;
//  3. that [T-w] vector is pooled along the sequence with Kernel (pool1d: stride 1,
//     padding Kernel/2, "avg" dividing by Kernel including the zero padding as
//     F.avg_pool1d does, "max" ignoring it as F.max_pool1d does); the padding sits at
//     the window's edge, not over the window's attention;
//  4. the pooled scores are averaged over the query heads of the KV group.
//
// The last w tokens score above every other token of the layer (the layer's maximum +
// 1, as kvpress pads them). If T <= w every token scores 1. kvpress's defaults are
// avg-pooling, Window 64, Kernel 5; the LU-KV authors' profiles used max-pooling,
// Window 32, Kernel 7.
type SnapKVScorer struct {
	Window int    // observation window; 0 means 64
	Kernel int    // pooling kernel (odd, as kvpress needs); 0 means 5, 1 means no pooling
	Pool   string // "avg" (also "") or "max"
}

// Defaults of SnapKVScorer (kvpress's SnapKVPress).
const (
	DefaultSnapKVWindow = 64
	DefaultSnapKVKernel = 5
)

// DefaultSnapKVScorer returns kvpress's configuration: window 64, kernel 5, avg-pool.
func DefaultSnapKVScorer() SnapKVScorer {
	return SnapKVScorer{Window: DefaultSnapKVWindow, Kernel: DefaultSnapKVKernel, Pool: "avg"}
}

// Name is the scorer's CLI name.
func (SnapKVScorer) Name() string { return "snapkv" }

func (SnapKVScorer) needs() viewNeeds { return viewNeeds{queries: true} }

// Validate rejects negative sizes and an unknown pooling.
func (s SnapKVScorer) Validate() error {
	if s.Window < 0 || s.Kernel < 0 {
		return fmt.Errorf("snapkv scorer: Window (%d) and Kernel (%d) must be >= 0", s.Window, s.Kernel)
	}
	if s.Pool != "" && s.Pool != "avg" && s.Pool != "max" {
		return fmt.Errorf("snapkv scorer: Pool %q: want \"avg\" or \"max\"", s.Pool)
	}
	return nil
}

// Score returns [Nkv][T] SnapKV scores, or nil if CheckScorerView rejects the view or
// the configuration.
func (s SnapKVScorer) Score(v *LayerView) [][]float32 {
	if CheckScorerView(s, v) != nil {
		return nil
	}
	window, kernel := s.Window, s.Kernel
	if window == 0 {
		window = DefaultSnapKVWindow
	}
	if kernel == 0 {
		kernel = DefaultSnapKVKernel
	}
	T, tq, nq, nkv, d := v.T(), v.Tq(), v.NumHeads, v.NumKVHeads, v.HeadDim
	group := nq / nkv
	w := min(window, tq)
	if T <= w {
		return filledScores(nkv, T, 1)
	}
	prefix := T - w
	qpos := v.QueryPositions[tq-w:]
	scale := 1 / math.Sqrt(float64(d))

	out := make([][]float32, nkv)
	tails := make([][]float32, nkv) // the scores before the window
	parallelHeads(nkv, func(g int) {
		keys := tokenMatrix(v.Keys[g], T, d)
		mean := make([]float64, prefix)
		for hq := 0; hq < group; hq++ {
			q := headMatrix(v.Queries, tq-w, tq, nq, g*group+hq, d)
			probs := attentionProbs(q, qpos, keys, v.Positions, scale)
			avg := make([]float64, prefix)
			for r := 0; r < w; r++ {
				for j := range avg {
					avg[j] += probs[r*T+j]
				}
			}
			for j := range avg {
				avg[j] /= float64(w)
			}
			for j, x := range pool1d(avg, kernel, s.Pool == "max") {
				mean[j] += x
			}
		}
		for j := range mean {
			mean[j] /= float64(group)
		}
		out[g] = make([]float32, T)
		copy(out[g], toFloat32(mean))
		tails[g] = out[g][:prefix]
	})
	top := aboveAll(tails)
	for g := range out {
		for j := prefix; j < T; j++ {
			out[g][j] = top
		}
	}
	return out
}
