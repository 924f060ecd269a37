//go:build cuda

package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"gorgonia.org/cu"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/backend/backendtest"
	"github.com/lukv/lukv/backend/cpu"
)

// Tolerances of the tensor-core attention against the float32 CPU reference, as
// max|got-want| / max|want| (backendtest.Check).
//
// With inputs that are bf16 values already (q, k, v rounded before both backends see
// them), the one rounding left is of the softmax weights p to bf16 before P V (unit
// roundoff 2^-9; the weight 2^0 of the running maximum is exact). The numerator carries
// sum_j w_j e_j v_j with |e_j| <= 2^-9 and the weights w summing to 1, while the sum l
// is float32: at most 2^-9 max|v| ~ 0.002 max|v| and, with random rounding, far less
// except in the first rows (one to a few keys), whose outputs are also the largest.
// A bit-level emulation of the kernel's arithmetic (bf16 rounding, float32 mma
// accumulation, base-2 online softmax, split-K combine) on shapes like these gave at
// most 1.6e-3, so attnTCTolExact = 5e-3; a wrong key (a masking off-by-one moves a row
// by ~1/keys of its spread), a wrong head or a stale tile gives far more.
//
// With float32 inputs the tensor cores also round q, k and v: v's rounding adds at most
// another 2^-9 max|v|, q and k's perturb every score by ~2^-9 |q||k| scale (~2e-3 for
// unit-variance data), changing weights by about as much. The emulation gave at most
// 4.7e-3 (largest for chunks over an already filled cache, whose outputs average many
// values and so are small); attnTCTolRaw = 1e-2.
const (
	attnTCTolExact = 5e-3
	attnTCTolRaw   = 1e-2
)

// attnTCBackend is a backend with Options.TensorCores and every launch checked.
func attnTCBackend(t testing.TB) *Backend {
	return backendWith(t, Options{TensorCores: true, Sync: true})
}

// nanTensor is a float32 [rows, cols] tensor full of NaN, so a result element the kernel
// never writes fails backendtest.Check.
func nanTensor(t testing.TB, b *Backend, rows, cols int) backend.Tensor {
	t.Helper()
	out := b.Alloc(rows, cols)
	func() {
		defer b.enter()()
		ct := out.(*Tensor)
		if err := cu.MemsetD32Async(ct.ptr, 0x7fc00000, ct.size/4, cu.NoStream); err != nil {
			t.Fatal(err)
		}
	}()
	return out
}

// attnTCCase is one scenario: prefill chunks of the given sizes on the CUDA backend with
// tensor cores and on the CPU backend, optionally compacting every head to a different
// length after chunk compactAfter, comparing every output.
type attnTCCase struct {
	name               string
	heads, kvHeads, hd int
	chunks             []int
	compactAfter       int  // index of the chunk after which the cache is compacted; -1: never
	raw                bool // float32 inputs (else rounded to bf16 for both backends)
	warps              int  // attnTCWarps for this case
}

