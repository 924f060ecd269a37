// Package kv is the bookkeeping of a per-head KV cache, shared by the backends' caches
// (backend/cpu, backend/cuda): where each KV head of a layer lives in the layer's key
// and value buffers, how many tokens it holds, and the plan of every relayout (growing,
// compacting, cloning) that a backend then carries out by copying rows. It holds no
// keys or values itself.
package kv

import "fmt"

// Layer is one layer's layout: head h owns rows [Off[h], Off[h]+Cap[h]) of the layer's
// buffers ([Rows, headDim] each for keys and values) and uses the first Len[h]; heads
// lie back to back in head order, so Rows is the sum of Cap.
type Layer struct {
	Off, Len, Cap []int
	Rows          int
}

// NewLayer lays out heads with capacities caps, head h holding lens[h] tokens (nil
// lens: every head empty). Both slices are copied.
func NewLayer(lens, caps []int) Layer {
	l := Layer{Off: make([]int, len(caps)), Len: make([]int, len(caps)), Cap: append([]int(nil), caps...)}
	copy(l.Len, lens)
	for h, c := range caps {
		l.Off[h] = l.Rows
		l.Rows += c
	}
	return l
}

// Empty is a layer of kvHeads empty heads with room for reserve tokens each.
func Empty(kvHeads, reserve int) Layer {
	caps := make([]int, kvHeads)
	for h := range caps {
		caps[h] = reserve
	}
	return NewLayer(nil, caps)
}

// Live is the number of tokens the layer's heads hold together.
func (l Layer) Live() int {
	n := 0
	for _, x := range l.Len {
		n += x
	}
	return n
}

// Move is a relayout of one layer: the new layout To, and for each head h the rows of
// its old entries (indices into them, ascending) that become its first len(Pick[h])
// entries in To.
type Move struct {
	To   Layer
	Pick [][]int
}

// Pairs lists the row copies of m from layout from: (destination row, source row) in
// the layers' buffers, head by head.
func (m Move) Pairs(from Layer) [][2]int {
	var out [][2]int
	for h, rows := range m.Pick {
		for i, r := range rows {
			out = append(out, [2]int{m.To.Off[h] + i, from.Off[h] + r})
		}
	}
	return out
}

// move builds the Move that keeps pick[h] of head h with capacities caps.
func move(caps []int, pick [][]int) Move {
	lens := make([]int, len(pick))
	for h := range pick {
		lens[h] = len(pick[h])
	}
	return Move{To: NewLayer(lens, caps), Pick: pick}
}

// prefixes is [h][0, n_h) for every head's length.
func prefixes(lens []int) [][]int {
	pick := make([][]int, len(lens))
	for h, n := range lens {
		pick[h] = make([]int, n)
		for i := range pick[h] {
			pick[h][i] = i
		}
	}
	return pick
}

// Grow returns the relayout that lets every head take n more tokens, and false when
// they all already can. When one head is short the whole layer grows in one copy: every
// head's capacity becomes max(2*Cap, Len+n, 16) (doubling keeps appends amortised).
func (l Layer) Grow(n int) (Move, bool) {
	short := false
	for h := range l.Len {
		if l.Len[h]+n > l.Cap[h] {
			short = true
		}
	}
	if !short {
		return Move{}, false
	}
	caps := make([]int, len(l.Cap))
	for h := range caps {
		caps[h] = max(2*l.Cap[h], l.Len[h]+n, 16)
	}
	return move(caps, prefixes(l.Len)), true
}

// Copy returns the relayout that keeps every entry, with room for reserve more per head
// (Clone).
func (l Layer) Copy(reserve int) Move {
	caps := make([]int, len(l.Len))
	for h, n := range l.Len {
		caps[h] = n + reserve
	}
	return move(caps, prefixes(l.Len))
}

// Compact returns the relayout that keeps, in head h, exactly its entries keep[h]
// (ascending indices into its entries), with room for reserve more per head. layer
// only names the layer in errors.
func (l Layer) Compact(layer int, keep [][]int, reserve int) (Move, error) {
	if len(keep) != len(l.Len) {
		return Move{}, fmt.Errorf("kv cache: compact layer %d: %d keep lists for %d KV heads", layer, len(keep), len(l.Len))
	}
	if reserve < 0 {
		return Move{}, fmt.Errorf("kv cache: compact layer %d: negative reserve %d", layer, reserve)
	}
	caps := make([]int, len(keep))
	for h, idx := range keep {
		for i, j := range idx {
			if j < 0 || j >= l.Len[h] || (i > 0 && j <= idx[i-1]) {
				return Move{}, fmt.Errorf("kv cache: compact layer %d head %d: keep indices must be ascending in [0, %d), got %d at %d", layer, h, l.Len[h], j, i)
			}
		}
		caps[h] = len(idx) + reserve
	}
	return move(caps, keep), nil
}

// Kept is the layout after every head h kept its first counts[h] rows' worth of tokens
// (chosen elsewhere, e.g. on a device) with room for reserve more.
func Kept(counts []int, reserve int) Layer {
	caps := make([]int, len(counts))
	for h, n := range counts {
		caps[h] = n + reserve
	}
	return NewLayer(counts, caps)
}

// Truncate sets every head of every layer to its first n entries (n <= each head's
// length), keeping capacities; it changes nothing when some head holds fewer.
func Truncate(layers []Layer, n int) error {
	for li, l := range layers {
		for h, x := range l.Len {
			if n < 0 || n > x {
				return fmt.Errorf("kv cache: truncate to %d tokens, but layer %d head %d holds %d", n, li, h, x)
			}
		}
	}
	for _, l := range layers {
		for h := range l.Len {
			l.Len[h] = n
		}
	}
	return nil
}
