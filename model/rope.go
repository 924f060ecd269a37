package model

import (
	"fmt"
	"math"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/loader"
)

// NewRoPE computes the rotary inverse frequencies for a config, for sequences within
// max_position_embeddings: theta^(-2j/D) for j < D/2, then the context-extension scaling
// the config names (loader.RopeScaling):
//
//   - linear: f/s for factor s.
//   - dynamic (NTK): unchanged here; a longer sequence gets DynamicRoPE's frequencies.
//   - yarn: with r_j = C/(2pi/f_j) the rotations of pair j over the original context C,
//     pairs turning more than beta_fast times keep f, fewer than beta_slow times get f/s,
//     and a linear ramp over pair index blends between the two (the ramp's ends are the
//     pair indices where r = beta_fast and r = beta_slow, floored and ceiled unless
//     truncate is false). Its attention factor is AttentionFactor.
//   - freq_factors (GGUF's rope_freqs tensor, llama3 scaling as llama.cpp stores it):
//     f_j / factor_j.
//   - llama3: with wavelength w = 2pi/f, original context C, low/high frequency factors
//     lo/hi: w > C/lo gets f/s; w < C/hi stays f; in between (1-a) f/s + a f with
//     a = (C/w - lo)/(hi - lo).
//
// Frequencies are rounded to float32 as transformers computes them.
func NewRoPE(cfg *loader.Config) (*backend.RoPE, error) {
	D := cfg.HeadDim
	inv := make([]float64, D/2)
	for j := range inv {
		inv[j] = float64(float32(1 / math.Pow(cfg.RopeTheta, float64(2*j)/float64(D))))
	}
	sc := cfg.RopeScaling
	if sc == nil {
		return &backend.RoPE{InvFreq: inv}, nil
	}
	switch sc.Type {
	case "", "default", "dynamic":
	case "linear":
		for j := range inv {
			inv[j] = float64(float32(inv[j] / sc.Factor))
		}
	case "llama3":
		orig := float64(sc.OriginalMaxPositionEmbeddings)
		lowWave, highWave := orig/sc.LowFreqFactor, orig/sc.HighFreqFactor
		for j, f := range inv {
			wave := 2 * math.Pi / f
			switch {
			case wave < highWave:
			case wave > lowWave:
				inv[j] = f / sc.Factor
			default:
				a := (orig/wave - sc.LowFreqFactor) / (sc.HighFreqFactor - sc.LowFreqFactor)
				inv[j] = (1-a)*f/sc.Factor + a*f
			}
		}
	case "yarn":
		yarnFrequencies(inv, cfg)
	case "freq_factors":
		if len(sc.FreqFactors) != len(inv) {
			return nil, fmt.Errorf("model: %d RoPE frequency factors for %d rotated pairs", len(sc.FreqFactors), len(inv))
		}
		for j := range inv {
			inv[j] = float64(float32(inv[j] / sc.FreqFactors[j]))
		}
	default:
		return nil, fmt.Errorf("model: rope scaling type %q is not supported (supported: linear, dynamic, yarn, llama3)", sc.Type)
	}
	return &backend.RoPE{InvFreq: inv}, nil
}

// yarnFrequencies blends inv (the unscaled frequencies) in place with f/factor, pair by
// pair, as YaRN does.
func yarnFrequencies(inv []float64, cfg *loader.Config) {
	sc, D := cfg.RopeScaling, float64(cfg.HeadDim)
	orig := float64(sc.OriginalMaxPositionEmbeddings)
	if orig == 0 {
		orig = float64(cfg.MaxPositionEmbeddings)
	}
	// The (fractional) pair index at which a frequency turns `rotations` times over orig.
	pairAt := func(rotations float64) float64 {
		return D * math.Log(orig/(rotations*2*math.Pi)) / (2 * math.Log(cfg.RopeTheta))
	}
	low, high := pairAt(sc.BetaFast), pairAt(sc.BetaSlow)
	if !sc.NoTruncate {
		low, high = math.Floor(low), math.Ceil(high)
	}
	low, high = math.Max(low, 0), math.Min(high, D-1)
	if low == high {
		high += 0.001 // transformers' guard against a zero-width ramp
	}
	for j, f := range inv {
		ramp := math.Min(math.Max((float64(j)-low)/(high-low), 0), 1) // 0: keep f, 1: f/factor
		inv[j] = float64(float32(f/sc.Factor*ramp + f*(1-ramp)))
	}
}

// AttentionFactor is the factor transformers multiplies cos and sin by (YaRN's mscale;
// 1 for every other scaling). Both q and k are rotated, so the attention logits grow by
// its square: the model folds that into the attention scale instead of the rotation,
// which keeps the backends' RoPE a pure rotation.
func AttentionFactor(cfg *loader.Config) float64 {
	sc := cfg.RopeScaling
	if sc == nil || sc.Type != "yarn" {
		return 1
	}
	if sc.AttentionFactor > 0 {
		return sc.AttentionFactor
	}
	mscale := func(scale, m float64) float64 {
		if scale <= 1 {
			return 1
		}
		return 0.1*m*math.Log(scale) + 1
	}
	if sc.Mscale > 0 && sc.MscaleAllDim > 0 {
		return mscale(sc.Factor, sc.Mscale) / mscale(sc.Factor, sc.MscaleAllDim)
	}
	return mscale(sc.Factor, 1)
}

// DynamicRoPE is the frequencies of dynamic NTK scaling for a forward pass whose
// longest sequence is seqLen tokens (its highest position + 1). Within
// max_position_embeddings M they are NewRoPE's; past it the base grows to
// theta * (s*seqLen/M - (s-1))^(D/(D-2)) for factor s. Arithmetic is float32 step by
// step, as transformers does it on a tensor sequence length.
//
// As in transformers' generation with a cache, keys keep the rotation of the pass that
// computed them: a decode step past M rotates its query and key with its own, larger
// base, and the cached keys are not re-rotated.
func DynamicRoPE(cfg *loader.Config, seqLen int) *backend.RoPE {
	M, D := cfg.MaxPositionEmbeddings, cfg.HeadDim
	seqLen = max(seqLen, M)
	s := float32(cfg.RopeScaling.Factor)
	grow := s*float32(seqLen)/float32(M) - (s - 1)
	base := float32(cfg.RopeTheta) * float32(math.Pow(float64(grow), float64(D)/float64(D-2)))
	inv := make([]float64, D/2)
	for j := range inv {
		inv[j] = float64(1 / float32(math.Pow(float64(base), float64(float32(2*j)/float32(D)))))
	}
	return &backend.RoPE{InvFreq: inv}
}
