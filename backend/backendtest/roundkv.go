package backendtest

import (
	"math"
	"math/rand/v2"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/loader"
)

// RoundBF16 rounds every value to the nearest bfloat16 (ties to even), as float32.
func RoundBF16(x []float32) []float32 {
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = loader.BF16ToFloat32(loader.Float32ToBF16(v))
	}
	return out
}

// RoundedKV is a backend whose Attention rounds the new keys and values to bf16 before
// they enter the (float32) cache: a bf16 KV cache, simulated on any backend. With
// JitterULPs > 0 each key and value is first moved by a random whole number of float32
// ulps in [-JitterULPs, JitterULPs] (drawn from Rand), as a different order of float32
// operations on another device might: it measures what rounding-boundary flips alone do.
type RoundedKV struct {
	backend.Backend
	JitterULPs int
	Rand       *rand.Rand
}

func (r RoundedKV) Attention(out, q, k, v backend.Tensor, cache backend.KVCache, layer int, scale float32) {
	round := func(t backend.Tensor) backend.Tensor {
		x := r.Read(t)
		if r.JitterULPs > 0 {
			for i, a := range x {
				d := r.Rand.IntN(2*r.JitterULPs+1) - r.JitterULPs
				x[i] = math.Float32frombits(uint32(int32(math.Float32bits(a)) + int32(d)))
			}
		}
		w, err := r.Weight(RoundBF16(x), t.Rows(), t.Cols())
		if err != nil {
			panic(err) // an upload of what was just read: out of memory at most
		}
		return w
	}
	r.Backend.Attention(out, q, round(k), round(v), cache, layer, scale)
}
