// Package backendtest is the conformance suite every backend.Backend must pass: each
// operation on random inputs against a plain, obviously-correct Go reference, with a
// tolerance chosen by the caller (float32 for the CPU, bf16 for the GPU).
package backendtest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/lukv/lukv/backend"
)

// Run runs every check against b. tol is the largest accepted relative error,
// max|got-want| / max|want|.
func Run(t *testing.T, b backend.Backend, tol float64) {
	t.Run("MatMul", func(t *testing.T) { testMatMul(t, b, tol) })
	t.Run("Norms", func(t *testing.T) { testNorms(t, b, tol) })
	t.Run("Elementwise", func(t *testing.T) { testElementwise(t, b, tol) })
	t.Run("RoPE", func(t *testing.T) { testRoPE(t, b, tol) })
	t.Run("Attention", func(t *testing.T) { testAttention(t, b, tol) })
	t.Run("AttentionIncremental", func(t *testing.T) { testAttentionIncremental(t, b, tol) })
	t.Run("Compact", func(t *testing.T) { testCompact(t, b, tol) })
	t.Run("Clone", func(t *testing.T) { testClone(t, b) })
	t.Run("AttentionRows", func(t *testing.T) { testAttentionRows(t, b, tol) })
}

func randn(r *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	return x
}

// Upload makes a weight tensor of a copy of data on b, failing the test on error.
func Upload(t *testing.T, b backend.Backend, data []float32, rows, cols int) backend.Tensor {
	t.Helper()
	w, err := b.Weight(append([]float32(nil), data...), rows, cols)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// RelErr is max|got-want| / max|want| (0 when want is all zero and got equals it).
func RelErr(got, want []float32) float64 {
	var diff, scale float64
	for i := range want {
		diff = max(diff, math.Abs(float64(got[i]-want[i])))
		scale = max(scale, math.Abs(float64(want[i])))
	}
	if scale == 0 {
		return diff
	}
	return diff / scale
}

// Check fails the test when got has a NaN or Inf, or a relative error above tol.
func Check(t *testing.T, what string, got, want []float32, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i, v := range got {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Fatalf("%s: value %d is %v", what, i, v)
		}
	}
	if e := RelErr(got, want); e > tol {
		t.Errorf("%s: relative error %.3g > %.3g", what, e, tol)
	}
}

func testMatMul(t *testing.T, b backend.Backend, tol float64) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, s := range [][3]int{{1, 64, 48}, {7, 33, 65}, {40, 128, 96}, {1, 256, 1000}} {
		n, in, out := s[0], s[1], s[2]
		x, w := randn(r, n*in), randn(r, out*in)
		want := make([]float32, n*out)
		for i := 0; i < n; i++ {
			for o := 0; o < out; o++ {
				var acc float64
				for k := 0; k < in; k++ {
					acc += float64(x[i*in+k]) * float64(w[o*in+k])
				}
				want[i*out+o] = float32(acc)
			}
		}
		res := b.Alloc(n, out)
		b.MatMul(res, Upload(t, b, x, n, in), Upload(t, b, w, out, in))
		Check(t, fmt.Sprintf("MatMul %v", s), b.Read(res), want, tol)
	}
}

func refRMS(x, w []float32, eps float64) []float32 {
	var ss float64
	for _, v := range x {
		ss += float64(v) * float64(v)
	}
	inv := 1 / math.Sqrt(ss/float64(len(x))+eps)
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = float32(float64(v) * inv * float64(w[i]))
	}
	return out
}

func testNorms(t *testing.T, b backend.Backend, tol float64) {
	r := rand.New(rand.NewPCG(3, 4))
	n, dim, hd := 5, 96, 32
	x, w, hw := randn(r, n*dim), randn(r, dim), randn(r, hd)
	var want, wantHead []float32
	for i := 0; i < n; i++ {
		want = append(want, refRMS(x[i*dim:(i+1)*dim], w, 1e-5)...)
		for h := 0; h < dim/hd; h++ {
			wantHead = append(wantHead, refRMS(x[i*dim+h*hd:i*dim+(h+1)*hd], hw, 1e-5)...)
		}
	}
	xt := Upload(t, b, x, n, dim)
	out := b.Alloc(n, dim)
	b.RMSNorm(out, xt, Upload(t, b, w, 1, dim), 1e-5)
	Check(t, "RMSNorm", b.Read(out), want, tol)
	b.HeadRMSNorm(xt, Upload(t, b, hw, 1, hd), hd, 1e-5)
	Check(t, "HeadRMSNorm", b.Read(xt), wantHead, tol)
}

