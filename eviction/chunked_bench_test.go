package eviction

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkChunkedKeep: one layer's selection at the end of a chunk of 4096 tokens after
// S positions, 8 KV heads, 90% compression (an 8B model does this for 32 layers every
// chunk): the reference over all S positions against keepLive over the kept tokens and
// the chunk.
func BenchmarkChunkedKeep(b *testing.B) {
	for _, S := range []int{131072, 1 << 20} {
		const nkv, chunk = 8, 4096
		e := &ChunkedEvictor{Method: Method{Allocator: UniformAllocator{}, Ratio: 0.9, Sink: 4, Window: 64}, pos: [][][]int{make([][]int, nkv)}}
		r := rand.New(rand.NewPCG(1, 2))
		live := uniformBudget(S-chunk, 0.9) + chunk
		scores := make([][]float32, nkv)
		for h := range scores {
			step := float64(S-chunk) / float64(live-chunk)
			for i := 0; i < live-chunk; i++ {
				e.pos[0][h] = append(e.pos[0][h], int(float64(i)*step))
			}
			for p := S - chunk; p < S; p++ {
				e.pos[0][h] = append(e.pos[0][h], p)
			}
			scores[h] = make([]float32, live)
			for j := range scores[h] {
				scores[h][j] = r.Float32()
			}
		}
		b.Run(fmt.Sprintf("padded/S=%d", S), func(b *testing.B) {
			for b.Loop() {
				if _, err := e.keepPadded(0, 32, S, scores); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("live/S=%d", S), func(b *testing.B) {
			for b.Loop() {
				if _, ok, err := e.keepLive(0, 32, S, scores); err != nil || !ok {
					b.Fatal(ok, err)
				}
			}
		})
	}
}
