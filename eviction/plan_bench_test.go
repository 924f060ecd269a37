package eviction

import (
	"math/rand/v2"
	"testing"

	"github.com/lukv/lukv/backend"
)

// shapeCache is a KVCache of which Plan reads only the shape: L layers of H heads of T
// tokens.
type shapeCache struct {
	backend.KVCache
	L, H, T int
}

func (c shapeCache) Layers() int      { return c.L }
func (c shapeCache) KVHeads() int     { return c.H }
func (c shapeCache) Len(_, _ int) int { return c.T }

// BenchmarkPlan: Method.Plan (copy, sink/window protection, counts) for a
// Llama-3.1-8B-shaped cache (32 layers x 8 KV heads) after an 8192-token prefill, at
// ratio 0.5: the host work the device path now does before its one upload.
func BenchmarkPlan(b *testing.B) {
	const L, H, T = 32, 8, 8192
	r := rand.New(rand.NewPCG(1, 2))
	scores := make([][][]float32, L)
	for l := range scores {
		scores[l] = randScores(r, H, T)
	}
	cache := shapeCache{L: L, H: H, T: T}
	for _, a := range []Allocator{UniformAllocator{}, PyramidAllocator{Window: 64, Beta: 20}, AdaKVAllocator{Safeguard: 0.2}} {
		b.Run(a.Name(), func(b *testing.B) {
			m := Method{Allocator: a, Ratio: 0.5, Sink: 4, Window: 1}
			for b.Loop() {
				if _, err := m.Plan(cache, scores); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
