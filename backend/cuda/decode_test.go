//go:build cuda

package cuda

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"unsafe"

	"gorgonia.org/cu"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/backend/backendtest"
	"github.com/lukv/lukv/backend/cpu"
	"github.com/lukv/lukv/generate"
	"github.com/lukv/lukv/model"
)

// Tests of the decode path: the gemv_* kernels and their grouping, the decode attention
// kernel (attention_decode_*, split-K combined in its last block), the rotations held
// back into the cache append, and Options.Unfused.

// unfusedBackend is a backend with Options.Unfused (and every launch checked).
func unfusedBackend(t testing.TB) *Backend { return backendWith(t, Options{Unfused: true, Sync: true}) }

// TestGEMVFast: the decode GEMV for every row count 1..8 (kernels for 1, 2, 4 and 8
// rows, the others repeating their last row), every weight type, output counts that are
// and are not multiples of the 4 rows a block takes (1, 3, 5, 1000), inner sizes from
// one 16-byte chunk to 14336 (several chunks per thread, a partial last pass), and
// unaligned inner sizes (the fallback kernel). Outputs start as NaN, so an element no
// block writes fails.
func TestGEMVFast(t *testing.T) {
	b := testBackend(t)
	r := rand.New(rand.NewPCG(40, 40))
	shapes := [][2]int{{8, 3}, {64, 1}, {72, 5}, {256, 1000}, {4104, 13}, {14336, 6}, {33, 7}, {36, 9}}
	for _, dt := range []dtype{f32, bf16, f16} {
		for n := 1; n <= gemvMaxRows; n++ {
			for si, s := range shapes {
				if (n+si)%3 != 0 && s[0] >= 4104 { // the big ones for a third of the row counts
					continue
				}
				in, nout := s[0], s[1]
				x := randn(r, n*in)
				w := randn(r, nout*in)
				if dt != f32 {
					w = roundTo(w, dt)
				}
				wt := backendtest.Upload(t, b, w, nout, in)
				want := dt
				if nout == 1 {
					want = f32 // Weight keeps one-row tensors (norms, biases) in float32
				}
				if wt.(*Tensor).dt != want {
					t.Fatalf("weights [%d, %d] stored as %v, want %v", nout, in, wt.(*Tensor).dt, want)
				}
				res := poisoned(b, n, nout)
				b.MatMul(res, backendtest.Upload(t, b, x, n, in), wt)
				backendtest.Check(t, fmt.Sprintf("MatMul %v n=%d in=%d out=%d", dt, n, in, nout), b.Read(res), refMatMul(x, w, n, in, nout), f32Tol)
			}
		}
	}
}

// TestGEMVGrouping: decode matmuls sharing x are held back and run as one launch, up to
// three; a matmul with another x, an output overlapping a held-back one, or any other
// operation launches them first. Every result matches the reference.
func TestGEMVGrouping(t *testing.T) {
	b := testBackend(t)
	r := rand.New(rand.NewPCG(41, 41))
	const n, in = 2, 256
	x := randn(r, n*in)
	xt := backendtest.Upload(t, b, x, n, in)
	outs := []int{512, 128, 128, 64}
	ws := make([][]float32, len(outs))
	wts := make([]backend.Tensor, len(outs))
	res := make([]*Tensor, len(outs))
	for i, o := range outs {
		ws[i] = roundTo(randn(r, o*in), bf16)
		wts[i] = backendtest.Upload(t, b, ws[i], o, in)
		res[i] = poisoned(b, n, o)
	}
	for i, want := range []int{1, 2, 3, 1} { // the fourth starts a new group
		b.MatMul(res[i], xt, wts[i])
		if got := len(b.pend.gemv); got != want {
			t.Fatalf("after matmul %d: %d held back, want %d", i, got, want)
		}
	}
	for i := range outs {
		backendtest.Check(t, fmt.Sprintf("grouped matmul %d", i), b.Read(res[i]), refMatMul(x, ws[i], n, in, outs[i]), f32Tol)
	}
	if b.pend.any() {
		t.Fatal("Read left operations held back")
	}
	// Same output twice: not grouped (the second must win, as when run in order).
	b.MatMul(res[0], xt, wts[0])
	x2 := randn(r, n*in)
	b.MatMul(res[0], backendtest.Upload(t, b, x2, n, in), wts[0])
	backendtest.Check(t, "matmul over a held-back output", b.Read(res[0]), refMatMul(x2, ws[0], n, in, outs[0]), f32Tol)
	b.MatMul(res[1], xt, wts[1])
	b.MatMul(res[1], xt, wts[1])
	if got := len(b.pend.gemv); got != 1 {
		t.Errorf("two matmuls into one output: %d held back together, want 1", got)
	}
	if err := b.Synchronize(); err != nil {
		t.Fatal(err)
	}
}