// TestAttentionTCAgainstCPU: the tensor-core prefill attention matches the CPU backend
// for the shapes of the Llama / Mistral / Qwen families and their corner cases: row
// counts that are and are not multiples of the 64-row block and of the 64-key tile,
// prefill into an empty cache and into one that already holds tokens (chunked prefill),
// heads of different lengths after a compaction, split-K over a long cache, grouped
// queries (1, 4 and 8 query heads per KV head), padded head dims (16, 32, 96), both
// block sizes, and float32 inputs. Every output starts as NaN, every chunk of >= 64 rows
// must have taken the tensor-core path (and shorter ones the CUDA-core kernel), and the
// cache ends holding exactly the CPU's keys and values.
func TestAttentionTCAgainstCPU(t *testing.T) {
	b := attnTCBackend(t)
	cases := []attnTCCase{
		{"n64_mha_hd64", 8, 8, 64, []int{64}, -1, false, 4},
		{"n100_g4_hd128", 32, 8, 128, []int{100}, -1, false, 4},
		{"n4096_g4_hd64", 8, 2, 64, []int{4096}, -1, false, 4},
		{"n1000_mha_hd128_w8", 8, 8, 128, []int{1000}, -1, false, 8},
		{"n4096_g4_hd128", 4, 1, 128, []int{4096}, -1, false, 4},
		{"chunked_g4_hd128", 32, 8, 128, []int{300, 64, 700}, -1, false, 4},
		{"short_then_tc_hd64", 8, 8, 64, []int{37, 200}, -1, false, 4},
		{"compacted_g4_hd64", 8, 2, 64, []int{700, 130}, 0, false, 4},
		{"compacted_g4_hd128_w8", 32, 8, 128, []int{1000, 257}, 0, false, 8},
		{"split_k_long_cache", 8, 8, 128, []int{2000, 64}, -1, false, 4},
		{"split_k_after_compact", 8, 2, 64, []int{1500, 70}, 0, false, 4},
		{"pad_hd96", 16, 4, 96, []int{300}, -1, false, 4},
		{"pad_hd32_g8", 8, 1, 32, []int{200, 90}, -1, false, 4},
		{"pad_hd16", 4, 4, 16, []int{128}, -1, false, 4},
		{"raw_float32_inputs", 32, 8, 128, []int{500, 300}, -1, true, 4},
	}
	for ci, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			defer func(w int) { attnTCWarps = w }(attnTCWarps)
			attnTCWarps = c.warps
			r := rand.New(rand.NewPCG(20, uint64(ci)))
			ref := cpu.New()
			gc := b.NewKVCache(1, c.kvHeads, c.hd, 16)
			defer gc.(*KVCache).Release()
			cc := ref.NewKVCache(1, c.kvHeads, c.hd, 16)
			scale := float32(1 / math.Sqrt(float64(c.hd)))
			tol := attnTCTolExact
			if c.raw {
				tol = attnTCTolRaw
			}
			for i, n := range c.chunks {
				q := randn(r, n*c.heads*c.hd)
				k := randn(r, n*c.kvHeads*c.hd)
				v := randn(r, n*c.kvHeads*c.hd)
				if !c.raw {
					q, k, v = roundTo(q, bf16), roundTo(k, bf16), roundTo(v, bf16)
				}
				before := b.attnTC.calls
				lenOld := gc.Len(0, 0)
				out := nanTensor(t, b, n, c.heads*c.hd)
				b.Attention(out, backendtest.Upload(t, b, q, n, c.heads*c.hd), backendtest.Upload(t, b, k, n, c.kvHeads*c.hd),
					backendtest.Upload(t, b, v, n, c.kvHeads*c.hd), gc, 0, scale)
				refOut := ref.Alloc(n, c.heads*c.hd)
				ref.Attention(refOut, backendtest.Upload(t, ref, q, n, c.heads*c.hd), backendtest.Upload(t, ref, k, n, c.kvHeads*c.hd),
					backendtest.Upload(t, ref, v, n, c.kvHeads*c.hd), cc, 0, scale)
				what := fmt.Sprintf("chunk %d (%d rows after %d cached)", i, n, lenOld)
				if got, want := b.attnTC.calls-before, boolInt(n >= attnTCMinRows); got != want {
					t.Fatalf("%s: %d tensor-core launches, want %d", what, got, want)
				}
				backendtest.Check(t, what, b.Read(out), ref.Read(refOut), tol)
				if i == c.compactAfter {
					compactHeadsApart(t, r, gc, cc)
				}
			}
			backendtest.SameCache(t, "caches at the end", gc, cc)
		})
	}
}

// compactHeadsApart keeps a random subset of every head's entries (entry 0 always, a
// different fraction per head, so the heads end with different lengths) in both caches.
func compactHeadsApart(t *testing.T, r *rand.Rand, gc, cc backend.KVCache) {
	t.Helper()
	kvHeads := cc.KVHeads()
	keep := make([][]int, kvHeads)
	lens := map[int]bool{}
	for h := range keep {
		frac := 0.3 + 0.6*float64(h)/float64(max(kvHeads-1, 1))
		for j := 0; j < cc.Len(0, h); j++ {
			if j == 0 || r.Float64() < frac {
				keep[h] = append(keep[h], j)
			}
		}
		lens[len(keep[h])] = true
	}
	if kvHeads > 1 && len(lens) < 2 {
		t.Fatalf("compaction left every head with the same length %v", lens)
	}
	for _, cache := range []backend.KVCache{gc, cc} {
		if err := cache.Compact(0, keep, 1); err != nil {
			t.Fatal(err)
		}
	}
}