func testElementwise(t *testing.T, b backend.Backend, tol float64) {
	r := rand.New(rand.NewPCG(5, 6))
	n, dim := 4, 50
	x, y, bias := randn(r, n*dim), randn(r, n*dim), randn(r, dim)
	want := make([]float32, n*dim)
	for i := range want {
		want[i] = x[i] + y[i] + bias[i%dim]
	}
	xt := Upload(t, b, x, n, dim)
	b.Add(xt, Upload(t, b, y, n, dim))
	b.AddBias(xt, Upload(t, b, bias, 1, dim))
	Check(t, "Add+AddBias", b.Read(xt), want, tol)

	for i := range want {
		g := float64(x[i])
		want[i] = float32(g / (1 + math.Exp(-g)) * float64(y[i]))
	}
	out := b.Alloc(n, dim)
	b.SwiGLU(out, Upload(t, b, x, n, dim), Upload(t, b, y, n, dim))
	Check(t, "SwiGLU", b.Read(out), want, tol)

	table := randn(r, 10*dim)
	ids := []int{3, 0, 9, 3}
	emb := b.Alloc(len(ids), dim)
	b.Embed(emb, Upload(t, b, table, 10, dim), ids)
	var wantEmb []float32
	for _, id := range ids {
		wantEmb = append(wantEmb, table[id*dim:(id+1)*dim]...)
	}
	Check(t, "Embed", b.Read(emb), wantEmb, 0)
}

func testRoPE(t *testing.T, b backend.Backend, tol float64) {
	r := rand.New(rand.NewPCG(7, 8))
	heads, hd := 3, 16
	positions := []int{0, 1, 17, 300, 4095}
	rope := &backend.RoPE{InvFreq: make([]float64, hd/2)}
	for j := range rope.InvFreq {
		rope.InvFreq[j] = math.Pow(10000, -float64(2*j)/float64(hd))
	}
	x := randn(r, len(positions)*heads*hd)
	want := make([]float32, len(x))
	for i, p := range positions {
		for h := 0; h < heads; h++ {
			base := i*heads*hd + h*hd
			for j := 0; j < hd/2; j++ {
				// The angle is rounded to float32 first, as transformers forms it.
				ang := float64(float32(p) * float32(rope.InvFreq[j]))
				a, c := float64(x[base+j]), float64(x[base+j+hd/2])
				want[base+j] = float32(a*math.Cos(ang) - c*math.Sin(ang))
				want[base+j+hd/2] = float32(c*math.Cos(ang) + a*math.Sin(ang))
			}
		}
	}
	xt := Upload(t, b, x, len(positions), heads*hd)
	b.RoPE(xt, hd, positions, rope)
	Check(t, "RoPE", b.Read(xt), want, tol)
}

// refAttention is causal GQA attention of q over keys/values per KV head, where query
// row i sees the first visible(i) entries of its head.
func refAttention(q []float32, n, heads, hd int, keys, vals [][]float32, visible func(kvh, i int) int, scale float64) []float32 {
	kvHeads := len(keys)
	group := heads / kvHeads
	out := make([]float32, n*heads*hd)
	for i := 0; i < n; i++ {
		for h := 0; h < heads; h++ {
			kvh := h / group
			m := visible(kvh, i)
			s := make([]float64, m)
			mx := math.Inf(-1)
			for j := 0; j < m; j++ {
				var dot float64
				for d := 0; d < hd; d++ {
					dot += float64(q[i*heads*hd+h*hd+d]) * float64(keys[kvh][j*hd+d])
				}
				s[j] = dot * scale
				mx = max(mx, s[j])
			}
			var sum float64
			for j := range s {
				s[j] = math.Exp(s[j] - mx)
				sum += s[j]
			}
			for d := 0; d < hd; d++ {
				var acc float64
				for j := range s {
					acc += s[j] / sum * float64(vals[kvh][j*hd+d])
				}
				out[i*heads*hd+h*hd+d] = float32(acc)
			}
		}
	}
	return out
}

// split returns per-KV-head slices [n*hd] of x [n, kvHeads*hd].
func split(x []float32, n, kvHeads, hd int) [][]float32 {
	out := make([][]float32, kvHeads)
	for h := range out {
		for i := 0; i < n; i++ {
			out[h] = append(out[h], x[i*kvHeads*hd+h*hd:i*kvHeads*hd+(h+1)*hd]...)
		}
	}
	return out
}