// decodeCase is one decode-kernel scenario: n new rows per call over per-head caches of
// the given lengths (made different by compaction).
type decodeCase struct {
	heads, kvHeads, hd, n int
	fill                  int // prefill length before compaction
	keep                  []float64
}

// TestDecodeAttention: the decode kernel against the CPU with float32 and bf16 caches,
// at shapes that stress its index math: one lane per row (hd 4 in float32, 8 in bf16)
// up to 32, groups of 1, 2, 3 (a tile with a repeated vector), 4, 7 (two tiles) and 16,
// one to four rows, heads of different lengths, and caches long enough for split-K
// (combined by the kernel's last block). After each call the split counters must be
// back at zero.
func TestDecodeAttention(t *testing.T) {
	cases := []decodeCase{
		{32, 8, 128, 1, 2000, []float64{1, 0.3, 0.05, 0.7, 1, 0.5, 0.9, 0.01}},
		{8, 4, 64, 2, 900, []float64{0.2, 1, 0.6, 0.4}},
		{6, 2, 32, 3, 700, []float64{1, 0.1}},
		{28, 4, 128, 1, 1500, []float64{0.5, 0.8, 1, 0.2}},
		{16, 1, 64, 4, 400, []float64{0.9}},
		{4, 4, 8, 1, 600, []float64{1, 0.5, 0.25, 0.1}},
		{8, 4, 4, 2, 300, []float64{1, 0.3, 0.6, 1}},
		{2, 2, 256, 1, 1200, []float64{0.7, 1}},
	}
	for _, bfKV := range []bool{false, true} {
		b := testBackend(t)
		if bfKV {
			b = kvBF16Backend(t)
		}
		for ci, c := range cases {
			_, ok := planDecode(c.n, c.heads, c.kvHeads, c.hd, c.fill, b.sms, bfKV)
			wantOK := !(bfKV && c.hd == 4) && !(!bfKV && c.hd == 256)
			if ok != wantOK {
				t.Fatalf("case %d (bf16 %v): planDecode ok = %v, want %v", ci, bfKV, ok, wantOK)
			}
			t.Run(fmt.Sprintf("bf16_%v/case%d", bfKV, ci), func(t *testing.T) {
				r := rand.New(rand.NewPCG(42, uint64(ci)))
				ref := cpu.New()
				gc, cc := b.NewKVCache(1, c.kvHeads, c.hd, 16), ref.NewKVCache(1, c.kvHeads, c.hd, 16)
				scale := float32(1 / math.Sqrt(float64(c.hd)))
				step := func(n int, what string) {
					q, k, v := randn(r, n*c.heads*c.hd), randn(r, n*c.kvHeads*c.hd), randn(r, n*c.kvHeads*c.hd)
					if bfKV {
						k, v = backendtest.RoundBF16(k), backendtest.RoundBF16(v)
					}
					var outs [2][]float32
					for i, be := range []backend.Backend{b, ref} {
						out := be.Alloc(n, c.heads*c.hd)
						be.Attention(out, backendtest.Upload(t, be, q, n, c.heads*c.hd), backendtest.Upload(t, be, k, n, c.kvHeads*c.hd),
							backendtest.Upload(t, be, v, n, c.kvHeads*c.hd), []backend.KVCache{gc, cc}[i], 0, scale)
						outs[i] = be.Read(out)
					}
					backendtest.Check(t, what, outs[0], outs[1], f32Tol)
					if b.decCount.size > 0 {
						cnt := make([]int32, b.decCount.size/4)
						func() {
							defer b.enter()()
							if err := cu.MemcpyDtoH(unsafe.Pointer(&cnt[0]), b.decCount.ptr, b.decCount.size); err != nil {
								t.Fatal(err)
							}
						}()
						if slices.ContainsFunc(cnt, func(v int32) bool { return v != 0 }) {
							t.Fatalf("%s: split counters left at %v", what, cnt)
						}
					}
				}
				step(c.fill, "prefill")
				keep := make([][]int, c.kvHeads)
				for h := range keep {
					for j := 0; j < cc.Len(0, h); j++ {
						if j == 0 || r.Float64() < c.keep[h] {
							keep[h] = append(keep[h], j)
						}
					}
				}
				for _, cache := range []backend.KVCache{gc, cc} {
					if err := cache.Compact(0, keep, 2); err != nil {
						t.Fatal(err)
					}
				}
				for i := 0; i < 3; i++ {
					step(c.n, fmt.Sprintf("decode call %d of %d rows", i, c.n))
				}
			})
		}
	}
}

