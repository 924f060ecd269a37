package cpu

import (
	"math"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/backend/cpu/vec"
)

// Attention appends the new keys and values to the layer's per-head cache, then for every
// query head and query row computes softmax(q.K^T * scale) V over the visible entries of
// its KV head. Work is split over (query head, block of rows).
func (b *Backend) Attention(out, q, k, v backend.Tensor, cache backend.KVCache, layer int, scale float32) {
	b.attention(out, q, k, v, cache, layer, scale, 0)
}

// AttentionWindow is Attention over each query's newest window entries only
// (backend.WindowedAttention).
func (b *Backend) AttentionWindow(out, q, k, v backend.Tensor, cache backend.KVCache, layer int, scale float32, window int) {
	b.attention(out, q, k, v, cache, layer, scale, window)
}

// attention is Attention restricted to the newest window visible entries; 0: all.
func (b *Backend) attention(out, q, k, v backend.Tensor, cache backend.KVCache, layer int, scale float32, window int) {
	c := cache.(*KVCache)
	om, qm := mat(out), mat(q)
	c.appendTokens(layer, mat(k), mat(v))

	d := c.headDim
	n := qm.R
	heads := qm.C / d
	group := heads / c.kvHeads
	l := &c.l[layer]
	const rowsPerTask = 16
	rowBlocks := (n + rowsPerTask - 1) / rowsPerTask
	parallelFor(b.threads(), heads*rowBlocks, func(task int) {
		h, blk := task/rowBlocks, task%rowBlocks
		kvh := h / group
		total := l.Len[kvh]
		keys := l.k[l.Off[kvh]*d : (l.Off[kvh]+total)*d]
		vals := l.v[l.Off[kvh]*d : (l.Off[kvh]+total)*d]
		scores := make([]float32, total)
		for i := blk * rowsPerTask; i < min((blk+1)*rowsPerTask, n); i++ {
			visible := total - n + i + 1
			first := 0 // the oldest visible entry
			if window > 0 && visible > window {
				first = visible - window
			}
			qrow := qm.Data[i*qm.C+h*d : i*qm.C+(h+1)*d]
			orow := om.Data[i*om.C+h*d : i*om.C+(h+1)*d]
			ks, vs := keys[first*d:], vals[first*d:]
			attendRow(orow, qrow, func(j int) []float32 { return ks[j*d:] }, func(j int) []float32 { return vs[j*d:] },
				scores[:visible-first], d, scale)
		}
	})
}

// attendRow writes softmax(q.K^T*scale) V for one query over the first len(scores)
// keys. key(j) and val(j) return a run of whole rows starting at entry j (the contiguous
// cache: all the rest; the paged cache: one row), so both caches share this arithmetic
// and give the same bits (package vec's row kernels do not depend on how rows are split).
func attendRow(out []float32, q []float32, key, val func(j int) []float32, scores []float32, d int, scale float32) {
	for j := 0; j < len(scores); {
		run := key(j)
		m := min(len(run)/d, len(scores)-j)
		vec.DotRows(scores[j:j+m], q, run[:m*d])
		j += m
	}
	maxs := float32(math.Inf(-1))
	for j, s := range scores {
		s *= scale
		scores[j] = s
		maxs = max(maxs, s)
	}
	inv := 1 / vec.ExpSub(scores, maxs)
	for j := range scores {
		scores[j] *= inv
	}
	clear(out)
	for j := 0; j < len(scores); {
		run := val(j)
		m := min(len(run)/d, len(scores)-j)
		vec.AddWeightedRows(out, scores[j:j+m], run[:m*d])
		j += m
	}
}
