package eviction_test

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/backend/cpu"
	"github.com/lukv/lukv/eviction"
	"github.com/lukv/lukv/generate"
	"github.com/lukv/lukv/model"
	"github.com/lukv/lukv/models"
	"github.com/lukv/lukv/tokenizer"
)

func loadDefault(t *testing.T) *model.Model {
	t.Helper()
	dir, err := models.DefaultDir()
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Load(dir, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func promptIDs(n, vocab int) []int {
	rng := rand.New(rand.NewPCG(11, 5))
	ids := make([]int, n)
	for i := range ids {
		ids[i] = rng.IntN(vocab)
	}
	return ids
}

// allocators returns every allocator, LU-KV with the default model's curve for scorer.
func allocators(t *testing.T, scorer string) []eviction.Allocator {
	t.Helper()
	p, err := models.DefaultCurve(scorer)
	if err != nil {
		p, err = models.DefaultCurve("expected-attention")
	}
	if err != nil {
		t.Fatal(err)
	}
	curve, err := eviction.ReadNPY(p)
	if err != nil {
		t.Fatal(err)
	}
	var out []eviction.Allocator
	for _, name := range eviction.AllocatorNames() {
		a, err := eviction.NewAllocator(name, curve)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

// chunked prefills ids chunk by chunk with method and returns the cache, the evictor and
// the peak live bytes over the run.
func chunked(t *testing.T, m *model.Model, ids []int, method eviction.Method, chunk int) (backend.KVCache, *eviction.ChunkedEvictor, int64) {
	t.Helper()
	ev, err := eviction.NewChunkedEvictor(m, method)
	if err != nil {
		t.Fatal(err)
	}
	cache := m.NewCache(chunk)
	var peak int64
	p := generate.ChunkedPrefill{Chunk: chunk, Evictor: ev, OnChunk: func(st generate.ChunkStats) {
		peak = max(peak, st.LiveBytesPeak, st.LiveBytes)
	}}
	if _, err := p.Run(context.Background(), m, ids, cache); err != nil {
		t.Fatalf("%s chunk %d: %v", method, chunk, err)
	}
	return cache, ev, peak
}

// TestChunkedOneChunkKeepsWhatOneShotKeeps: a prompt in one chunk keeps, in every head,
// exactly the tokens a one-shot prefill and Method.Compress keep, for every scorer and
// allocator.
func TestChunkedOneChunkKeepsWhatOneShotKeeps(t *testing.T) {
	m := loadDefault(t)
	ids := promptIDs(120, m.Config.VocabSize)
	for _, name := range eviction.ScorerNames() {
		scorer, err := eviction.NewScorer(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, alloc := range allocators(t, name) {
			method := eviction.Method{Scorer: scorer, Allocator: alloc, Ratio: 0.7, Sink: 4, Window: 1}
			ref := m.NewCache(len(ids))
			col := eviction.NewCollector(m, scorer)
			if _, err := m.Forward(context.Background(), ids, 0, ref, model.ForwardOptions{Observer: col}); err != nil {
				t.Fatal(err)
			}
			if err := method.Compress(ref, col.Scores, 0); err != nil {
				t.Fatal(err)
			}
			got, _, _ := chunked(t, m, ids, method, len(ids)+5)
			for l := 0; l < ref.Layers(); l++ {
				for h := 0; h < ref.KVHeads(); h++ {
					if !slices.Equal(got.Keys(l, h), ref.Keys(l, h)) || !slices.Equal(got.Values(l, h), ref.Values(l, h)) {
						t.Fatalf("%s: layer %d head %d: one chunk kept %d tokens, one-shot %d, or different ones", method, l, h, got.Len(l, h), ref.Len(l, h))
					}
				}
			}
		}
	}
}

// TestChunkedEvictionWithinBudget: with every scorer and allocator at 0.8 and chunks of
// 1, 7 and 64 tokens, the cache's live memory never exceeds the final budget plus one
// chunk per head, every head ends with the budget its allocator gives the whole prompt
// (uniform, PyramidKV, LU-KV, each raised to the sink/window floor; AdaKV: the layer's
// total), the sink and last tokens are
// kept (the sinks where the budget always covered them: uniform), and the evictor's positions are ascending and of the right count.
func TestChunkedEvictionWithinBudget(t *testing.T) {
	m := loadDefault(t)
	cfg := m.Config
	ids := promptIDs(200, cfg.VocabSize)
	S := len(ids)
	tokenBytes := int64(2 * cfg.HeadDim * 4)
	for _, name := range eviction.ScorerNames() {
		scorer, _ := eviction.NewScorer(name)
		for _, alloc := range allocators(t, name) {
			method := eviction.Method{Scorer: scorer, Allocator: alloc, Ratio: 0.8, Sink: 4, Window: 1}
			chunks := []int{7, 64}
			if name == "knorm" && alloc.Name() == "uniform" || name == "snapkv" && alloc.Name() == "lukv" {
				chunks = append(chunks, 1) // chunk 1 is slow: two combinations suffice
			}
			for _, chunk := range chunks {
				cache, ev, peak := chunked(t, m, ids, method, chunk)
				var final int64
				for l := 0; l < cfg.NumLayers; l++ {
					var want []int
					switch a := alloc.(type) {
					case eviction.UniformAllocator:
						want = slices.Repeat([]int{max(1, int(float64(S)*0.2+1e-9))}, cfg.NumKVHeads)
					case eviction.PyramidAllocator:
						want = slices.Repeat([]int{max(1, a.LayerBudget(l, cfg.NumLayers, S, 0.8))}, cfg.NumKVHeads)
					case eviction.LUKVAllocator:
						want, _ = a.Curve.KeepCounts(l, 0.8, S)
					}
					for h := range want { // the sink/window floor (package doc)
						want[h] = max(want[h], eviction.Protected(S, method.Sink, method.Window))
					}
					layerTotal := 0
					for h := 0; h < cfg.NumKVHeads; h++ {
						n := cache.Len(l, h)
						final += int64(n)
						layerTotal += n
						if want != nil && n != want[h] {
							t.Errorf("%s chunk %d: layer %d head %d keeps %d, the allocator gives %d for %d tokens", method, chunk, l, h, n, want[h], S)
						}
						pos := ev.Positions(l, h)
						if len(pos) != n || !slices.IsSorted(pos) {
							t.Fatalf("%s chunk %d: layer %d head %d: positions %v for %d tokens", method, chunk, l, h, pos, n)
						}
						_, uniform := alloc.(eviction.UniformAllocator)
						if !slices.Contains(pos, S-1) || uniform && !slices.Contains(pos, 0) {
							t.Errorf("%s chunk %d: layer %d head %d lost a protected token: %v", method, chunk, l, h, pos)
						}
					}
					if _, ok := alloc.(eviction.AdaKVAllocator); ok && layerTotal > cfg.NumKVHeads*int(float64(S)*0.2+1e-9)+cfg.NumKVHeads {
						t.Errorf("%s chunk %d: layer %d keeps %d tokens, over AdaKV's pooled budget", method, chunk, l, layerTotal)
					}
				}
				bound := (final + int64(cfg.NumLayers*cfg.NumKVHeads*chunk)) * tokenBytes
				if peak > bound {
					t.Errorf("%s chunk %d: peak live KV %d bytes > final budget + one chunk = %d bytes", method, chunk, peak, bound)
				}
				if ev.Compacted == 0 {
					t.Errorf("%s chunk %d: never compacted", method, chunk)
				}
			}
		}
	}
}

// TestChunkedStreamingKeepsSinksAndRecent: StreamingLLM chunk by chunk keeps what it
// keeps in one shot, the sinks and the most recent tokens, whatever the chunk.
func TestChunkedStreamingKeepsSinksAndRecent(t *testing.T) {
	m := loadDefault(t)
	ids := promptIDs(150, m.Config.VocabSize)
	scorer, _ := eviction.NewScorer("streaming")
	method := eviction.Method{Scorer: scorer, Allocator: eviction.UniformAllocator{}, Ratio: 0.8, Sink: 4, Window: 1}
	budget := int(150 * 0.2)
	want := []int{0, 1, 2, 3}
	for p := 150 - (budget - 4); p < 150; p++ {
		want = append(want, p)
	}
	for _, chunk := range []int{3, 16, 50} {
		_, ev, _ := chunked(t, m, ids, method, chunk)
		for l := 0; l < m.Config.NumLayers; l++ {
			for h := 0; h < m.Config.NumKVHeads; h++ {
				if got := ev.Positions(l, h); !slices.Equal(got, want) {
					t.Fatalf("chunk %d layer %d head %d keeps %v, want %v", chunk, l, h, got, want)
				}
			}
		}
	}
}

func TestChunkedEvictorBadInput(t *testing.T) {
	m := loadDefault(t)
	scorer, _ := eviction.NewScorer("knorm")
	if _, err := eviction.NewChunkedEvictor(m, eviction.Method{Scorer: scorer, Allocator: eviction.UniformAllocator{}, Ratio: 1}); err == nil {
		t.Error("ratio 1: no error")
	}
	if _, err := eviction.NewChunkedEvictor(m, eviction.Method{Scorer: scorer, Ratio: 0.5}); err == nil {
		t.Error("no allocator: no error")
	}
	ev, _ := eviction.NewChunkedEvictor(m, eviction.Method{Scorer: scorer, Allocator: eviction.UniformAllocator{}, Ratio: 0.5})
	cache := m.NewCache(4)
	if err := ev.StartChunk(cache, 3, 4); err == nil {
		t.Error("first chunk at position 3: no error")
	}
	if err := ev.EndChunk(cache, true, 0); err == nil {
		t.Error("EndChunk without StartChunk: no error")
	}
}

// TestGenerateChunked: generate.Options.Chunked with an evictor and a context longer
// than the chunk records every chunk and the peak, holds the budget at the end, and with
// the context in one chunk generates exactly what one-shot eviction generates.
func TestGenerateChunked(t *testing.T) {
	m := loadDefault(t)
	ids := promptIDs(180, m.Config.VocabSize)
	ctxLen := 160
	scorer, _ := eviction.NewScorer("snapkv")
	method := eviction.Method{Scorer: scorer, Allocator: eviction.UniformAllocator{}, Ratio: 0.75, Sink: 4, Window: 1}
	dir, _ := models.DefaultDir()
	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	g := &generate.Generator{Model: m, Tokenizer: tok}
	col := eviction.NewCollector(m, scorer)
	ref, err := g.Generate(context.Background(), ids, generate.Options{MaxNewTokens: 8, IgnoreEOS: true, ContextTokens: ctxLen, Observer: col,
		AfterPrefill: func(c backend.KVCache, _ int) error { return method.Compress(c, col.Scores, len(ids)-ctxLen+8) }})
	if err != nil {
		t.Fatal(err)
	}
	for _, chunk := range []int{ctxLen, 50} {
		ev, _ := eviction.NewChunkedEvictor(m, method)
		res, err := g.Generate(context.Background(), ids, generate.Options{MaxNewTokens: 8, IgnoreEOS: true, ContextTokens: ctxLen,
			Chunked: &generate.ChunkedPrefill{Chunk: chunk, Evictor: ev}})
		if err != nil {
			t.Fatal(err)
		}
		if want := (ctxLen + chunk - 1) / chunk; len(res.Chunks) != want {
			t.Errorf("chunk %d: %d chunks recorded, want %d", chunk, len(res.Chunks), want)
		}
		if res.KVLiveCompressed != ref.KVLiveCompressed {
			t.Errorf("chunk %d: %d live bytes after the context, one-shot %d", chunk, res.KVLiveCompressed, ref.KVLiveCompressed)
		}
		if chunk == ctxLen && !slices.Equal(res.Tokens, ref.Tokens) {
			t.Errorf("one chunk generated %v, one-shot %v", res.Tokens, ref.Tokens)
		}
		t.Logf("chunk %d: peak live %d bytes (one-shot %d), after %d; tokens %v (one-shot %v)", chunk, res.KVLivePrefill, ref.KVLivePrefill, res.KVLiveCompressed, res.Tokens, ref.Tokens)
	}
}