// TestPlanDecode checks the decode planner for many shapes: it takes exactly the head
// dims whose rows are a power of two (<= 32) of 16-byte chunks and at most decMaxRows
// rows; every vector has a slot (g*htiles >= group*n, g <= 4); the splits tile the keys
// (no empty split, at most decMaxSplits, enough for the combine table); shared memory
// fits the default 48 KiB.
func TestPlanDecode(t *testing.T) {
	for _, bfKV := range []bool{false, true} {
		for _, hd := range []int{4, 8, 12, 16, 64, 96, 128, 256} {
			for _, g := range [][2]int{{32, 8}, {28, 4}, {8, 8}, {64, 2}, {4, 1}, {6, 2}} {
				for _, n := range []int{1, 2, 3, 4, 5} {
					for _, maxLen := range []int{0, 100, 5000, 200000} {
						p, ok := planDecode(n, g[0], g[1], hd, maxLen, 132, bfKV)
						dpt := 4
						if bfKV {
							dpt = 8
						}
						lanes := hd / dpt
						wantOK := n <= decMaxRows && hd%dpt == 0 && lanes <= 32 && lanes&(lanes-1) == 0
						name := fmt.Sprintf("bf16 %v hd %d heads %v n %d len %d: %+v", bfKV, hd, g, n, maxLen, p)
						if ok != wantOK {
							t.Errorf("%s: ok %v, want %v", name, ok, wantOK)
						}
						if !ok {
							continue
						}
						total := g[0] / g[1] * n
						if p.g > 4 || p.g*p.htiles < total || p.g*(p.htiles-1) >= total || 1<<p.lgG != p.g || 1<<p.lgLPR != lanes {
							t.Errorf("%s: vectors do not fit the tiles", name)
						}
						if p.splits < 1 || p.splits > decMaxSplits || p.splits*p.chunk < p.visible || (p.splits-1)*p.chunk >= p.visible {
							t.Errorf("%s: splits do not tile the keys", name)
						}
						if p.grid != (dim3{p.splits, g[1] * p.htiles, 1}) || p.smem > 48*1024 {
							t.Errorf("%s: grid or shared memory", name)
						}
					}
				}
			}
		}
	}
}

// TestFusedRoPEAppend: two RoPEs at the same positions are held back together, and an
// Attention over exactly those q and k rotates them inside its cache append: the
// attention output, the rotated q and k left in their tensors and the cache all match
// the CPU's RoPE then Attention. Also with only k held back, with positions that do not
// count up (uploaded), and when the Attention takes row views of the rotated tensors
// (no fusion: the two rotations run first, in one launch).
func TestFusedRoPEAppend(t *testing.T) {
	b := testBackend(t)
	ref := cpu.New()
	const heads, kvHeads, hd = 8, 2, 64
	rope := &backend.RoPE{InvFreq: make([]float64, hd/2)}
	for j := range rope.InvFreq {
		rope.InvFreq[j] = math.Pow(10000, -2*float64(j)/hd)
	}
	r := rand.New(rand.NewPCG(43, 43))
	gc, cc := b.NewKVCache(1, kvHeads, hd, 4), ref.NewKVCache(1, kvHeads, hd, 4)
	pos := 0
	for ci, c := range []struct {
		n          int
		rotQ, view bool
		positions  []int // nil: consecutive from pos
	}{{5, true, false, nil}, {1, true, false, nil}, {1, false, false, nil}, {3, true, false, []int{40, 7, 19}}, {4, true, true, nil}} {
		n, rows := c.n, c.n
		if c.view {
			rows = n + 2 // rotate [n+2] tensors, attend over their rows 1..n
		}
		positions := c.positions
		for i := len(positions); i < rows; i++ {
			positions = append(positions, pos+i)
		}
		pos += rows
		q, k, v := randn(r, rows*heads*hd), randn(r, rows*kvHeads*hd), randn(r, n*kvHeads*hd)
		var outs, qs, ks [2][]float32
		for i, be := range []backend.Backend{b, ref} {
			qt, kt := backendtest.Upload(t, be, q, rows, heads*hd), backendtest.Upload(t, be, k, rows, kvHeads*hd)
			if c.rotQ {
				be.RoPE(qt, hd, positions, rope)
			}
			be.RoPE(kt, hd, positions, rope)
			if i == 0 {
				if got, want := len(b.pend.rope), 1+boolInt(c.rotQ); got != want {
					t.Fatalf("case %d: %d rotations held back, want %d", ci, got, want)
				}
			}
			qv, kv := qt, kt
			if c.view {
				qv, kv = be.Rows(qt, 1, n), be.Rows(kt, 1, n)
			}
			out := be.Alloc(n, heads*hd)
			be.Attention(out, qv, kv, backendtest.Upload(t, be, v, n, kvHeads*hd), []backend.KVCache{gc, cc}[i], 0, 0.125)
			if i == 0 && b.pend.any() {
				t.Fatalf("case %d: Attention left operations held back", ci)
			}
			outs[i], qs[i], ks[i] = be.Read(out), be.Read(qt), be.Read(kt)
		}
		name := fmt.Sprintf("case %d (%d rows, rotate q %v, view %v)", ci, n, c.rotQ, c.view)
		backendtest.Check(t, name+": output", outs[0], outs[1], f32Tol)
		backendtest.Check(t, name+": q after", qs[0], qs[1], f32Tol)
		backendtest.Check(t, name+": k after", ks[0], ks[1], f32Tol)
		if e := backendtest.RelErr(ks[0], k); e < 1e-3 {
			t.Errorf("%s: k was not rotated (%.2g from the input)", name, e)
		}
	}
	for h := 0; h < kvHeads; h++ {
		backendtest.Check(t, fmt.Sprintf("cached keys of head %d", h), gc.Keys(0, h), cc.Keys(0, h), f32Tol)
		backendtest.Check(t, fmt.Sprintf("cached values of head %d", h), gc.Values(0, h), cc.Values(0, h), 0)
	}
}

