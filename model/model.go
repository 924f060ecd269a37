// Package model is the Llama-family forward pass (Llama, Mistral, Qwen2, Qwen3), written
// once against backend.Backend.
package model

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/loader"
)

// Model holds a loaded checkpoint's weights on one backend.
// Shapes use H = hidden size, D = head dim, Nq = query heads, Nkv = KV heads,
// F = intermediate size, V = vocabulary.
type Model struct {
	Config  *loader.Config
	Backend backend.Backend
	RoPE    *backend.RoPE // frequencies for positions within max_position_embeddings (see DynamicRoPE past it)

	attnFactor float64 // YaRN's cos/sin factor (AttentionFactor); 1 otherwise

	Embed  backend.Tensor // [V, H]
	Layers []Layer
	Norm   backend.Tensor // [1, H]
	LMHead backend.Tensor // [V, H]; the same tensor as Embed when tied
}

// Layer is one transformer block's weights.
type Layer struct {
	AttnNorm   backend.Tensor // [1, H]
	Wq         backend.Tensor // [Nq*D, H]
	Wk, Wv     backend.Tensor // [Nkv*D, H]
	Wo         backend.Tensor // [H, Nq*D]
	Bo         backend.Tensor // [1, H]     Llama/Qwen3 with attention_bias only, else nil
	Bq         backend.Tensor // [1, Nq*D]  Qwen2 only, else nil
	Bk, Bv     backend.Tensor // [1, Nkv*D] Qwen2 only, else nil
	QNorm      backend.Tensor // [1, D]     Qwen3 only, else nil
	KNorm      backend.Tensor // [1, D]     Qwen3 only, else nil
	MLPNorm    backend.Tensor // [1, H]
	Wgate, Wup backend.Tensor // [F, H]
	Wdown      backend.Tensor // [H, F]
}

// Observer receives each layer's activations during a forward pass. x is the layer's
// input after the attention RMSNorm [n, H]; q [n, Nq*D] and k [n, Nkv*D] are rotated;
// v [n, Nkv*D]. It is called before the new keys and values enter the cache.
type Observer interface {
	ObserveLayer(layer int, positions []int, x, q, k, v backend.Tensor)
}

// ErrContextTooLong is returned when tokens would pass the model's context length.
var ErrContextTooLong = errors.New("context too long")

// Load reads a checkpoint onto backend b: a Hugging Face folder (config.json, with
// generation_config.json when present, and the safetensors weights) or a GGUF file
// (recognised by its magic). LoadWith takes options (the weights' format).
func Load(dir string, b backend.Backend) (*Model, error) {
	return LoadWith(dir, b, LoadOptions{})
}

// FromCheckpoint builds a model from opened weights (a safetensors checkpoint, a GGUF
// file), checking every tensor's shape and that the weights have exactly the config's
// number of layers.
func FromCheckpoint(cfg *loader.Config, ck loader.Weights, b backend.Backend) (*Model, error) {
	return FromCheckpointWith(cfg, ck, b, LoadOptions{})
}