func boolInt(v bool) int {
	if v {
		return 1
	}
	return 0
}

// TestAttentionTCFallback: with tensor cores on, calls the tensor-core kernels do not
// take (fewer than 64 rows; head dims 72 and 256) run the float32 kernel, launch nothing
// on the tensor-core path, and match the CPU backend to float32 accuracy.
func TestAttentionTCFallback(t *testing.T) {
	b := attnTCBackend(t)
	r := rand.New(rand.NewPCG(21, 1))
	for _, s := range [][4]int{{63, 8, 2, 128}, {100, 8, 2, 72}, {100, 4, 1, 256}} {
		n, heads, kvHeads, hd := s[0], s[1], s[2], s[3]
		ref := cpu.New()
		gc, cc := b.NewKVCache(1, kvHeads, hd, 16), ref.NewKVCache(1, kvHeads, hd, 16)
		q, k, v := randn(r, n*heads*hd), randn(r, n*kvHeads*hd), randn(r, n*kvHeads*hd)
		before := b.attnTC.calls
		out := nanTensor(t, b, n, heads*hd)
		b.Attention(out, backendtest.Upload(t, b, q, n, heads*hd), backendtest.Upload(t, b, k, n, kvHeads*hd), backendtest.Upload(t, b, v, n, kvHeads*hd), gc, 0, 0.1)
		refOut := ref.Alloc(n, heads*hd)
		ref.Attention(refOut, backendtest.Upload(t, ref, q, n, heads*hd), backendtest.Upload(t, ref, k, n, kvHeads*hd), backendtest.Upload(t, ref, v, n, kvHeads*hd), cc, 0, 0.1)
		if b.attnTC.calls != before {
			t.Errorf("%v: took the tensor-core path", s)
		}
		backendtest.Check(t, fmt.Sprintf("fallback %v", s), b.Read(out), ref.Read(refOut), f32Tol)
		gc.(*KVCache).Release()
	}
}

// TestAttentionPath: the path description says which kernel prefill uses.
func TestAttentionPath(t *testing.T) {
	if p := attnTCBackend(t).AttentionPath(); !strings.Contains(p, "tensor-core") || strings.Contains(p, "unavailable") {
		t.Errorf("with TensorCores: %q", p)
	}
	if p := testBackend(t).AttentionPath(); !strings.Contains(p, "TensorCores off") {
		t.Errorf("without TensorCores: %q", p)
	}
}

// TestPlanAttentionTC checks the planner's invariants: it takes exactly the head dims
// that are multiples of 16 up to 128, padding to a kernel template; the grid covers
// every row and head; the splits tile every visible key with whole 64-key tiles; the
// scratch rows cover every key a tile may load; the shared memory fits a multiprocessor;
// and small calls over long caches are split.
func TestPlanAttentionTC(t *testing.T) {
	for _, hd := range []int{8, 16, 32, 48, 64, 72, 80, 96, 112, 128, 132, 256} {
		for _, warps := range []int{4, 8} {
			for _, heads := range []int{4, 28, 32, 64} {
				for _, n := range []int{1, 64, 100, 4096, 32768} {
					for _, maxLen := range []int{0, 37, 1000, 200000} {
						p, ok := planAttentionTC(n, heads, hd, maxLen, 132, warps)
						name := fmt.Sprintf("hd %d warps %d heads %d n %d len %d: %+v", hd, warps, heads, n, maxLen, p)
						if want := hd%16 == 0 && hd <= 128; ok != want {
							t.Fatalf("%s: ok = %v, want %v", name, ok, want)
						}
						if !ok {
							continue
						}
						bm := 16 * warps
						visible := maxLen + n
						switch {
						case p.hdp < hd || (p.hdp != 64 && p.hdp != 128) || (hd <= 64 && p.hdp != 64):
							t.Errorf("%s: padded head dim", name)
						case p.grid[0]*bm < n || (p.grid[0]-1)*bm >= n || p.grid[1] != heads || p.grid[2] != p.splits || p.block[0] != 32*warps:
							t.Errorf("%s: grid does not cover the rows", name)
						case p.chunk%attnTCKeys != 0 || p.splits < 1 || p.splits*p.chunk < visible || (p.splits-1)*p.chunk >= visible:
							t.Errorf("%s: splits do not tile the keys", name)
						case p.rows%attnTCKeys != 0 || p.rows < visible || p.rows >= visible+attnTCKeys:
							t.Errorf("%s: scratch rows", name)
						case p.smem > 227*1024 || p.smem != attnTCSmem(p.hdp):
							t.Errorf("%s: shared memory", name)
						case p.splits > attnTCSplitMax || (p.splits > 1 && p.chunk < attnTCSplitMinKeys):
							t.Errorf("%s: too many splits", name)
						}
						if blocks := p.grid[0] * heads; blocks < 2*132 && visible >= 4*attnTCSplitMinKeys && p.splits == 1 {
							t.Errorf("%s: %d blocks over %d keys not split", name, blocks, visible)
						}
					}
				}
			}
		}
	}
	if _, ok := planAttentionTC(100, 8, 64, 0, 132, 6); ok {
		t.Error("6 warps per block accepted")
	}
}