func testAttention(t *testing.T, b backend.Backend, tol float64) {
	r := rand.New(rand.NewPCG(9, 10))
	for _, s := range [][4]int{{1, 2, 2, 16}, {37, 4, 2, 32}, {130, 8, 2, 64}} {
		n, heads, kvHeads, hd := s[0], s[1], s[2], s[3]
		q, k, v := randn(r, n*heads*hd), randn(r, n*kvHeads*hd), randn(r, n*kvHeads*hd)
		scale := 1 / math.Sqrt(float64(hd))
		want := refAttention(q, n, heads, hd, split(k, n, kvHeads, hd), split(v, n, kvHeads, hd),
			func(_, i int) int { return i + 1 }, scale)
		cache := b.NewKVCache(2, kvHeads, hd, 8)
		out := b.Alloc(n, heads*hd)
		b.Attention(out, Upload(t, b, q, n, heads*hd), Upload(t, b, k, n, kvHeads*hd), Upload(t, b, v, n, kvHeads*hd), cache, 1, float32(scale))
		Check(t, fmt.Sprintf("Attention %v", s), b.Read(out), want, tol)
		if cache.Len(1, 0) != n || cache.Len(0, 0) != 0 {
			t.Errorf("cache lengths after prefill: layer1 %d, layer0 %d; want %d, 0", cache.Len(1, 0), cache.Len(0, 0), n)
		}
		Check(t, "cached keys", cache.Keys(1, kvHeads-1), split(k, n, kvHeads, hd)[kvHeads-1], 0)
	}
}

// testAttentionIncremental: a prefill in chunks (growing the cache past its reserve)
// gives the same output as one prefill.
func testAttentionIncremental(t *testing.T, b backend.Backend, tol float64) {
	r := rand.New(rand.NewPCG(11, 12))
	n, heads, kvHeads, hd := 50, 4, 2, 16
	q, k, v := randn(r, n*heads*hd), randn(r, n*kvHeads*hd), randn(r, n*kvHeads*hd)
	scale := float32(1 / math.Sqrt(float64(hd)))
	whole := b.Alloc(n, heads*hd)
	b.Attention(whole, Upload(t, b, q, n, heads*hd), Upload(t, b, k, n, kvHeads*hd), Upload(t, b, v, n, kvHeads*hd), b.NewKVCache(1, kvHeads, hd, n), 0, scale)
	cache := b.NewKVCache(1, kvHeads, hd, 4)
	var got []float32
	for lo := 0; lo < n; {
		hi := min(n, lo+1+lo%7)
		m := hi - lo
		out := b.Alloc(m, heads*hd)
		b.Attention(out, Upload(t, b, q[lo*heads*hd:hi*heads*hd], m, heads*hd),
			Upload(t, b, k[lo*kvHeads*hd:hi*kvHeads*hd], m, kvHeads*hd),
			Upload(t, b, v[lo*kvHeads*hd:hi*kvHeads*hd], m, kvHeads*hd), cache, 0, scale)
		got = append(got, b.Read(out)...)
		lo = hi
	}
	Check(t, "chunked attention", got, b.Read(whole), tol)

	// Rewind to 30 tokens and feed the last 20 again: same outputs as the first time.
	if err := cache.Truncate(30); err != nil {
		t.Fatal(err)
	}
	if cache.Len(0, 1) != 30 {
		t.Fatalf("after Truncate(30) head holds %d", cache.Len(0, 1))
	}
	again := b.Alloc(n-30, heads*hd)
	b.Attention(again, Upload(t, b, q[30*heads*hd:], n-30, heads*hd), Upload(t, b, k[30*kvHeads*hd:], n-30, kvHeads*hd),
		Upload(t, b, v[30*kvHeads*hd:], n-30, kvHeads*hd), cache, 0, scale)
	Check(t, "attention after truncate", b.Read(again), b.Read(whole)[30*heads*hd:], tol)
	if err := cache.Truncate(n + 1); err == nil {
		t.Error("Truncate past the length: no error")
	}
}

