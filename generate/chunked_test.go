package generate

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/lukv/lukv/backend/cpu"
	"github.com/lukv/lukv/model"
	"github.com/lukv/lukv/models"
)

func loadDefaultModel(t *testing.T) *model.Model {
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

func randomIDs(n, vocab int, seed uint64) []int {
	rng := rand.New(rand.NewPCG(seed, 1))
	ids := make([]int, n)
	for i := range ids {
		ids[i] = rng.IntN(vocab)
	}
	return ids
}

// TestChunkedPrefillMatchesOneShot: without eviction, a chunked prefill gives every
// prompt token the logits a one-shot prefill gives it (float32 rounding apart), for
// chunks of 1, 7, 64 tokens and longer than the prompt, and leaves the same cache.
func TestChunkedPrefillMatchesOneShot(t *testing.T) {
	m := loadDefaultModel(t)
	V := m.Config.VocabSize
	ids := randomIDs(150, V, 3)
	ref := m.NewCache(len(ids))
	want, err := m.Forward(context.Background(), ids, 0, ref, model.ForwardOptions{AllLogits: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, chunk := range []int{1, 7, 64, 1000} {
		cache := m.NewCache(0)
		var chunks int
		got, err := ChunkedPrefill{Chunk: chunk, AllLogits: true, OnChunk: func(ChunkStats) { chunks++ }}.Run(context.Background(), m, ids, cache)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("chunk %d: %d logits, want %d", chunk, len(got), len(want))
		}
		if wantChunks := (len(ids) + chunk - 1) / chunk; chunks != wantChunks {
			t.Errorf("chunk %d: %d chunks reported, want %d", chunk, chunks, wantChunks)
		}
		var maxErr, maxAbs float64
		for i := range got {
			maxErr = max(maxErr, math.Abs(float64(got[i]-want[i])))
			maxAbs = max(maxAbs, math.Abs(float64(want[i])))
		}
		// float32 logits of magnitude ~maxAbs; a different summation order in the
		// matmuls moves them by a few ulps per layer.
		if tol := 1e-5 * max(maxAbs, 1); maxErr > tol {
			t.Errorf("chunk %d: max |logit error| %.3g > %.3g", chunk, maxErr, tol)
		}
		t.Logf("chunk %4d: max |logit error| %.3g over %d tokens x %d vocab (max |logit| %.1f)", chunk, maxErr, len(ids), V, maxAbs)
		for l := 0; l < cache.Layers(); l++ {
			for h := 0; h < cache.KVHeads(); h++ {
				if cache.Len(l, h) != len(ids) {
					t.Fatalf("chunk %d: layer %d head %d holds %d tokens, want %d", chunk, l, h, cache.Len(l, h), len(ids))
				}
			}
		}
	}
}

func TestChunkedPrefillBadInput(t *testing.T) {
	m := loadDefaultModel(t)
	for _, p := range []ChunkedPrefill{{Chunk: 0}, {Chunk: -3}, {Chunk: 4, Reserve: -1}} {
		if _, err := p.Run(context.Background(), m, []int{1, 2, 3}, m.NewCache(0)); err == nil {
			t.Errorf("%+v: no error", p)
		}
	}
	if _, err := (ChunkedPrefill{Chunk: 4}).Run(context.Background(), m, nil, m.NewCache(0)); err == nil {
		t.Error("empty prompt: no error")
	}
	if got := DefaultChunk(16384); got != 2048 {
		t.Errorf("DefaultChunk(16384) = %d, want 2048", got)
	}
	if got := DefaultChunk(512); got != 512 {
		t.Errorf("DefaultChunk(512) = %d, want 512", got)
	}
}