// FromCheckpointWith is FromCheckpoint with options.
func FromCheckpointWith(cfg *loader.Config, ck loader.Weights, b backend.Backend, opt LoadOptions) (*Model, error) {
	wl, err := newWeightLoader(ck, b, opt)
	if err != nil {
		return nil, err
	}
	rope, err := NewRoPE(cfg)
	if err != nil {
		return nil, err
	}
	if n := loader.LayerCount(ck.Names()); n != cfg.NumLayers {
		return nil, fmt.Errorf("model: config num_hidden_layers is %d but the weights have %d layers (model.layers.N tensors): %w", cfg.NumLayers, n, loader.ErrBadConfig)
	}
	m := &Model{Config: cfg, Backend: b, RoPE: rope, attnFactor: AttentionFactor(cfg)}
	H, D, F, V := cfg.HiddenSize, cfg.HeadDim, cfg.IntermediateSize, cfg.VocabSize
	q, kv := cfg.NumHeads*D, cfg.NumKVHeads*D

	// get loads one tensor of shape [rows, cols] (a vector when rows is 0).
	get := func(name string, rows, cols int) (backend.Tensor, error) {
		if rows > 0 {
			return wl.matrix(name, rows, cols)
		}
		data, err := ck.Expect(name, cols)
		if err != nil {
			return nil, err
		}
		return b.Weight(data, 1, cols)
	}
	type want struct {
		dst        *backend.Tensor
		name       string
		rows, cols int
	}
	wants := []want{{&m.Embed, "model.embed_tokens.weight", V, H}, {&m.Norm, "model.norm.weight", 0, H}}
	m.Layers = make([]Layer, cfg.NumLayers)
	for i := range m.Layers {
		l, p := &m.Layers[i], fmt.Sprintf("model.layers.%d.", i)
		wants = append(wants,
			want{&l.AttnNorm, p + "input_layernorm.weight", 0, H},
			want{&l.Wq, p + "self_attn.q_proj.weight", q, H},
			want{&l.Wk, p + "self_attn.k_proj.weight", kv, H},
			want{&l.Wv, p + "self_attn.v_proj.weight", kv, H},
			want{&l.Wo, p + "self_attn.o_proj.weight", H, q},
			want{&l.MLPNorm, p + "post_attention_layernorm.weight", 0, H},
			want{&l.Wgate, p + "mlp.gate_proj.weight", F, H},
			want{&l.Wup, p + "mlp.up_proj.weight", F, H},
			want{&l.Wdown, p + "mlp.down_proj.weight", H, F})
		if cfg.AttentionBias {
			wants = append(wants,
				want{&l.Bq, p + "self_attn.q_proj.bias", 0, q},
				want{&l.Bk, p + "self_attn.k_proj.bias", 0, kv},
				want{&l.Bv, p + "self_attn.v_proj.bias", 0, kv})
		}
		if cfg.OutputBias {
			wants = append(wants, want{&l.Bo, p + "self_attn.o_proj.bias", 0, H})
		}
		if cfg.QKNorm {
			wants = append(wants,
				want{&l.QNorm, p + "self_attn.q_norm.weight", 0, D},
				want{&l.KNorm, p + "self_attn.k_norm.weight", 0, D})
		}
	}
	if !cfg.TieWordEmbeddings {
		wants = append(wants, want{&m.LMHead, "lm_head.weight", V, H})
	}
	for _, w := range wants {
		t, err := get(w.name, w.rows, w.cols)
		if err != nil {
			return nil, err
		}
		*w.dst = t
	}
	if cfg.TieWordEmbeddings {
		m.LMHead = m.Embed
	}
	return m, nil
}

// NewCache makes an empty KV cache for this model with room for reserve tokens per head.
func (m *Model) NewCache(reserve int) backend.KVCache {
	c := m.Config
	return m.Backend.NewKVCache(c.NumLayers, c.NumKVHeads, c.HeadDim, reserve)
}

// ForwardOptions are the per-call options of Forward. The zero value returns the last
// row's logits and observes nothing.
type ForwardOptions struct {
	// AllLogits returns the logits of every row ([n*V]) instead of the last row's ([V]).
	AllLogits bool
	// Observer, when set, sees every layer's attention inputs (eviction scorers read
	// queries, keys and values here).
	Observer Observer
}

// Forward runs tokens ids, at positions pos0 .. pos0+n-1, through the model: their keys
// and values are appended to cache, and the logits come back (see ForwardOptions).
//
// ctx is checked before every layer: a cancelled pass returns ctx's error within one
// layer's time, and leaves the cache with the new tokens in some layers only (Truncate
// it to pos0, or drop it).
func (m *Model) Forward(ctx context.Context, ids []int, pos0 int, cache backend.KVCache, opt ForwardOptions) (logits []float32, err error) {
	return m.forward(ctx, []Segment{{IDs: ids, Pos0: pos0, Cache: cache}}, !opt.AllLogits, opt.Observer)
}

