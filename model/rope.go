package model

import (
	"fmt"
	"math"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/loader"
)

// NewRoPE computes the rotary inverse frequencies for a config: theta^(-2j/headDim) for
// j < headDim/2, then the context-extension scaling the config names.
//
// llama3 scaling (Llama 3.1): with wavelength w = 2*pi/f, original context C, low/high
// frequency factors lo/hi and factor s: w > C/lo (long waves) gets f/s; w < C/hi (short
// waves) stays f; in between, f is blended: (1-a) f/s + a f with a = (C/w - lo)/(hi - lo).
func NewRoPE(cfg *loader.Config) (*backend.RoPE, error) {
	half := cfg.HeadDim / 2
	inv := make([]float64, half)
	for j := range inv {
		// transformers computes these in float32; match its rounding.
		inv[j] = float64(float32(1 / math.Pow(cfg.RopeTheta, float64(2*j)/float64(cfg.HeadDim))))
	}
	sc := cfg.RopeScaling
	if sc == nil {
		return &backend.RoPE{InvFreq: inv}, nil
	}
	switch sc.Type {
	case "", "default":
	case "linear":
		for j := range inv {
			inv[j] /= sc.Factor
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
	default:
		return nil, fmt.Errorf("model: rope scaling type %q is not supported (supported: llama3, linear)", sc.Type)
	}
	return &backend.RoPE{InvFreq: inv}, nil
}
