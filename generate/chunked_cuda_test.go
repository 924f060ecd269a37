//go:build cuda

package generate_test

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/backend/cpu"
	"github.com/lukv/lukv/backend/cuda"
	"github.com/lukv/lukv/eviction"
	"github.com/lukv/lukv/generate"
	"github.com/lukv/lukv/model"
	"github.com/lukv/lukv/models"
)

// The chunked prefill on the GPU, through the same driver: run on the GPU machine with
// gpubin/generate-cuda.test -test.run CUDA -test.v (scripts/bench-chunked.sh says how to
// build it). float32 weights and cache, no tensor cores, so the CPU is the reference.

func loadOn(t *testing.T, b backend.Backend) *model.Model {
	t.Helper()
	dir, err := models.DefaultDir()
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Load(dir, b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func gpu(t *testing.T) backend.Backend {
	t.Helper()
	b, err := cuda.New(cuda.Options{Weights: cuda.WeightsF32})
	if err != nil {
		t.Fatalf("cuda backend: %v", err)
	}
	return b
}

func ids(n, vocab int) []int {
	r := rand.New(rand.NewPCG(21, 2))
	out := make([]int, n)
	for i := range out {
		out[i] = r.IntN(vocab)
	}
	return out
}

// TestChunkedPrefillCUDA: on the GPU, chunked prefill without eviction gives the logits
// of the one-shot GPU prefill and of the CPU, for chunks of 1, 7, 64 and > prompt.
func TestChunkedPrefillCUDA(t *testing.T) {
	g := loadOn(t, gpu(t))
	c := loadOn(t, cpu.New())
	prompt := ids(200, g.Config.VocabSize)
	ref, err := c.Forward(context.Background(), prompt, 0, c.NewCache(len(prompt)), model.ForwardOptions{AllLogits: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, chunk := range []int{1, 7, 64, 1000} {
		got, err := generate.ChunkedPrefill{Chunk: chunk, AllLogits: true}.Run(context.Background(), g, prompt, g.NewCache(chunk))
		if err != nil {
			t.Fatal(err)
		}
		var maxErr, maxAbs float64
		for i := range ref {
			maxErr = max(maxErr, math.Abs(float64(got[i]-ref[i])))
			maxAbs = max(maxAbs, math.Abs(float64(ref[i])))
		}
		if tol := 1e-3 * max(maxAbs, 1); maxErr > tol {
			t.Errorf("chunk %d: max |GPU chunked - CPU one-shot| logit error %.3g > %.3g", chunk, maxErr, tol)
		}
		t.Logf("chunk %4d: max |GPU chunked - CPU one-shot| logit error %.3g (max |logit| %.1f)", chunk, maxErr, maxAbs)
	}
}

// TestChunkedEvictionCUDA: chunked eviction on the GPU keeps what it keeps on the CPU
// (scores from float32 activations that differ in rounding can swap near-tied tokens:
// at most 1% of the kept tokens may differ), and holds the same counts.
func TestChunkedEvictionCUDA(t *testing.T) {
	g := loadOn(t, gpu(t))
	c := loadOn(t, cpu.New())
	prompt := ids(300, g.Config.VocabSize)
	for _, name := range []string{"knorm", "snapkv", "expected-attention"} {
		scorer, _ := eviction.NewScorer(name)
		method := eviction.Method{Scorer: scorer, Allocator: eviction.UniformAllocator{}, Ratio: 0.8, Sink: 4, Window: 1}
		run := func(m *model.Model) *eviction.ChunkedEvictor {
			ev, err := eviction.NewChunkedEvictor(m, method)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := (generate.ChunkedPrefill{Chunk: 64, Evictor: ev}).Run(context.Background(), m, prompt, m.NewCache(64)); err != nil {
				t.Fatal(err)
			}
			return ev
		}
		eg, ec := run(g), run(c)
		var kept, differ int
		for l := 0; l < g.Config.NumLayers; l++ {
			for h := 0; h < g.Config.NumKVHeads; h++ {
				pg, pc := eg.Positions(l, h), ec.Positions(l, h)
				if len(pg) != len(pc) {
					t.Fatalf("%s layer %d head %d: GPU keeps %d tokens, CPU %d", name, l, h, len(pg), len(pc))
				}
				kept += len(pc)
				for _, p := range pc {
					if !slices.Contains(pg, p) {
						differ++
					}
				}
			}
		}
		if differ*100 > kept {
			t.Errorf("%s: %d of %d kept tokens differ between GPU and CPU", name, differ, kept)
		}
		t.Logf("%s: %d of %d kept tokens differ between GPU and CPU", name, differ, kept)
	}
}

// TestChunkedEvictionCUDAAllocatesOnce: on the GPU the evictor sizes the cache once, at
// its first compaction, for the end of the prompt (ChunkedEvictor.PlanChunks,
// KVCache.ReserveRows): no chunk after that reallocates a layer, the cache's bytes stay
// at the reservation, and the live bytes end at what the CPU keeps; with LU-KV-like
// per-head budgets (PyramidKV here: per-layer) as well as uniform ones.
func TestChunkedEvictionCUDAAllocatesOnce(t *testing.T) {
	g := loadOn(t, gpu(t))
	c := loadOn(t, cpu.New())
	prompt := ids(700, g.Config.VocabSize)
	scorer, _ := eviction.NewScorer("knorm")
	for _, alloc := range []eviction.Allocator{eviction.UniformAllocator{}, eviction.PyramidAllocator{Window: 8, Beta: 20}} {
		method := eviction.Method{Scorer: scorer, Allocator: alloc, Ratio: 0.8, Sink: 4, Window: 1}
		run := func(m *model.Model) []generate.ChunkStats {
			ev, err := eviction.NewChunkedEvictor(m, method)
			if err != nil {
				t.Fatal(err)
			}
			var stats []generate.ChunkStats
			p := generate.ChunkedPrefill{Chunk: 64, Evictor: ev, Reserve: 8, OnChunk: func(st generate.ChunkStats) { stats = append(stats, st) }}
			if _, err := p.Run(context.Background(), m, prompt, m.NewCache(64)); err != nil {
				t.Fatal(err)
			}
			if ev.Compacted == 0 {
				t.Fatalf("%s: no chunk compacted", alloc.Name())
			}
			return stats
		}
		sg, sc := run(g), run(c)
		first := -1
		for i, st := range sg {
			if first < 0 && st.LiveBytes < st.LiveBytesPeak {
				first = i // the first compaction
				continue
			}
			if first >= 0 && (st.Reallocations != 0 || st.Bytes != sg[first].Bytes) {
				t.Errorf("%s chunk %d (after the first compaction in chunk %d): %d reallocations, %d bytes held (reserved %d)",
					alloc.Name(), i, first, st.Reallocations, st.Bytes, sg[first].Bytes)
			}
		}
		if first < 0 {
			t.Fatalf("%s: no chunk shrank the cache", alloc.Name())
		}
		if got, want := sg[len(sg)-1].LiveBytes, sc[len(sc)-1].LiveBytes; got != want {
			t.Errorf("%s: GPU ends with %d live bytes, CPU %d", alloc.Name(), got, want)
		}
		t.Logf("%s: reserved %d bytes at chunk %d, %d live at the end", alloc.Name(), sg[first].Bytes, first, sg[len(sg)-1].LiveBytes)
	}
}
