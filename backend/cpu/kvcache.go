package cpu

import (
	"fmt"

	"github.com/lukv/lukv/backend"
)

// KVCache is the CPU per-head KV cache. Each layer keeps one flat buffer for keys and one
// for values; head h owns rows [off[h], off[h]+cap[h]) of it and uses the first len[h].
// Compacting a layer copies the kept rows into new, smaller buffers, so the old ones are
// released to the garbage collector: the memory is really freed, not masked.
type KVCache struct {
	layers, kvHeads, headDim int
	reserve                  int
	l                        []layerCache
}

// layerCache is one layer's storage.
type layerCache struct {
	k, v []float32 // [sum(cap), headDim]
	off  []int     // [kvHeads] first row of each head
	len  []int     // [kvHeads] rows in use
	cap  []int     // [kvHeads] rows owned
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

func (c *KVCache) Len(layer, head int) int { return c.l[layer].len[head] }

func (c *KVCache) Reset() {
	c.l = make([]layerCache, c.layers)
	for i := range c.l {
		lens := make([]int, c.kvHeads)
		caps := make([]int, c.kvHeads)
		for h := range caps {
			caps[h] = c.reserve
		}
		c.l[i] = newLayer(lens, caps, c.headDim)
	}
}

func newLayer(lens, caps []int, headDim int) layerCache {
	l := layerCache{off: make([]int, len(caps)), len: lens, cap: caps}
	rows := 0
	for h, cp := range caps {
		l.off[h] = rows
		rows += cp
	}
	l.k = make([]float32, rows*headDim)
	l.v = make([]float32, rows*headDim)
	return l
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
		for _, ln := range l.len {
			n += int64(ln) * int64(c.headDim) * 2 * 4
		}
	}
	return n
}

func (c *KVCache) head(layer, head int, buf []float32) []float32 {
	l := &c.l[layer]
	d := c.headDim
	return buf[l.off[head]*d : (l.off[head]+l.len[head])*d]
}

func (c *KVCache) Keys(layer, head int) []float32 {
	return append([]float32(nil), c.head(layer, head, c.l[layer].k)...)
}

func (c *KVCache) Values(layer, head int) []float32 {
	return append([]float32(nil), c.head(layer, head, c.l[layer].v)...)
}

// relayout copies every head's rows selected by pick(h) into a new layer with the given
// capacities, replacing the old buffers.
func (c *KVCache) relayout(layer int, caps []int, pick func(h int) []int) {
	old := c.l[layer]
	lens := make([]int, c.kvHeads)
	nl := newLayer(lens, caps, c.headDim)
	d := c.headDim
	for h := 0; h < c.kvHeads; h++ {
		for i, src := range pick(h) {
			s, t := (old.off[h]+src)*d, (nl.off[h]+i)*d
			copy(nl.k[t:t+d], old.k[s:s+d])
			copy(nl.v[t:t+d], old.v[s:s+d])
		}
		nl.len[h] = len(pick(h))
	}
	c.l[layer] = nl
}

// appendTokens writes n new rows per head from k and v ([n, kvHeads*headDim]), growing
// the layer (doubling) when a head is full.
func (c *KVCache) appendTokens(layer int, k, v *Mat) {
	n := k.R
	l := &c.l[layer]
	grow := false
	for h := range l.len {
		if l.len[h]+n > l.cap[h] {
			grow = true
		}
	}
	if grow {
		caps := make([]int, c.kvHeads)
		for h := range caps {
			caps[h] = max(2*l.cap[h], l.len[h]+n, 16)
		}
		lens := append([]int(nil), l.len...)
		c.relayout(layer, caps, func(h int) []int { return iota(lens[h]) })
		l = &c.l[layer]
	}
	d := c.headDim
	for h := 0; h < c.kvHeads; h++ {
		for i := 0; i < n; i++ {
			t := (l.off[h] + l.len[h] + i) * d
			copy(l.k[t:t+d], k.Data[i*k.C+h*d:i*k.C+(h+1)*d])
			copy(l.v[t:t+d], v.Data[i*v.C+h*d:i*v.C+(h+1)*d])
		}
		l.len[h] += n
	}
}

func (c *KVCache) Truncate(n int) error {
	for li := range c.l {
		for h, ln := range c.l[li].len {
			if n < 0 || n > ln {
				return fmt.Errorf("kv cache: truncate to %d tokens, but layer %d head %d holds %d", n, li, h, ln)
			}
		}
	}
	for li := range c.l {
		for h := range c.l[li].len {
			c.l[li].len[h] = n
		}
	}
	return nil
}

func (c *KVCache) Compact(layer int, keep [][]int, reserve int) error {
	if layer < 0 || layer >= c.layers {
		return fmt.Errorf("kv cache: layer %d out of range [0, %d)", layer, c.layers)
	}
	if len(keep) != c.kvHeads {
		return fmt.Errorf("kv cache: compact layer %d: %d keep lists for %d KV heads", layer, len(keep), c.kvHeads)
	}
	l := c.l[layer]
	caps := make([]int, c.kvHeads)
	for h, idx := range keep {
		for i, j := range idx {
			if j < 0 || j >= l.len[h] || (i > 0 && j <= idx[i-1]) {
				return fmt.Errorf("kv cache: compact layer %d head %d: keep indices must be ascending in [0, %d), got %d at %d", layer, h, l.len[h], j, i)
			}
		}
		caps[h] = len(idx) + reserve
	}
	c.relayout(layer, caps, func(h int) []int { return keep[h] })
	return nil
}

// Clone returns a copy of the cache, every head holding the same entries with room for
// reserve more.
func (c *KVCache) Clone(reserve int) (backend.KVCache, error) {
	if reserve < 0 {
		return nil, fmt.Errorf("kv cache: clone with negative reserve %d", reserve)
	}
	n := &KVCache{layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, reserve: c.reserve, l: make([]layerCache, c.layers)}
	for li := range c.l {
		n.l[li] = c.l[li]
		caps := make([]int, c.kvHeads)
		for h, ln := range c.l[li].len {
			caps[h] = ln + reserve
		}
		lens := c.l[li].len
		n.relayout(li, caps, func(h int) []int { return iota(lens[h]) })
	}
	return n, nil
}

func iota(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}
