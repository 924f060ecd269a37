package backend

import "math"

// RoPE holds the rotary embedding's inverse frequencies, one per rotated pair
// (headDim/2 of them), already adjusted for any context-extension scaling (model/rope.go).
type RoPE struct {
	InvFreq []float64
}

// CosSin returns cos and sin of position*InvFreq[j] for every position: two
// [len(positions)][len(InvFreq)] tables, row-major.
func (r *RoPE) CosSin(positions []int) (cos, sin []float32) {
	half := len(r.InvFreq)
	cos = make([]float32, len(positions)*half)
	sin = make([]float32, len(positions)*half)
	for i, p := range positions {
		for j, f := range r.InvFreq {
			// The angle is formed in float32, as transformers does, so large positions
			// round the same way there and here.
			angle := float64(float32(p) * float32(f))
			s, c := math.Sincos(angle)
			cos[i*half+j], sin[i*half+j] = float32(c), float32(s)
		}
	}
	return cos, sin
}
