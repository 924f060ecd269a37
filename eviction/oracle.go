package eviction

import (
	"math"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/model"
)

// oracle measures the long-horizon importance of the T context tokens while the model
// decodes after a question (LU-KV's offline oracle, LUKV.md):
//
//	I[l,h,j] = max over decode steps k and query heads q of KV head h of a_q[k,j] * n[l,q,j]
//
// where a_q[k,j] is query head q's attention at step k to context token j and n[l,q,j] is
// ||v_j W_O^(q)|| (the token's value through that head's slice of o_proj) normalised by
// its sum over the layer's query heads and context positions, as the authors' code does.
// Only decode steps count; the question's own forward pass only adds its keys.
type oracle struct {
	m       *model.Model
	T       int
	ctxKeys [][][]float32 // [layer][kvHead][T*D] context keys, copied once
	vnorm   [][][]float32 // [layer][qHead][T] normalised value-output norms
	newKeys [][][]float32 // [layer][kvHead][rows*D] keys of tokens after the context
	imp     [][][]float64 // [layer][kvHead][T] importance of the current question
	active  bool          // decode steps count; the question's prefill does not
}

// newOracle copies the context's keys and computes value-output norms from a cache that
// holds exactly the T context tokens.
func newOracle(m *model.Model, cache backend.KVCache, T int) *oracle {
	cfg, b := m.Config, m.Backend
	L, Nkv, Nq, D, H := cfg.NumLayers, cfg.NumKVHeads, cfg.NumHeads, cfg.HeadDim, cfg.HiddenSize
	group := Nq / Nkv
	o := &oracle{m: m, T: T, ctxKeys: make([][][]float32, L), vnorm: make([][][]float32, L)}
	for l := 0; l < L; l++ {
		o.ctxKeys[l] = make([][]float32, Nkv)
		vals := make([][]float32, Nkv)
		for h := 0; h < Nkv; h++ {
			o.ctxKeys[l][h] = cache.Keys(l, h)
			vals[h] = cache.Values(l, h)
		}
		wo := b.Read(m.Layers[l].Wo) // [H, Nq*D]
		o.vnorm[l] = make([][]float32, Nq)
		var total float64
		for q := 0; q < Nq; q++ {
			o.vnorm[l][q] = make([]float32, T)
			v := vals[q/group]
			for j := 0; j < T; j++ {
				var ss float64
				vj := v[j*D : (j+1)*D]
				for i := 0; i < H; i++ {
					row := wo[i*Nq*D+q*D : i*Nq*D+(q+1)*D]
					var s float64
					for d, x := range vj {
						s += float64(row[d]) * float64(x)
					}
					ss += s * s
				}
				n := math.Sqrt(ss)
				o.vnorm[l][q][j] = float32(n)
				total += n
			}
		}
		if total > 0 {
			for q := range o.vnorm[l] {
				for j := range o.vnorm[l][q] {
					o.vnorm[l][q][j] = float32(float64(o.vnorm[l][q][j]) / total)
				}
			}
		}
	}
	return o
}

// start resets the per-question state.
func (o *oracle) start() {
	cfg := o.m.Config
	o.newKeys = make([][][]float32, cfg.NumLayers)
	o.imp = make([][][]float64, cfg.NumLayers)
	for l := range o.newKeys {
		o.newKeys[l] = make([][]float32, cfg.NumKVHeads)
		o.imp[l] = make([][]float64, cfg.NumKVHeads)
		for h := range o.imp[l] {
			o.imp[l][h] = make([]float64, o.T)
		}
	}
	o.active = false
}

// ObserveLayer records the new tokens' keys and, on decode steps, their attention.
func (o *oracle) ObserveLayer(layer int, positions []int, x, q, k, v backend.Tensor) {
	cfg, b := o.m.Config, o.m.Backend
	D, Nkv, Nq := cfg.HeadDim, cfg.NumKVHeads, cfg.NumHeads
	group := Nq / Nkv
	keys, qs := b.Read(k), b.Read(q)
	n := len(positions)
	for i := 0; i < n; i++ {
		for h := 0; h < Nkv; h++ {
			o.newKeys[layer][h] = append(o.newKeys[layer][h], keys[i*Nkv*D+h*D:i*Nkv*D+(h+1)*D]...)
		}
	}
	if !o.active {
		return
	}
	scale := 1 / math.Sqrt(float64(D))
	for i := 0; i < n; i++ {
		for qh := 0; qh < Nq; qh++ {
			h := qh / group
			qrow := qs[i*Nq*D+qh*D : i*Nq*D+(qh+1)*D]
			ctx, after := o.ctxKeys[layer][h], o.newKeys[layer][h]
			// Causal: this row sees the context and every later key up to its own.
			nAfter := len(after)/D - (n - 1 - i)
			s := make([]float64, o.T+nAfter)
			mx := math.Inf(-1)
			for j := range s {
				var kr []float32
				if j < o.T {
					kr = ctx[j*D : (j+1)*D]
				} else {
					kr = after[(j-o.T)*D : (j-o.T+1)*D]
				}
				var dot float64
				for d, qv := range qrow {
					dot += float64(qv) * float64(kr[d])
				}
				s[j] = dot * scale
				mx = max(mx, s[j])
			}
			var sum float64
			for j := range s {
				s[j] = math.Exp(s[j] - mx)
				sum += s[j]
			}
			imp, vn := o.imp[layer][h], o.vnorm[layer][qh]
			for j := 0; j < o.T; j++ {
				imp[j] = max(imp[j], s[j]/sum*float64(vn[j]))
			}
		}
	}
}
