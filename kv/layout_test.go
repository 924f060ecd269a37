package kv

import (
	"slices"
	"strings"
	"testing"
)

func TestNewLayerOffsets(t *testing.T) {
	l := NewLayer([]int{1, 0, 3}, []int{2, 5, 3})
	if !slices.Equal(l.Off, []int{0, 2, 7}) || l.Rows != 10 || l.Live() != 4 {
		t.Fatalf("layout %+v: want offsets [0 2 7], 10 rows, 4 live", l)
	}
	e := Empty(2, 4)
	if !slices.Equal(e.Len, []int{0, 0}) || !slices.Equal(e.Off, []int{0, 4}) || e.Rows != 8 {
		t.Fatalf("empty layout %+v", e)
	}
}

// apply carries out m on rows (one value per row of from's buffer) the way a backend
// does, returning the new buffer.
func apply(m Move, from Layer, rows []int) []int {
	out := make([]int, m.To.Rows)
	for i := range out {
		out[i] = -1
	}
	for _, p := range m.Pairs(from) {
		out[p[0]] = rows[p[1]]
	}
	return out
}

// filled is a layer with lens tokens per head and capacities caps, and a buffer whose
// row of head h, entry i holds 100*h + i (unused rows -1).
func filled(lens, caps []int) (Layer, []int) {
	l := NewLayer(lens, caps)
	rows := make([]int, l.Rows)
	for i := range rows {
		rows[i] = -1
	}
	for h := range lens {
		for i := 0; i < lens[h]; i++ {
			rows[l.Off[h]+i] = 100*h + i
		}
	}
	return l, rows
}

// entries is head h's entries in buffer rows laid out by l.
func entries(l Layer, rows []int, h int) []int { return rows[l.Off[h] : l.Off[h]+l.Len[h]] }

func TestCompactPlan(t *testing.T) {
	l, rows := filled([]int{4, 3}, []int{6, 3})
	m, err := l.Compact(2, [][]int{{0, 3}, {}}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(m.To.Len, []int{2, 0}) || !slices.Equal(m.To.Cap, []int{4, 2}) || !slices.Equal(m.To.Off, []int{0, 4}) {
		t.Fatalf("compacted layout %+v", m.To)
	}
	out := apply(m, l, rows)
	if got := entries(m.To, out, 0); !slices.Equal(got, []int{0, 3}) {
		t.Fatalf("head 0 holds %v, want [0 3]", got)
	}
	for _, bad := range []struct {
		keep    [][]int
		reserve int
		want    string
	}{
		{[][]int{{0}}, 0, "1 keep lists for 2 KV heads"},
		{[][]int{{1, 1}, {}}, 0, "layer 2 head 0: keep indices must be ascending in [0, 4), got 1 at 1"},
		{[][]int{{}, {3}}, 0, "head 1: keep indices must be ascending in [0, 3), got 3"},
		{[][]int{{-1}, {}}, 0, "got -1"},
		{[][]int{{}, {}}, -1, "negative reserve -1"},
	} {
		if _, err := l.Compact(2, bad.keep, bad.reserve); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("Compact(%v, %d): %v, want an error containing %q", bad.keep, bad.reserve, err, bad.want)
		}
	}
}

func TestGrowPlan(t *testing.T) {
	l, rows := filled([]int{3, 1}, []int{4, 20})
	if _, ok := l.Grow(1); ok {
		t.Fatal("Grow(1) with room in every head")
	}
	m, ok := l.Grow(2) // head 0 holds 3 of 4
	if !ok {
		t.Fatal("Grow(2): no growth though head 0 is short")
	}
	if !slices.Equal(m.To.Cap, []int{16, 40}) || !slices.Equal(m.To.Len, []int{3, 1}) {
		t.Fatalf("grown layout %+v: want capacities max(2*cap, len+n, 16) = [16 40], lengths kept", m.To)
	}
	out := apply(m, l, rows)
	for h, want := range [][]int{{0, 1, 2}, {100}} {
		if got := entries(m.To, out, h); !slices.Equal(got, want) {
			t.Fatalf("head %d holds %v after growing, want %v", h, got, want)
		}
	}
	if m, _ := l.Grow(30); m.To.Cap[0] != 33 {
		t.Fatalf("Grow(30): head 0 capacity %d, want len+n = 33", m.To.Cap[0])
	}
}

func TestCopyKeptTruncate(t *testing.T) {
	l, rows := filled([]int{2, 5}, []int{8, 5})
	m := l.Copy(3)
	if !slices.Equal(m.To.Cap, []int{5, 8}) || m.To.Rows != 13 {
		t.Fatalf("copy layout %+v", m.To)
	}
	out := apply(m, l, rows)
	for h := range 2 {
		if !slices.Equal(entries(m.To, out, h), entries(l, rows, h)) {
			t.Fatalf("head %d: copy holds %v, original %v", h, entries(m.To, out, h), entries(l, rows, h))
		}
	}
	k := Kept([]int{2, 0, 4}, 1)
	if !slices.Equal(k.Len, []int{2, 0, 4}) || !slices.Equal(k.Off, []int{0, 3, 4}) || k.Rows != 9 {
		t.Fatalf("Kept layout %+v", k)
	}
	layers := []Layer{NewLayer([]int{3, 4}, []int{4, 4}), NewLayer([]int{2, 6}, []int{2, 8})}
	if err := Truncate(layers, 3); err == nil || !strings.Contains(err.Error(), "layer 1 head 0 holds 2") {
		t.Fatalf("Truncate past a head's length: %v", err)
	}
	if layers[0].Len[1] != 4 {
		t.Fatal("a failed Truncate changed a length")
	}
	if err := Truncate(layers, 2); err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		if !slices.Equal(l.Len, []int{2, 2}) {
			t.Fatalf("after Truncate(2): lengths %v", l.Len)
		}
	}
}
