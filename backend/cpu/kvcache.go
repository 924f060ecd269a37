package cpu

import (
	"fmt"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/kv"
)

// KVCache is the CPU per-head KV cache. Each layer keeps one flat buffer for keys and one
// for values, laid out by a kv.Layer: head h owns rows [Off[h], Off[h]+Cap[h]) and uses
// the first Len[h]. Compacting a layer copies the kept rows into new, smaller buffers,
// so the old ones are released to the garbage collector: the memory is really freed,
// not masked.
type KVCache struct {
	layers, kvHeads, headDim int
	reserve                  int
	l                        []layerCache
}

// layerCache is one layer's storage and its layout.
type layerCache struct {
	kv.Layer
	k, v []float32 // [Rows, headDim]
}

var _ backend.KVCache = (*KVCache)(nil)

func (b *Backend) NewKVCache(layers, kvHeads, headDim, reserve int) backend.KVCache {
	c := &KVCache{layers: layers, kvHeads: kvHeads, headDim: headDim, reserve: reserve}
	c.Reset()
	return c
}

func (c *KVCache) Layers() int  { return c.layers }
func (c *KVCache) KVHeads() int { return c.kvHeads }
func (c *KVCache) HeadDim() int { return c.headDim }

func (c *KVCache) Len(layer, head int) int { return c.l[layer].Len[head] }

func (c *KVCache) Reset() {
	c.l = make([]layerCache, c.layers)
	for i := range c.l {
		c.l[i] = c.alloc(kv.Empty(c.kvHeads, c.reserve))
	}
}

// alloc returns zeroed buffers for layout l.
func (c *KVCache) alloc(l kv.Layer) layerCache {
	return layerCache{Layer: l, k: make([]float32, l.Rows*c.headDim), v: make([]float32, l.Rows*c.headDim)}
}

// Bytes counts the float32 buffers held (keys and values, all layers).
func (c *KVCache) Bytes() int64 {
	var n int64
	for _, l := range c.l {
		n += int64(len(l.k)+len(l.v)) * 4
	}
	return n
}

func (c *KVCache) LiveBytes() int64 {
	var n int64
	for _, l := range c.l {
		n += int64(l.Live()) * int64(c.headDim) * 2 * 4
	}
	return n
}

func (c *KVCache) head(layer, head int, buf []float32) []float32 {
	l := &c.l[layer]
	d := c.headDim
	return buf[l.Off[head]*d : (l.Off[head]+l.Len[head])*d]
}

func (c *KVCache) Keys(layer, head int) []float32 {
	return append([]float32(nil), c.head(layer, head, c.l[layer].k)...)
}

func (c *KVCache) Values(layer, head int) []float32 {
	return append([]float32(nil), c.head(layer, head, c.l[layer].v)...)
}

// relayout carries out m on src's layer into new buffers: the result replaces nothing.
func (c *KVCache) relayout(src layerCache, m kv.Move) layerCache {
	nl := c.alloc(m.To)
	d := c.headDim
	for _, p := range m.Pairs(src.Layer) {
		t, s := p[0]*d, p[1]*d
		copy(nl.k[t:t+d], src.k[s:s+d])
		copy(nl.v[t:t+d], src.v[s:s+d])
	}
	return nl
}

// appendTokens writes n new rows per head from k and v ([n, kvHeads*headDim]), growing
// the layer (kv.Layer.Grow) when a head is full.
func (c *KVCache) appendTokens(layer int, k, v *Mat) {
	n := k.R
	if m, ok := c.l[layer].Grow(n); ok {
		c.l[layer] = c.relayout(c.l[layer], m)
	}
	l := &c.l[layer]
	d := c.headDim
	for h := 0; h < c.kvHeads; h++ {
		for i := 0; i < n; i++ {
			t := (l.Off[h] + l.Len[h] + i) * d
			copy(l.k[t:t+d], k.Data[i*k.C+h*d:i*k.C+(h+1)*d])
			copy(l.v[t:t+d], v.Data[i*v.C+h*d:i*v.C+(h+1)*d])
		}
		l.Len[h] += n
	}
}

func (c *KVCache) Truncate(n int) error {
	layers := make([]kv.Layer, len(c.l))
	for i := range c.l {
		layers[i] = c.l[i].Layer
	}
	return kv.Truncate(layers, n)
}

func (c *KVCache) Compact(layer int, keep [][]int, reserve int) error {
	if layer < 0 || layer >= c.layers {
		return fmt.Errorf("kv cache: layer %d out of range [0, %d)", layer, c.layers)
	}
	m, err := c.l[layer].Compact(layer, keep, reserve)
	if err != nil {
		return err
	}
	c.l[layer] = c.relayout(c.l[layer], m)
	return nil
}

// Clone returns a copy of the cache, every head holding the same entries with room for
// reserve more.
func (c *KVCache) Clone(reserve int) (backend.KVCache, error) {
	if reserve < 0 {
		return nil, fmt.Errorf("kv cache: clone with negative reserve %d", reserve)
	}
	n := &KVCache{layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, reserve: c.reserve, l: make([]layerCache, c.layers)}
	for li, l := range c.l {
		n.l[li] = n.relayout(l, l.Copy(reserve))
	}
	return n, nil
}

// KVElemBytes is the bytes the CPU cache stores per element: float32.
func (*Backend) KVElemBytes() int { return 4 }
