package eviction

import (
	"fmt"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/model"
)

// DecodeEvictor keeps a cache within budget during long generation (decode-time
// eviction). Budgets are each head's size right after the prompt was compressed; every
// Every decode steps, a head that has grown past its budget is cut back to it, ranked by
// the method's scorer from the head's cached keys and values and the queries of the last
// Buffer tokens (as kvpress's DecodingPress does). Buffer must not exceed Every, so the
// buffered tokens are still the last entries of every head.
type DecodeEvictor struct {
	Method Method
	Model  *model.Model
	Every  int
	Buffer int
	budget [][]int // [layer][head]

	collector *Collector
	recentQ   [][][]float32 // [layer][row][Nq*D] rotated queries of recent tokens
	recentPre [][][]float32 // [layer][row][Nq*D] pre-RoPE queries
	recentPos []int         // positions of the buffered tokens (shared by layers)
	Evictions int           // how many times heads were cut back
}

// NewDecodeEvictor returns an evictor for model m.
func NewDecodeEvictor(m *model.Model, method Method, every, buffer int) (*DecodeEvictor, error) {
	if every < 1 || buffer < 1 || buffer > every {
		return nil, fmt.Errorf("decode-time eviction: need 1 <= buffer (%d) <= every (%d)", buffer, every)
	}
	L := m.Config.NumLayers
	return &DecodeEvictor{Method: method, Model: m, Every: every, Buffer: buffer,
		collector: NewCollector(m, method.Scorer), recentQ: make([][][]float32, L), recentPre: make([][][]float32, L)}, nil
}

// SetBudgets records every head's current size as its budget.
func (e *DecodeEvictor) SetBudgets(cache backend.KVCache) {
	e.budget = make([][]int, cache.Layers())
	for l := range e.budget {
		e.budget[l] = make([]int, cache.KVHeads())
		for h := range e.budget[l] {
			e.budget[l][h] = cache.Len(l, h)
		}
	}
}

// ObserveLayer buffers the queries of the decode step's token (model.Observer).
func (e *DecodeEvictor) ObserveLayer(layer int, positions []int, x, q, k, v backend.Tensor) {
	view := e.collector.View(layer, positions, x, q, k, v)
	w := view.NumHeads * view.HeadDim
	for i := range positions {
		e.recentQ[layer] = append(e.recentQ[layer], view.Queries[i*w:(i+1)*w])
		e.recentPre[layer] = append(e.recentPre[layer], view.PreRoPEQueries[i*w:(i+1)*w])
		if layer == 0 {
			e.recentPos = append(e.recentPos, positions[i])
		}
	}
	if n := len(e.recentQ[layer]); n > e.Buffer {
		e.recentQ[layer] = e.recentQ[layer][n-e.Buffer:]
		e.recentPre[layer] = e.recentPre[layer][n-e.Buffer:]
	}
	if layer == len(e.recentQ)-1 && len(e.recentPos) > e.Buffer {
		e.recentPos = e.recentPos[len(e.recentPos)-e.Buffer:]
	}
}

// AfterStep cuts heads back to their budgets every Every generated tokens.
func (e *DecodeEvictor) AfterStep(cache backend.KVCache, generated int) error {
	if e.budget == nil || generated%e.Every != 0 || len(e.recentPos) == 0 {
		return nil
	}
	cfg := e.Model.Config
	group := cfg.NumHeads / cfg.NumKVHeads
	d := cfg.HeadDim
	lastPos := e.recentPos[len(e.recentPos)-1]
	for l := 0; l < cache.Layers(); l++ {
		keep := make([][]int, cache.KVHeads())
		cut := false
		for h := range keep {
			T := cache.Len(l, h)
			keep[h] = iotaInts(T)
			if T <= e.budget[l][h] {
				continue
			}
			cut = true
			view := &LayerView{Layer: l, NumHeads: group, NumKVHeads: 1, HeadDim: d, RoPE: e.Model.RoPE,
				Keys: [][]float32{cache.Keys(l, h)}, Values: [][]float32{cache.Values(l, h)},
				QueryPositions: append([]int(nil), e.recentPos...)}
			// The kept tokens' original positions are not stored; they are laid out
			// contiguously up to the current one, which keeps their order and puts the
			// buffered tokens at their true positions.
			view.Positions = make([]int, T)
			for j := range view.Positions {
				view.Positions[j] = lastPos - (T - 1 - j)
			}
			for i := range e.recentQ[l] {
				view.Queries = append(view.Queries, e.recentQ[l][i][h*group*d:(h+1)*group*d]...)
				view.PreRoPEQueries = append(view.PreRoPEQueries, e.recentPre[l][i][h*group*d:(h+1)*group*d]...)
			}
			scores := e.Method.Scorer.Score(view)
			if scores == nil {
				return fmt.Errorf("decode-time eviction: layer %d head %d: %w", l, h, CheckScorerView(e.Method.Scorer, view))
			}
			ProtectSinkWindow(scores, e.Method.Sink, e.Method.Window)
			keep[h] = topK(scores[0], max(e.budget[l][h], Protected(T, e.Method.Sink, e.Method.Window)))
		}
		if cut {
			if err := cache.Compact(l, keep, e.Every); err != nil {
				return err
			}
			e.Evictions++
		}
	}
	return nil
}

func iotaInts(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}