// testCompact: after keeping different tokens in each head, the cache holds exactly those
// entries, its memory shrinks, and attention of new tokens runs over kept + new entries.
func testCompact(t *testing.T, b backend.Backend, tol float64) {
	r := rand.New(rand.NewPCG(13, 14))
	n, heads, kvHeads, hd := 64, 4, 2, 16
	q, k, v := randn(r, n*heads*hd), randn(r, n*kvHeads*hd), randn(r, n*kvHeads*hd)
	scale := float32(1 / math.Sqrt(float64(hd)))
	cache := b.NewKVCache(1, kvHeads, hd, n)
	b.Attention(b.Alloc(n, heads*hd), Upload(t, b, q, n, heads*hd), Upload(t, b, k, n, kvHeads*hd), Upload(t, b, v, n, kvHeads*hd), cache, 0, scale)
	before := cache.Bytes()
	keep := [][]int{{0, 1, 2, 10, 40, 63}, {5, 6, 7, 8, 9, 20, 21, 22, 30, 31, 50, 60, 61}}
	if err := cache.Compact(0, keep, 3); err != nil {
		t.Fatal(err)
	}
	after := cache.Bytes()
	wantBytes := before * int64(len(keep[0])+len(keep[1])+2*3) / int64(2*n)
	if after != wantBytes {
		t.Errorf("bytes after compaction %d, want %d (before %d)", after, wantBytes, before)
	}
	ks, vs := split(k, n, kvHeads, hd), split(v, n, kvHeads, hd)
	kept := func(src []float32, idx []int) []float32 {
		var out []float32
		for _, j := range idx {
			out = append(out, src[j*hd:(j+1)*hd]...)
		}
		return out
	}
	for h := 0; h < kvHeads; h++ {
		if cache.Len(0, h) != len(keep[h]) {
			t.Fatalf("head %d holds %d tokens, want %d", h, cache.Len(0, h), len(keep[h]))
		}
		Check(t, "kept keys", cache.Keys(0, h), kept(ks[h], keep[h]), 0)
		Check(t, "kept values", cache.Values(0, h), kept(vs[h], keep[h]), 0)
	}
	// Decode 5 more tokens one at a time (the 3-token reserve overflows and grows).
	m := 5
	q2, k2, v2 := randn(r, m*heads*hd), randn(r, m*kvHeads*hd), randn(r, m*kvHeads*hd)
	var got []float32
	for i := 0; i < m; i++ {
		out := b.Alloc(1, heads*hd)
		b.Attention(out, Upload(t, b, q2[i*heads*hd:(i+1)*heads*hd], 1, heads*hd), Upload(t, b, k2[i*kvHeads*hd:(i+1)*kvHeads*hd], 1, kvHeads*hd),
			Upload(t, b, v2[i*kvHeads*hd:(i+1)*kvHeads*hd], 1, kvHeads*hd), cache, 0, scale)
		got = append(got, b.Read(out)...)
	}
	k2s, v2s := split(k2, m, kvHeads, hd), split(v2, m, kvHeads, hd)
	allK, allV := make([][]float32, kvHeads), make([][]float32, kvHeads)
	for h := range allK {
		allK[h] = append(kept(ks[h], keep[h]), k2s[h]...)
		allV[h] = append(kept(vs[h], keep[h]), v2s[h]...)
	}
	want := refAttention(q2, m, heads, hd, allK, allV, func(kvh, i int) int { return len(keep[kvh]) + i + 1 }, float64(scale))
	Check(t, "attention after compaction", got, want, tol)
	if err := cache.Compact(0, [][]int{{3, 1}, {0}}, 0); err == nil {
		t.Error("compaction with descending indices: no error")
	}
	if err := cache.Compact(0, [][]int{{0}}, 0); err == nil {
		t.Error("compaction with too few keep lists: no error")
	}
}

// testClone checks that a clone holds the same entries as its source, per head lengths
// included, and that changing either leaves the other as it was.
func testClone(t *testing.T, b backend.Backend) {
	r := rand.New(rand.NewPCG(15, 16))
	n, heads, kvHeads, hd := 40, 4, 2, 8
	scale := float32(1 / math.Sqrt(float64(hd)))
	cache := b.NewKVCache(2, kvHeads, hd, n)
	for layer := 0; layer < 2; layer++ {
		q, k, v := randn(r, n*heads*hd), randn(r, n*kvHeads*hd), randn(r, n*kvHeads*hd)
		b.Attention(b.Alloc(n, heads*hd), Upload(t, b, q, n, heads*hd), Upload(t, b, k, n, kvHeads*hd), Upload(t, b, v, n, kvHeads*hd), cache, layer, scale)
	}
	if err := cache.Compact(1, [][]int{{0, 5, 39}, {1, 2, 3, 4, 30}}, 0); err != nil {
		t.Fatal(err)
	}
	snapshot := func(c backend.KVCache) [][]float32 {
		var s [][]float32
		for layer := 0; layer < 2; layer++ {
			for h := 0; h < kvHeads; h++ {
				s = append(s, c.Keys(layer, h), c.Values(layer, h))
			}
		}
		return s
	}
	orig := snapshot(cache)
	clone, err := cache.Clone(3)
	if err != nil {
		t.Fatal(err)
	}
	if clone.LiveBytes() != cache.LiveBytes() {
		t.Errorf("clone live bytes %d, source %d", clone.LiveBytes(), cache.LiveBytes())
	}
	if want := cache.LiveBytes() + int64(2*kvHeads*3*hd*2*4); clone.Bytes() != want {
		t.Errorf("clone bytes %d, want %d (live + reserve of 3 per head)", clone.Bytes(), want)
	}
	for i, s := range snapshot(clone) {
		Check(t, fmt.Sprintf("clone entry %d", i), s, orig[i], 0)
	}
	// Change the clone: compact layer 0 and append to layer 1. The source must not move.
	if err := clone.Compact(0, [][]int{{7}, {8, 9}}, 0); err != nil {
		t.Fatal(err)
	}
	q, k, v := randn(r, heads*hd), randn(r, kvHeads*hd), randn(r, kvHeads*hd)
	b.Attention(b.Alloc(1, heads*hd), Upload(t, b, q, 1, heads*hd), Upload(t, b, k, 1, kvHeads*hd), Upload(t, b, v, 1, kvHeads*hd), clone, 1, scale)
	if clone.Len(0, 1) != 2 || clone.Len(1, 0) != 4 {
		t.Errorf("clone lengths after changes: layer 0 head 1 %d (want 2), layer 1 head 0 %d (want 4)", clone.Len(0, 1), clone.Len(1, 0))
	}
	for i, s := range snapshot(cache) {
		Check(t, fmt.Sprintf("source entry %d after changing the clone", i), s, orig[i], 0)
	}
	// And the other way round: resetting the source leaves the clone's entries.
	cloneKeys := clone.Keys(1, 1)
	cache.Reset()
	Check(t, "clone keys after resetting the source", clone.Keys(1, 1), cloneKeys, 0)
	if _, err := cache.Clone(-1); err == nil {
		t.Error("clone with a negative reserve: no error")
	}
}

