package eviction

import (
	"fmt"
	"math/rand/v2"
)

// StreamingLLMScorer keeps the first Sink tokens and then the most recent ones
// (StreamingLLM, arXiv 2309.17453): token j scores j (its index in the view, i.e. its
// order by position) and the first Sink tokens score T, above all others. A top-k
// therefore keeps the sinks and the k-Sink most recent tokens, the same set as kvpress's
// StreamingLLMPress (streaming_llm_press.py), which instead writes 1 for kept and 0
// for pruned tokens because it knows the compression ratio; a scorer here does not, so
// it ranks. There is no "recent" size: the allocator's budget decides it.
type StreamingLLMScorer struct {
	Sink int // first tokens always ranked first (kvpress n_sink, default 4)
}

// DefaultStreamingSink is kvpress's n_sink for StreamingLLMPress.
const DefaultStreamingSink = 4

// Name is the scorer's CLI name.
func (StreamingLLMScorer) Name() string { return "streaming" }

func (StreamingLLMScorer) needs() viewNeeds { return viewNeeds{} }

// Validate rejects a negative Sink.
func (s StreamingLLMScorer) Validate() error {
	if s.Sink < 0 {
		return fmt.Errorf("streaming scorer: Sink %d must be >= 0", s.Sink)
	}
	return nil
}

// Score returns [Nkv][T] position scores, or nil if CheckScorerView rejects the view or
// the configuration.
func (s StreamingLLMScorer) Score(v *LayerView) [][]float32 {
	if CheckScorerView(s, v) != nil {
		return nil
	}
	T := v.T()
	out := make([][]float32, v.NumKVHeads)
	for g := range out {
		out[g] = make([]float32, T)
		for j := range out[g] {
			if j < s.Sink {
				out[g][j] = float32(T)
			} else {
				out[g][j] = float32(j)
			}
		}
	}
	return out
}

// RandomScorer gives every token a uniform random score in [0, 1): the control that any
// real scorer must beat (kvpress RandomPress, random_press.py). The scores are a
// deterministic function of (Seed, view's Layer, Nkv, T): a PCG stream seeded with
// (Seed, Layer), drawn head by head. kvpress reseeds torch's generator with the same
// seed at every layer, so its layers get identical scores; mixing in the layer keeps
// layers independent. torch's stream cannot be reproduced here.
type RandomScorer struct {
	Seed uint64
}

// Name is the scorer's CLI name.
func (RandomScorer) Name() string { return "random" }

func (RandomScorer) needs() viewNeeds { return viewNeeds{} }

// Validate accepts every RandomScorer.
func (RandomScorer) Validate() error { return nil }

// Score returns [Nkv][T] random scores, or nil if CheckScorerView rejects the view.
func (s RandomScorer) Score(v *LayerView) [][]float32 {
	if CheckScorerView(s, v) != nil {
		return nil
	}
	rng := rand.New(rand.NewPCG(s.Seed, uint64(v.Layer)))
	out := make([][]float32, v.NumKVHeads)
	for g := range out {
		out[g] = make([]float32, v.T())
		for j := range out[g] {
			out[g][j] = rng.Float32()
		}
	}
	return out
}