// BenchmarkPrefillAttentionTC: one layer's prefill attention of a Llama-3.1-8B shape (32
// query heads, 8 KV heads of 128) into an empty cache, per call: the fused append, the bf16
// copy of the cache, the attention kernel. Reports the causal rate,
// 4 * n^2/2 * hd * heads FLOPs per call, next to the floor at the H200's ~790 TFLOP/s
// measured dense bf16 rate (shared/GPU.md). w4 / w8: warps per block (attnTCWarps);
// cudacore: the float32 kernel (TensorCores off), for comparison.
func BenchmarkPrefillAttentionTC(bm *testing.B) {
	for _, c := range []struct {
		n     int
		warps int // 0: CUDA cores
	}{{8192, 0}, {8192, 4}, {8192, 8}, {32768, 4}, {32768, 8}} {
		name := fmt.Sprintf("n=%d/w%d", c.n, c.warps)
		if c.warps == 0 {
			name = fmt.Sprintf("n=%d/cudacore", c.n)
		}
		bm.Run(name, func(bm *testing.B) { benchPrefillAttention(bm, c.n, c.warps) })
	}
}

var (
	prefillInputs = map[[2]int][3]backend.Tensor{} // by (backend 0/1, n): q, k, v
)

func benchPrefillAttention(bm *testing.B, n, warps int) {
	const heads, kvHeads, hd = 32, 8, 128
	b := benchBackend(bm)
	which := 0
	if warps > 0 {
		b, which = backendWith(bm, Options{TensorCores: true}), 1
		defer func(w int) { attnTCWarps = w }(attnTCWarps)
		attnTCWarps = warps
	}
	in, ok := prefillInputs[[2]int{which, n}]
	if !ok {
		r := rand.New(rand.NewPCG(30, uint64(n)))
		uniform := func(count int) []float32 {
			x := make([]float32, count)
			for i := range x {
				x[i] = 2*r.Float32() - 1
			}
			return x
		}
		for i, cols := range []int{heads * hd, kvHeads * hd, kvHeads * hd} {
			t, err := b.Weight(uniform(n*cols), n, cols)
			if err != nil {
				bm.Fatal(err)
			}
			in[i] = t
		}
		prefillInputs[[2]int{which, n}] = in
	}
	cache := b.NewKVCache(1, kvHeads, hd, n).(*KVCache)
	defer cache.Release()
	out := b.Alloc(n, heads*hd)
	defer b.Free(out)
	scale := float32(1 / math.Sqrt(hd))
	sec := gpuSeconds(bm, b, func() {
		if err := cache.Truncate(0); err != nil {
			bm.Fatal(err)
		}
		b.Attention(out, in[0], in[1], in[2], cache, 0, scale)
	})
	if warps > 0 && b.attnTC.calls == 0 {
		bm.Fatalf("the tensor-core path did not run: %s", b.AttentionPath())
	}
	flops := 4 * float64(n) * float64(n) / 2 * hd * heads
	bm.ReportMetric(flops/sec/1e12, "TFLOP/s")
	bm.ReportMetric(sec*1e3, "ms/call")
	bm.ReportMetric(flops/790e12*1e3, "floor-ms")
}