// Segment is one sequence's part of a batched forward pass: tokens IDs at positions
// Pos0 .. Pos0+len(IDs)-1, whose keys and values go to Cache.
type Segment struct {
	IDs   []int
	Pos0  int
	Cache backend.KVCache
}

// ForwardBatch runs several sequences in one pass: the matmuls see all their rows at
// once (the weights are read once per step for the whole batch), each sequence attends
// over its own cache. It returns the logits of each segment's last token, [len(segs)][V].
// Observers watch single-sequence passes only (Forward); ctx is checked as in Forward.
func (m *Model) ForwardBatch(ctx context.Context, segs []Segment) ([][]float32, error) {
	if len(segs) == 0 {
		return nil, errors.New("model: batched forward of no sequences")
	}
	flat, err := m.forward(ctx, segs, true, nil)
	if err != nil {
		return nil, err
	}
	V := m.Config.VocabSize
	out := make([][]float32, len(segs))
	for i := range out {
		out[i] = flat[i*V : (i+1)*V]
	}
	return out, nil
}

// forward is the forward pass over one or more segments stacked as rows. With lastOnly
// it returns the logits of each segment's last row ([len(segs)*V]), else of every row.
func (m *Model) forward(ctx context.Context, segs []Segment, lastOnly bool, obs Observer) (logits []float32, err error) {
	// Backend methods without an error result (Alloc, the ops) panic with an error wrapping
	// backend.ErrOutOfMemory when the device is full; turn that into an error here.
	defer func() {
		if r := recover(); r != nil {
			if e, ok := r.(error); ok && errors.Is(e, backend.ErrOutOfMemory) {
				logits, err = nil, fmt.Errorf("model: forward of %d sequences at position %d: %w", len(segs), segs[0].Pos0, e)
				return
			}
			panic(r)
		}
	}()
	c, b := m.Config, m.Backend
	wb, windowed := b.(backend.WindowedAttention)
	var ids, positions, ends []int // ends[s]: the row of segment s's last token
	for _, sg := range segs {
		n, pos0 := len(sg.IDs), sg.Pos0
		if n == 0 {
			return nil, errors.New("model: forward of no tokens")
		}
		if pos0+n > c.ContextLength() {
			return nil, fmt.Errorf("%w: positions up to %d, but the model's context is %d tokens", ErrContextTooLong, pos0+n, c.ContextLength())
		}
		if w := c.SlidingWindow; w != nil && pos0+n > *w && !windowed {
			// Past the window full attention would silently differ from the model's.
			return nil, fmt.Errorf("%w: positions up to %d pass the model's sliding attention window of %d tokens, which the %s backend does not implement", ErrContextTooLong, pos0+n, *w, b.Name())
		}
		for i, id := range sg.IDs {
			if id < 0 || id >= c.VocabSize {
				return nil, fmt.Errorf("model: token id %d outside the vocabulary of %d", id, c.VocabSize)
			}
			ids = append(ids, id)
			positions = append(positions, pos0+i)
		}
		ends = append(ends, len(ids)-1)
	}
	n := len(ids)
	H, D, F := c.HiddenSize, c.HeadDim, c.IntermediateSize
	nq, nkv := c.NumHeads*D, c.NumKVHeads*D
	eps := float32(c.RMSNormEps)
	// YaRN scales cos and sin by attnFactor; q.k grows by its square.
	scale := float32(m.attnFactor * m.attnFactor / math.Sqrt(float64(D)))
	rope := m.RoPE
	if sc := c.RopeScaling; sc != nil && sc.Type == "dynamic" && slices.Max(positions)+1 > c.MaxPositionEmbeddings {
		rope = DynamicRoPE(c, slices.Max(positions)+1)
	}
	// attend runs one sequence's attention, restricted to the sliding window if any.
	attend := func(att, q, k, v backend.Tensor, cache backend.KVCache, li int) {
		if c.SlidingWindow != nil && windowed {
			wb.AttentionWindow(att, q, k, v, cache, li, scale, *c.SlidingWindow)
			return
		}
		b.Attention(att, q, k, v, cache, li, scale)
	}

	// Activations, all [n, *].
	x := b.Alloc(n, H)    // residual stream
	xn := b.Alloc(n, H)   // normalised input of a sub-block
	q := b.Alloc(n, nq)   // queries
	k := b.Alloc(n, nkv)  // keys
	v := b.Alloc(n, nkv)  // values
	att := b.Alloc(n, nq) // attention output, before o_proj
	proj := b.Alloc(n, H) // output of o_proj / down_proj
	gate := b.Alloc(n, F) // SwiGLU gate, then the product
	up := b.Alloc(n, F)   // SwiGLU up projection
	defer func() {
		for _, t := range []backend.Tensor{x, xn, q, k, v, att, proj, gate, up} {
			b.Free(t)
		}
	}()

	b.Embed(x, m.Embed, ids)
	for li := range m.Layers {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("model: forward stopped before layer %d: %w", li, err)
		}
		l := &m.Layers[li]
		// Attention block: x += o_proj(attention(rope(q), rope(k), v)).
		b.RMSNorm(xn, x, l.AttnNorm, eps)
		b.MatMul(q, xn, l.Wq)
		b.MatMul(k, xn, l.Wk)
		b.MatMul(v, xn, l.Wv)
		if l.Bq != nil {
			b.AddBias(q, l.Bq)
			b.AddBias(k, l.Bk)
			b.AddBias(v, l.Bv)
		}
		if l.QNorm != nil {
			b.HeadRMSNorm(q, l.QNorm, D, eps)
			b.HeadRMSNorm(k, l.KNorm, D, eps)
		}
		b.RoPE(q, D, positions, rope)
		b.RoPE(k, D, positions, rope)
		if obs != nil {
			obs.ObserveLayer(li, positions, xn, q, k, v)
		}
		if len(segs) == 1 {
			attend(att, q, k, v, segs[0].Cache, li)
		} else if ba, ok := b.(backend.BatchedAttention); ok && c.SlidingWindow == nil {
			// One call for every sequence (a paged cache's batched decode step).
			caches, rows := make([]backend.KVCache, len(segs)), make([]int, len(segs))
			for i, sg := range segs {
				caches[i], rows[i] = sg.Cache, len(sg.IDs)
			}
			ba.AttentionBatch(att, q, k, v, caches, rows, li, scale)
		} else {
			// Each sequence attends over its own cache: its rows, through views.
			r0 := 0
			for _, sg := range segs {
				r := len(sg.IDs)
				attend(b.Rows(att, r0, r), b.Rows(q, r0, r), b.Rows(k, r0, r), b.Rows(v, r0, r), sg.Cache, li)
				r0 += r
			}
		}
		b.MatMul(proj, att, l.Wo)
		if l.Bo != nil {
			b.AddBias(proj, l.Bo)
		}
		b.Add(x, proj)

		// MLP block: x += down(silu(gate(x)) * up(x)).
		b.RMSNorm(xn, x, l.MLPNorm, eps)
		b.MatMul(gate, xn, l.Wgate)
		b.MatMul(up, xn, l.Wup)
		b.SwiGLU(gate, gate, up)
		b.MatMul(proj, gate, l.Wdown)
		b.Add(x, proj)
	}

	// Final norm and LM head, on each segment's last row only when that is all the
	// caller needs.
	last, rows := x, n
	switch {
	case !lastOnly || len(ends) == n:
	case len(segs) == 1:
		last, rows = b.RowView(x, n-1), 1
	default:
		last, rows = b.Alloc(len(ends), H), len(ends)
		defer b.Free(last)
		b.Embed(last, x, ends) // gathers rows
	}
	normed := b.Alloc(rows, H)
	out := b.Alloc(rows, c.VocabSize)
	defer b.Free(normed)
	defer b.Free(out)
	b.RMSNorm(normed, last, m.Norm, eps)
	b.MatMul(out, normed, m.LMHead)
	return b.Read(out), nil
}