// TestUnfusedModel: the default model decodes the same on a backend with
// Options.Unfused (every op launched when called, RoPE by rope.cu) as with the held-back
// fusion: prompt logits and 8 decode steps within float32 accuracy, same tokens.
func TestUnfusedModel(t *testing.T) {
	fm := loadTiny(t, testBackend(t))
	um := loadTiny(t, unfusedBackend(t))
	ids := []int{1, 450, 2030, 17, 3, 99, 1200, 5} // vocabulary 8192
	fc, uc := fm.NewCache(8), um.NewCache(8)
	fl, err := fm.Forward(context.Background(), ids, 0, fc, model.ForwardOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ul, err := um.Forward(context.Background(), ids, 0, uc, model.ForwardOptions{})
	if err != nil {
		t.Fatal(err)
	}
	backendtest.Check(t, "prompt logits", fl, ul, f32Tol)
	tok := generate.Argmax(fl)
	for i := 0; i < 8; i++ {
		if fl, err = fm.Forward(context.Background(), []int{tok}, len(ids)+i, fc, model.ForwardOptions{}); err != nil {
			t.Fatal(err)
		}
		if ul, err = um.Forward(context.Background(), []int{tok}, len(ids)+i, uc, model.ForwardOptions{}); err != nil {
			t.Fatal(err)
		}
		backendtest.Check(t, fmt.Sprintf("step %d logits", i), fl, ul, f32Tol)
		if generate.Argmax(fl) != generate.Argmax(ul) {
			t.Fatalf("step %d: token %d fused, %d unfused", i, generate.Argmax(fl), generate.Argmax(ul))
		}
		tok = generate.Argmax(fl)
	}
}

// BenchmarkMatMulDecode8B: the decode GEMV on the bf16 matrices of a Llama-3.1-8B decode
// step (in x out = 4096x4096 q/o, 4096x1024 k/v, 4096x14336 gate/up, 14336x4096 down,
// 4096x128256 LM head) with 1 and 8 rows, and the grouped launches of the forward pass
// (q+k+v, gate+up). GB/s counts the weights, x and out once; floor-us is those bytes at
// 4.3 TB/s.
func BenchmarkMatMulDecode8B(bm *testing.B) {
	for _, s := range []struct {
		name string
		in   int
		outs []int
	}{
		{"4096x4096", 4096, []int{4096}}, {"4096x1024", 4096, []int{1024}}, {"4096x14336", 4096, []int{14336}},
		{"14336x4096", 14336, []int{4096}}, {"4096x128256", 4096, []int{128256}},
		{"qkv", 4096, []int{4096, 1024, 1024}}, {"gate+up", 4096, []int{14336, 14336}},
	} {
		for _, n := range []int{1, 8} {
			bm.Run(fmt.Sprintf("%s/n=%d", s.name, n), func(bm *testing.B) { benchDecodeGEMV(bm, n, s.in, s.outs) })
		}
	}
}

var benchWeights = map[[2]int]backend.Tensor{} // bf16 [out, in] matrices of the benchmarks

// benchWeight is a bf16 [out, in] matrix of random finite values (magnitudes 2^-7 to
// 2^-6, random signs and mantissas), made from raw words: rounding float32s one by one
// would take minutes for the 525M values of the LM head.
func benchWeight(bm *testing.B, b *Backend, out, in int) backend.Tensor {
	if w, ok := benchWeights[[2]int{out, in}]; ok {
		return w
	}
	r := rand.New(rand.NewPCG(uint64(out), uint64(in)))
	block := make([]uint16, 1<<20)
	for i := range block {
		block[i] = 0x3c00 | uint16(r.Uint32())&0x807f
	}
	defer b.enter()()
	t, err := b.newTensor(out, in, bf16, "benchmark weight")
	if err != nil {
		bm.Fatal(err)
	}
	for at := int64(0); at < t.size; at += int64(len(block)) * 2 {
		if err := cu.MemcpyHtoD(t.ptr+cu.DevicePtr(at), unsafe.Pointer(&block[0]), min(int64(len(block))*2, t.size-at)); err != nil {
			bm.Fatal(err)
		}
	}
	benchWeights[[2]int{out, in}] = t
	return t
}

// benchDecodeGEMV times MatMuls of one x [n, in] by bf16 matrices [o, in] for o in outs
// (more than one: the backend groups them into one launch).
func benchDecodeGEMV(bm *testing.B, n, in int, outs []int) {
	b := benchBackend(bm)
	r := rand.New(rand.NewPCG(44, 44))
	xt, _ := b.Weight(randn(r, n*in), n, in)
	var wts, res []backend.Tensor
	bytes := float64(n * in * 4)
	for _, o := range outs {
		wts, res = append(wts, benchWeight(bm, b, o, in)), append(res, b.Alloc(n, o))
		bytes += float64(o*in*2 + n*o*4)
	}
	sec := gpuSeconds(bm, b, func() {
		for i := range wts {
			b.MatMul(res[i], xt, wts[i])
		}
	})
	bm.ReportMetric(bytes/sec/1e9, "GB/s")
	bm.ReportMetric(bytes/4.3e12*1e6, "floor-us")
}

// BenchmarkAttentionDecodeKV: one decode step of a Llama-3.1-8B layer's attention (32
// query heads, 8 KV heads of 128) over 8k and 32k cached tokens per head, float32 and
// bf16 caches (append + attention, the kernels Attention launches for one row). GB/s
// counts the live keys and values once.
func BenchmarkAttentionDecodeKV(bm *testing.B) {
	for _, kv := range []string{"f32", "bf16"} {
		for _, ctx := range []int{8192, 32768} {
			bm.Run(fmt.Sprintf("%s/ctx=%d", kv, ctx), func(bm *testing.B) { benchAttentionDecode(bm, kv == "bf16", ctx) })
		}
	}
}

func benchAttentionDecode(bm *testing.B, bfKV bool, ctx int) {
	b := benchBackend(bm)
	if bfKV {
		b = backendWith(bm, Options{KVBF16: true})
	}
	const heads, kvHeads, hd = 32, 8, 128
	r := rand.New(rand.NewPCG(45, 45))
	cache := b.NewKVCache(1, kvHeads, hd, ctx+bm.N+8).(*KVCache)
	defer cache.Release()
	fill := randn(r, ctx*hd)
	raw := toBF16Rounded(fill)
	func() {
		defer b.enter()()
		for h := 0; h < kvHeads; h++ {
			at := cu.DevicePtr(int64(cache.l[0].Off[h]) * hd * cache.esz())
			for _, buf := range []cu.DevicePtr{cache.buf.k[0], cache.buf.v[0]} {
				src, size := unsafe.Pointer(&fill[0]), int64(len(fill))*4
				if bfKV {
					src, size = unsafe.Pointer(&raw[0]), int64(len(raw))*2
				}
				if err := cu.MemcpyHtoD(buf+at, src, size); err != nil {
					bm.Fatal(err)
				}
			}
			cache.l[0].Len[h] = ctx
		}
		if err := cache.uploadMeta(0); err != nil {
			bm.Fatal(err)
		}
	}()
	q, _ := b.Weight(randn(r, heads*hd), 1, heads*hd)
	k, _ := b.Weight(randn(r, kvHeads*hd), 1, kvHeads*hd)
	out := b.Alloc(1, heads*hd)
	sec := gpuSeconds(bm, b, func() { b.Attention(out, q, k, k, cache, 0, 0.088) })
	bytes := float64(ctx) * kvHeads * hd * float64(cache.esz()) * 2
	bm.ReportMetric(bytes/sec/1e9, "GB/s")
	bm.ReportMetric(bytes/4.3e12*1e6, "floor-us")
}
