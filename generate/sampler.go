// Package generate turns a model and a tokenizer into text: prefill, decode, sampling,
// stopping and streaming.
package generate

import (
	"math"
	"math/rand/v2"
	"sort"
)

// Sampler picks the next token from logits. Temperature 0 is greedy (argmax, lowest id
// on ties); otherwise logits are divided by the temperature, the smallest set of most
// likely tokens whose probability reaches TopP is kept (all when TopP >= 1), and a token
// is drawn from it with a generator seeded by Seed, so a run is reproducible.
type Sampler struct {
	Temperature float64
	TopP        float64
	rng         *rand.Rand
}

// NewSampler returns a sampler; seed fixes the random draws.
func NewSampler(temperature, topP float64, seed uint64) *Sampler {
	if topP <= 0 || topP > 1 {
		topP = 1
	}
	return &Sampler{Temperature: temperature, TopP: topP, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// Argmax returns the index of the largest value (the first on ties).
func Argmax(x []float32) int {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return best
}

// Sample returns the next token id.
func (s *Sampler) Sample(logits []float32) int {
	if s.Temperature <= 0 {
		return Argmax(logits)
	}
	type cand struct {
		id int
		p  float64
	}
	maxl := float64(logits[Argmax(logits)])
	cands := make([]cand, len(logits))
	var sum float64
	for i, l := range logits {
		p := math.Exp((float64(l) - maxl) / s.Temperature)
		cands[i] = cand{i, p}
		sum += p
	}
	sort.SliceStable(cands, func(a, b int) bool { return cands[a].p > cands[b].p })
	// Keep the nucleus: the most likely tokens until their mass reaches TopP.
	var mass float64
	keep := len(cands)
	for i, c := range cands {
		mass += c.p / sum
		if mass >= s.TopP {
			keep = i + 1
			break
		}
	}
	cands = cands[:keep]
	var total float64
	for _, c := range cands {
		total += c.p
	}
	r := s.rng.Float64() * total
	for _, c := range cands {
		r -= c.p
		if r < 0 {
			return c.id
		}
	}
	return cands[len(cands)-1].id
}
