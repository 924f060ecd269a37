package eviction

import (
	"fmt"

	"github.com/lukv/lukv/model"
	lrt "github.com/lukv/lukv/runtime"
)

// Method is one eviction configuration: a scorer ranks tokens, an allocator splits the
// budget, and the first Sink and last Window tokens of every head are always kept.
type Method struct {
	Scorer    Scorer
	Allocator Allocator
	Ratio     float64 // compression ratio rho: the fraction of tokens to drop
	Sink      int
	Window    int
}

func (m Method) String() string {
	return fmt.Sprintf("%s/%s@%.2f", m.Scorer.Name(), m.Allocator.Name(), m.Ratio)
}

// Collector is a model.Observer that scores every layer's tokens during a prefill, so
// the cache can be compressed right after it. It holds only the scores, [layer][Nkv][T].
type Collector struct {
	Model  *model.Model
	Scorer Scorer
	Scores [][][]float32
	// OnView, when set, also receives every layer's view (the profiler keeps them).
	OnView func(v *LayerView)
}

// NewCollector returns a collector for model m and scorer s.
func NewCollector(m *model.Model, s Scorer) *Collector {
	return &Collector{Model: m, Scorer: s, Scores: make([][][]float32, m.Config.NumLayers)}
}

// ObserveLayer builds the layer's view from the backend's activations and scores it.
func (c *Collector) ObserveLayer(layer int, positions []int, x, q, k, v lrt.Tensor) {
	view := c.View(layer, positions, x, q, k, v)
	c.Scores[layer] = c.Scorer.Score(view)
	if c.OnView != nil {
		c.OnView(view)
	}
}

// View copies one layer's activations to the host as a LayerView, recomputing the
// pre-RoPE queries from the normalised input x.
func (c *Collector) View(layer int, positions []int, x, q, k, v lrt.Tensor) *LayerView {
	m, b := c.Model, c.Model.Backend
	cfg := m.Config
	n, d := len(positions), cfg.HeadDim
	l := &m.Layers[layer]
	pre := b.Alloc(n, cfg.NumHeads*d)
	defer b.Free(pre)
	b.MatMul(pre, x, l.Wq)
	if l.Bq != nil {
		b.AddBias(pre, l.Bq)
	}
	if l.QNorm != nil {
		b.HeadRMSNorm(pre, l.QNorm, d, float32(cfg.RMSNormEps))
	}
	view := &LayerView{
		Layer: layer, NumHeads: cfg.NumHeads, NumKVHeads: cfg.NumKVHeads, HeadDim: d,
		Positions: append([]int(nil), positions...), QueryPositions: append([]int(nil), positions...),
		Queries: b.Read(q), PreRoPEQueries: b.Read(pre),
		RoPE: m.RoPE,
	}
	keys, vals := b.Read(k), b.Read(v)
	view.Keys, view.Values = splitHeads(keys, n, cfg.NumKVHeads, d), splitHeads(vals, n, cfg.NumKVHeads, d)
	return view
}

// splitHeads turns [n, heads*d] into [heads][n*d].
func splitHeads(x []float32, n, heads, d int) [][]float32 {
	out := make([][]float32, heads)
	for h := range out {
		out[h] = make([]float32, n*d)
		for i := 0; i < n; i++ {
			copy(out[h][i*d:(i+1)*d], x[i*heads*d+h*d:i*heads*d+(h+1)*d])
		}
	}
	return out
}

// Compress applies the method to a cache whose every head holds exactly the T tokens the
// collector scored: per layer it protects sink and window, allocates, and compacts,
// leaving room for reserve more tokens per head.
func (m Method) Compress(cache lrt.KVCache, scores [][][]float32, reserve int) error {
	for layer, s := range scores {
		if s == nil {
			return fmt.Errorf("eviction: layer %d was not scored", layer)
		}
		for h := range s {
			if len(s[h]) != cache.Len(layer, h) {
				return fmt.Errorf("eviction: layer %d head %d has %d scores for %d cached tokens", layer, h, len(s[h]), cache.Len(layer, h))
			}
		}
		protected := make([][]float32, len(s))
		for h := range s {
			protected[h] = append([]float32(nil), s[h]...)
		}
		ProtectSinkWindow(protected, m.Sink, m.Window)
		keep, err := m.Allocator.Keep(layer, len(scores), protected, m.Ratio)
		if err != nil {
			return err
		}
		if err := cache.Compact(layer, keep, reserve); err != nil {
			return err
		}
	}
	return nil
}