// testAttentionRows: three sequences stacked in one activation tensor, each attending
// over its own cache through Rows views, give each sequence's own attention, and the
// outputs land in the stacked tensor.
func testAttentionRows(t *testing.T, b backend.Backend, tol float64) {
	r := rand.New(rand.NewPCG(17, 18))
	heads, kvHeads, hd := 4, 2, 16
	scale := 1 / math.Sqrt(float64(hd))
	lens := []int{5, 1, 12}
	total := 0
	for _, n := range lens {
		total += n
	}
	q, k, v := randn(r, total*heads*hd), randn(r, total*kvHeads*hd), randn(r, total*kvHeads*hd)
	qt, kt, vt := Upload(t, b, q, total, heads*hd), Upload(t, b, k, total, kvHeads*hd), Upload(t, b, v, total, kvHeads*hd)
	out := b.Alloc(total, heads*hd)
	var want []float32
	r0 := 0
	for _, n := range lens {
		cache := b.NewKVCache(1, kvHeads, hd, 4)
		b.Attention(b.Rows(out, r0, n), b.Rows(qt, r0, n), b.Rows(kt, r0, n), b.Rows(vt, r0, n), cache, 0, float32(scale))
		qs := q[r0*heads*hd : (r0+n)*heads*hd]
		ks, vs := k[r0*kvHeads*hd:(r0+n)*kvHeads*hd], v[r0*kvHeads*hd:(r0+n)*kvHeads*hd]
		want = append(want, refAttention(qs, n, heads, hd, split(ks, n, kvHeads, hd), split(vs, n, kvHeads, hd),
			func(_, i int) int { return i + 1 }, scale)...)
		if cache.Len(0, 1) != n {
			t.Errorf("sequence of %d tokens: its cache holds %d", n, cache.Len(0, 1))
		}
		r0 += n
	}
	Check(t, "attention through Rows views", b.Read(out), want, tol)
	if got := b.Read(b.Rows(qt, 6, 12)); len(got) != 12*heads*hd || got[0] != q[6*heads*hd] {
		t.Errorf("Rows(6, 12) reads %d values starting %v, want %d starting %v", len(got), got[0], 12*heads*hd, q[6*heads*hd])
	}
}

// SameCache fails unless got holds, in every layer and head, exactly want's entries
// (same count, same keys and values bit for bit).
func SameCache(t *testing.T, what string, got, want backend.KVCache) {
	t.Helper()
	for l := 0; l < want.Layers(); l++ {
		for h := 0; h < want.KVHeads(); h++ {
			if got.Len(l, h) != want.Len(l, h) {
				t.Fatalf("%s: layer %d head %d holds %d tokens, want %d", what, l, h, got.Len(l, h), want.Len(l, h))
			}
			if !slices.Equal(got.Keys(l, h), want.Keys(l, h)) || !slices.Equal(got.Values(l, h), want.Values(l, h)) {
				t.Fatalf("%s: layer %d head %d holds other entries", what, l, h)
			}
		}
	}
}
