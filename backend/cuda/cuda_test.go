//go:build cuda

package cuda

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/backend/backendtest"
	"github.com/lukv/lukv/backend/cpu"
	"github.com/lukv/lukv/generate"
	"github.com/lukv/lukv/model"
	"github.com/lukv/lukv/tests/golden"
	"github.com/lukv/lukv/tokenizer"
)

// f32Tol is the tolerance (max|got-want| / max|want|) for results the GPU computes in
// float32 from exactly stored inputs: float32 rounding in another order lands near
// 1e-6; rounding any input or activation to bfloat16 would give about 4e-3.
const f32Tol = 1e-4

var (
	backendOnce sync.Once
	backendAll  *Backend
	backendErr  error
)

// testBackend is the shared backend of the tests (WeightsExact, every launch checked).
// A machine without a GPU or without compiled kernels fails here, loudly.
func testBackend(t testing.TB) *Backend {
	t.Helper()
	backendOnce.Do(func() {
		backendAll, backendErr = New(Options{Sync: true})
		if backendErr == nil {
			free, total := backendAll.MemInfo()
			fmt.Printf("cuda backend: %s; %s free of %s\n", backendAll.Device(), human(int64(free)), human(int64(total)))
		}
	})
	if backendErr != nil {
		t.Fatalf("cuda backend: %v", backendErr)
	}
	return backendAll
}

// TestConformance runs the backend-independent suite. Its random inputs are not bf16
// values, so WeightsExact stores them as float32 and the float32 tolerance applies.
func TestConformance(t *testing.T) {
	backendtest.Run(t, testBackend(t), f32Tol)
}

func randn(r *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	return x
}

// roundTo makes every value exactly representable in dt (bf16 or f16).
func roundTo(x []float32, dt dtype) []float32 {
	out := make([]float32, len(x))
	for i, v := range x {
		switch dt {
		case bf16:
			out[i] = math.Float32frombits(uint32(toBF16Rounded([]float32{v})[0]) << 16)
		case f16:
			// Keep 10 mantissa bits; values below half's normal range become 0.
			if math.Abs(float64(v)) < 1.0/(1<<14) {
				out[i] = 0
			} else {
				out[i] = math.Float32frombits(math.Float32bits(v) &^ 0x1fff)
			}
		default:
			out[i] = v
		}
	}
	return out
}

// TestHalfConversions: every finite half converts to float32 and back to the same bits;
// values between halves are refused; bf16 rounding is to nearest even.
func TestHalfConversions(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		f := f16ToF32(uint16(h))
		if f != f { // NaN
			continue
		}
		back, err := f32ToF16Exact(f)
		if err != nil || back != uint16(h) {
			t.Fatalf("half %#04x -> %g -> %#04x, %v", h, f, back, err)
		}
	}
	for _, v := range []float32{1 + 1.0/2048, 65520, 1e-8, float32(math.NaN())} {
		if _, err := f32ToF16Exact(v); err == nil {
			t.Errorf("f32ToF16Exact(%g) accepted a value that is not a half", v)
		}
	}
	cases := map[float32]uint16{1: 0x3f80, 1 + 1.0/256: 0x3f80, 1 + 3.0/256: 0x3f82, -2: 0xc000, 1 + 1.0/128: 0x3f81}
	for v, want := range cases {
		if got := toBF16Rounded([]float32{v})[0]; got != want {
			t.Errorf("bf16(%g) = %#04x, want %#04x", v, got, want)
		}
	}
}

// TestWeightStorage: WeightsExact keeps bf16 and f16 checkpoints in 16 bits without
// changing a value, float32 data in float32, vectors in float32; WeightsBF16 rounds.
func TestWeightStorage(t *testing.T) {
	b := testBackend(t)
	r := rand.New(rand.NewPCG(1, 1))
	x := randn(r, 64*48)
	for _, c := range []struct {
		data       []float32
		rows, cols int
		want       string
	}{
		{roundTo(x, bf16), 64, 48, "bfloat16"},
		{roundTo(x, f16), 64, 48, "float16"},
		{x, 64, 48, "float32"},
		{roundTo(x[:48], bf16), 1, 48, "float32"},
	} {
		w := backendtest.Upload(t, b, c.data, c.rows, c.cols)
		if got := w.(*Tensor).DType(); got != c.want {
			t.Errorf("[%d, %d] stored as %s, want %s", c.rows, c.cols, got, c.want)
		}
		backendtest.Check(t, "read back "+c.want, b.Read(w), c.data, 0)
	}
	b16, err := New(Options{Weights: WeightsBF16, Sync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b16.Close()
	w := backendtest.Upload(t, b16, x, 64, 48)
	if got := w.(*Tensor).DType(); got != "bfloat16" {
		t.Errorf("WeightsBF16 stored float32 data as %s", got)
	}
	backendtest.Check(t, "WeightsBF16 read back", b16.Read(w), roundTo(x, bf16), 0)
	if e := backendtest.RelErr(b16.Read(w), x); e == 0 || e > 1.0/128 {
		t.Errorf("WeightsBF16 rounding error %.3g, want in (0, 1/128]", e)
	}
}

// refMatMul is x @ w^T in float64.
func refMatMul(x, w []float32, n, in, out int) []float32 {
	res := make([]float32, n*out)
	for i := 0; i < n; i++ {
		for o := 0; o < out; o++ {
			var acc float64
			for k := 0; k < in; k++ {
				acc += float64(x[i*in+k]) * float64(w[o*in+k])
			}
			res[i*out+o] = float32(acc)
		}
	}
	return res
}

// TestMatMulDTypes covers both matmul kernels (gemv for n <= 8, tiled above) with every
// weight type, aligned (16-byte vector loads) and unaligned rows, and ragged edges.
func TestMatMulDTypes(t *testing.T) {
	b := testBackend(t)
	r := rand.New(rand.NewPCG(2, 2))
	shapes := [][3]int{{1, 64, 48}, {3, 72, 40}, {8, 256, 1000}, {5, 33, 17}, {2, 31, 9},
		{9, 64, 65}, {64, 128, 64}, {65, 200, 130}, {130, 37, 70}}
	for _, dt := range []dtype{f32, bf16, f16} {
		for _, s := range shapes {
			n, in, out := s[0], s[1], s[2]
			x := randn(r, n*in)
			w := randn(r, out*in)
			if dt != f32 {
				w = roundTo(w, dt)
			}
			wt := backendtest.Upload(t, b, w, out, in)
			if got := wt.(*Tensor).dt; got != dt {
				t.Fatalf("weights stored as %v, want %v", got, dt)
			}
			res := b.Alloc(n, out)
			b.MatMul(res, backendtest.Upload(t, b, x, n, in), wt)
			backendtest.Check(t, fmt.Sprintf("MatMul %v %v", dt, s), b.Read(res), refMatMul(x, w, n, in, out), f32Tol)
		}
	}
	// A row view as x (the forward pass's last-row LM head).
	x := randn(r, 4*64)
	w := roundTo(randn(r, 96*64), bf16)
	xt := backendtest.Upload(t, b, x, 4, 64)
	res := b.Alloc(1, 96)
	b.MatMul(res, b.RowView(xt, 3), backendtest.Upload(t, b, w, 96, 64))
	backendtest.Check(t, "MatMul of a row view", b.Read(res), refMatMul(x[3*64:], w, 1, 64, 96), f32Tol)
}

// TestMatMulBF16Policy: with WeightsBF16 random float32 weights are rounded, and the
// result stays within bf16 accuracy of the exact product.
func TestMatMulBF16Policy(t *testing.T) {
	testBackend(t)
	b, err := New(Options{Weights: WeightsBF16, Sync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	r := rand.New(rand.NewPCG(3, 3))
	for _, n := range []int{1, 40} {
		in, out := 256, 300
		x, w := randn(r, n*in), randn(r, out*in)
		res := b.Alloc(n, out)
		b.MatMul(res, backendtest.Upload(t, b, x, n, in), backendtest.Upload(t, b, w, out, in))
		backendtest.Check(t, fmt.Sprintf("bf16 MatMul n=%d", n), b.Read(res), refMatMul(x, w, n, in, out), 2e-2)
	}
}

// TestEmbedDTypes: gathering from a bf16 or f16 table is exact.
func TestEmbedDTypes(t *testing.T) {
	b := testBackend(t)
	r := rand.New(rand.NewPCG(4, 4))
	rows, dim := 50, 72
	ids := []int{49, 0, 7, 7, 23}
	for _, dt := range []dtype{bf16, f16} {
		table := roundTo(randn(r, rows*dim), dt)
		tt := backendtest.Upload(t, b, table, rows, dim)
		out := b.Alloc(len(ids), dim)
		b.Embed(out, tt, ids)
		var want []float32
		for _, id := range ids {
			want = append(want, table[id*dim:(id+1)*dim]...)
		}
		backendtest.Check(t, "Embed "+dt.String(), b.Read(out), want, 0)
	}
}

// attnCase is one attention scenario, run identically on the CPU and CUDA backends.
type attnCase struct {
	name               string
	heads, kvHeads, hd int
	prefill            []int // chunk sizes of the prefill
	keepFrac           float64
	decode             int
}

// TestAttentionAgainstCPU runs prefill (in chunks), per-head compaction (different
// lengths per head) and decode steps on both backends and compares every output and
// the final cache contents. The cases reach every kernel variant: head dims 64, 128
// and 256, query-head groups of 1, 4, 7, 16 and 32 (two head tiles), and decode over
// caches long enough for split-K.
func TestAttentionAgainstCPU(t *testing.T) {
	b := testBackend(t)
	cases := []attnCase{
		{"small_mha_hd64", 8, 8, 64, []int{37, 1, 5}, 0.5, 4},
		{"small_g16", 32, 2, 128, []int{20}, 0.7, 3},
		{"small_g32_two_tiles", 64, 2, 64, []int{12, 9}, 0.6, 2},
		{"g7_qwen_shape", 28, 4, 128, []int{700}, 0.4, 3},
		{"hd256", 4, 1, 256, []int{300, 300}, 0.5, 3},
		{"llama8b_split_k", 32, 8, 128, []int{2048}, 0.6, 3},
	}
	for ci, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(10, uint64(ci)))
			ref := cpu.New()
			gc := b.NewKVCache(1, c.kvHeads, c.hd, 16)
			cc := ref.NewKVCache(1, c.kvHeads, c.hd, 16)
			scale := float32(1 / math.Sqrt(float64(c.hd)))
			step := func(n int, what string) {
				q := randn(r, n*c.heads*c.hd)
				k := randn(r, n*c.kvHeads*c.hd)
				v := randn(r, n*c.kvHeads*c.hd)
				var outs [2][]float32
				for bi, be := range []backend.Backend{b, ref} {
					cache := []backend.KVCache{gc, cc}[bi]
					out := be.Alloc(n, c.heads*c.hd)
					be.Attention(out, backendtest.Upload(t, be, q, n, c.heads*c.hd), backendtest.Upload(t, be, k, n, c.kvHeads*c.hd),
						backendtest.Upload(t, be, v, n, c.kvHeads*c.hd), cache, 0, scale)
					outs[bi] = be.Read(out)
				}
				backendtest.Check(t, what, outs[0], outs[1], f32Tol)
			}
			for i, n := range c.prefill {
				step(n, fmt.Sprintf("prefill chunk %d (%d tokens)", i, n))
			}
			for i := 0; i < c.decode; i++ {
				step(1, fmt.Sprintf("decode step %d before compaction", i))
			}
			keep := randomKeep(r, cc, c.keepFrac)
			for _, cache := range []backend.KVCache{gc, cc} {
				if err := cache.Compact(0, keep, 1); err != nil {
					t.Fatal(err)
				}
			}
			if gc.Bytes() != cc.Bytes() || gc.LiveBytes() != cc.LiveBytes() {
				t.Errorf("after compaction: bytes %d/%d live %d/%d (cuda/cpu)", gc.Bytes(), cc.Bytes(), gc.LiveBytes(), cc.LiveBytes())
			}
			for i := 0; i < c.decode; i++ {
				step(1, fmt.Sprintf("decode step %d after compaction", i))
			}
			backendtest.SameCache(t, "caches at the end", gc, cc)
		})
	}
}

// tinyDir is the default model's folder in the repository: the checkpoint lukv-run
// embeds (importing the embedded copy would grow the test binaries by its 16 MB).
var tinyDir = filepath.Join("..", "..", "models", "lukv-tiny")

// loadTiny loads the default model on backend b.
func loadTiny(t *testing.T, b backend.Backend) *model.Model {
	t.Helper()
	m, err := model.Load(tinyDir, b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// tinyTokenizer loads the default model's tokenizer.
func tinyTokenizer(t *testing.T) *tokenizer.Tokenizer {
	t.Helper()
	tok, err := tokenizer.Load(filepath.Join(tinyDir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// randomKeep picks, per head of layer 0 of c, the first entry and each other one with
// probability keepFrac scaled from 0.5x to 1x across the heads: a different length per
// head, for Compact.
func randomKeep(r *rand.Rand, c backend.KVCache, keepFrac float64) [][]int {
	keep := make([][]int, c.KVHeads())
	for h := range keep {
		frac := keepFrac * (0.5 + float64(h+1)/float64(2*c.KVHeads()))
		for j := 0; j < c.Len(0, h); j++ {
			if j == 0 || r.Float64() < frac {
				keep[h] = append(keep[h], j)
			}
		}
	}
	return keep
}

// TestPlanAttention checks the launch planner's invariants for many shapes: every query
// vector of a block fits its warps, shared memory stays under the 48 KiB default, and the
// splits cover every key with whole tiles.
func TestPlanAttention(t *testing.T) {
	for _, hd := range []int{16, 64, 128, 132, 256} {
		for _, g := range [][2]int{{32, 8}, {28, 4}, {8, 8}, {64, 2}, {40, 8}, {4, 1}} {
			for _, n := range []int{1, 2, 7, 100, 4096} {
				for _, maxLen := range []int{0, 100, 511, 512, 5000, 200000} {
					p := planAttention(n, g[0], g[1], hd, maxLen, 132)
					name := fmt.Sprintf("hd %d heads %v n %d len %d: %+v", hd, g, n, maxLen, p)
					if p.gt*p.br > attnWarps*p.vpw || p.gt < 1 || p.br < 1 {
						t.Errorf("%s: %d vectors for %d slots", name, p.gt*p.br, attnWarps*p.vpw)
					}
					if hd > 32*p.dpl || p.smem > 48*1024 {
						t.Errorf("%s: head dim or shared memory does not fit", name)
					}
					if p.splits < 1 || p.splits*p.chunk < p.maxVisible || (p.splits-1)*p.chunk >= p.maxVisible || p.chunk%p.bk != 0 {
						t.Errorf("%s: splits do not tile the keys", name)
					}
					htiles := (g[0]/g[1] + p.gt - 1) / p.gt
					if p.grid[0]*p.br < n || p.grid[1] != g[1]*htiles || p.grid[2] != p.splits {
						t.Errorf("%s: grid does not cover the queries", name)
					}
				}
			}
		}
	}
}

// TestCompactFreesDeviceMemory: compacting a big cache releases its memory to the
// driver, as cuMemGetInfo sees it, not just in the cache's own accounting.
func TestCompactFreesDeviceMemory(t *testing.T) {
	b := testBackend(t)
	const layers, kvHeads, hd, reserve, fill, kept = 4, 8, 128, 32768, 64, 32
	free0, _ := b.MemInfo()
	cache := b.NewKVCache(layers, kvHeads, hd, reserve).(*KVCache)
	defer cache.Release()
	free1, _ := b.MemInfo()
	big := cache.Bytes() // 4 layers x 8 heads x 32768 rows x 128 x 4 B x 2 = 1 GiB
	if want := int64(layers * kvHeads * reserve * hd * 4 * 2); big != want {
		t.Fatalf("cache holds %d bytes, want %d", big, want)
	}
	if used := int64(free0) - int64(free1); used < big*9/10 {
		t.Errorf("device free memory fell by %s for a %s cache", human(used), human(big))
	}
	r := rand.New(rand.NewPCG(5, 5))
	heads := kvHeads
	for l := 0; l < layers; l++ {
		out := b.Alloc(fill, heads*hd)
		b.Attention(out, backendtest.Upload(t, b, randn(r, fill*heads*hd), fill, heads*hd), backendtest.Upload(t, b, randn(r, fill*kvHeads*hd), fill, kvHeads*hd),
			backendtest.Upload(t, b, randn(r, fill*kvHeads*hd), fill, kvHeads*hd), cache, l, 0.1)
		b.Free(out)
	}
	keys := cache.Keys(2, 5)
	keep := make([][]int, kvHeads)
	for h := range keep {
		for j := 0; j < kept; j++ {
			keep[h] = append(keep[h], 2*j)
		}
	}
	for l := 0; l < layers; l++ {
		if err := cache.Compact(l, keep, 0); err != nil {
			t.Fatal(err)
		}
	}
	free2, _ := b.MemInfo()
	small := cache.Bytes()
	if want := int64(layers * kvHeads * kept * hd * 4 * 2); small != want {
		t.Errorf("compacted cache holds %d bytes, want %d", small, want)
	}
	if released := int64(free2) - int64(free1); released < (big-small)*9/10 {
		t.Errorf("compaction released %s of device memory, want about %s", human(released), human(big-small))
	}
	got := cache.Keys(2, 5)
	for j := 0; j < kept; j++ {
		for d := 0; d < hd; d++ {
			if got[j*hd+d] != keys[2*j*hd+d] {
				t.Fatalf("kept key %d differs after compaction", j)
			}
		}
	}
}

// TestOutOfMemory: impossible allocations fail with backend.ErrOutOfMemory (returned by
// Compact and Weight's allocator, panicked as an error value by Alloc) and leave the
// cache unchanged.
func TestOutOfMemory(t *testing.T) {
	b := testBackend(t)
	func() {
		defer b.enter()()
		if _, err := allocDevice(1<<50, "test"); !errors.Is(err, backend.ErrOutOfMemory) {
			t.Errorf("allocating 1 PiB: %v, want ErrOutOfMemory", err)
		}
	}()
	func() {
		defer func() {
			err, _ := recover().(error)
			if !errors.Is(err, backend.ErrOutOfMemory) {
				t.Errorf("Alloc of 4 TiB panicked with %v, want an error wrapping ErrOutOfMemory", err)
			}
		}()
		b.Alloc(1<<20, 1<<20)
	}()
	r := rand.New(rand.NewPCG(6, 6))
	cache := b.NewKVCache(1, 1, 128, 8)
	q, k := randn(r, 4*128), randn(r, 4*128)
	b.Attention(b.Alloc(4, 128), backendtest.Upload(t, b, q, 4, 128), backendtest.Upload(t, b, k, 4, 128), backendtest.Upload(t, b, k, 4, 128), cache, 0, 0.1)
	before := cache.Keys(0, 0)
	err := cache.Compact(0, [][]int{{1, 3}}, 1<<30) // 2^30 rows x 512 B = 512 GiB
	if !errors.Is(err, backend.ErrOutOfMemory) {
		t.Fatalf("compaction to a 512 GiB reserve: %v, want ErrOutOfMemory", err)
	}
	if cache.Len(0, 0) != 4 {
		t.Errorf("failed compaction changed the length to %d", cache.Len(0, 0))
	}
	backendtest.Check(t, "keys after a failed compaction", cache.Keys(0, 0), before, 0)
}

// TestGoldenModels loads each tiny checkpoint on the GPU and checks, against
// transformers' float64 logits and against the CPU backend: the prompt's logits, the
// weights' storage type (the checkpoint's own), and the greedy continuation computed
// one decode step at a time through the KV cache.
func TestGoldenModels(t *testing.T) {
	b := testBackend(t)
	for _, arch := range []string{"llama3", "mistral", "qwen2", "qwen3"} {
		t.Run(arch, func(t *testing.T) {
			dir := filepath.Join("..", "..", "tests", "testdata", "models", arch)
			g, want, vocab, err := golden.Read(dir)
			if err != nil {
				t.Fatal(err)
			}

			gm, err := model.Load(dir, b)
			if err != nil {
				t.Fatal(err)
			}
			cm, err := model.Load(dir, cpu.New())
			if err != nil {
				t.Fatal(err)
			}
			wantDT := strings.TrimPrefix(g.StoredDType, "torch.")
			if got := gm.Layers[0].Wq.(*Tensor).DType(); got != wantDT {
				t.Errorf("q_proj stored as %s, checkpoint is %s", got, wantDT)
			}

			gcache, ccache := gm.NewCache(4), cm.NewCache(4)
			got, err := gm.Forward(context.Background(), g.PromptIDs, 0, gcache, model.ForwardOptions{AllLogits: true})
			if err != nil {
				t.Fatal(err)
			}
			ref, err := cm.Forward(context.Background(), g.PromptIDs, 0, ccache, model.ForwardOptions{AllLogits: true})
			if err != nil {
				t.Fatal(err)
			}
			backendtest.Check(t, "prompt logits vs CPU", got, ref, f32Tol)
			for r, pos := range g.LogitPositions {
				backendtest.Check(t, fmt.Sprintf("logits at %d vs transformers", pos), got[pos*vocab:(pos+1)*vocab], want[r*vocab:(r+1)*vocab], f32Tol)
			}

			n := len(g.PromptIDs)
			next := generate.Argmax(got[(n-1)*vocab : n*vocab])
			var gen []int
			for len(gen) < len(g.GreedyIDs) {
				gen = append(gen, next)
				if len(gen) == len(g.GreedyIDs) {
					break
				}
				logits, err := gm.Forward(context.Background(), []int{next}, n+len(gen)-1, gcache, model.ForwardOptions{})
				if err != nil {
					t.Fatal(err)
				}
				next = generate.Argmax(logits)
			}
			if fmt.Sprint(gen) != fmt.Sprint(g.GreedyIDs) {
				t.Errorf("greedy continuation differs from transformers'\n got %v\nwant %v", gen, g.GreedyIDs)
			}
		})
	}
}

// Benchmarks (run on the GPU machine by scripts/gpu-test.sh) print the achieved rate next
// to the floor: bytes over the H200's ~4.3 TB/s measured copy bandwidth (shared/GPU.md).

func BenchmarkMatMulDecodeBF16(bm *testing.B) {
	benchMatMul(bm, 1, 4096, 14336)
}

func BenchmarkMatMulPrefillBF16(bm *testing.B) {
	benchMatMul(bm, 512, 4096, 4096)
}

// benchBackend is a backend without per-launch synchronisation, for timing.
func benchBackend(t testing.TB) *Backend { return backendWith(t, Options{}) }

// backends are the tests' backends other than testBackend's, one per set of options,
// made on first use and shared (a CUDA context each).
var backends struct {
	sync.Mutex
	m map[Options]*Backend
}

// backendWith returns the shared backend made with opt, failing the test when it
// cannot be made.
func backendWith(t testing.TB, opt Options) *Backend {
	t.Helper()
	testBackend(t)
	backends.Lock()
	defer backends.Unlock()
	if b := backends.m[opt]; b != nil {
		return b
	}
	b, err := New(opt)
	if err != nil {
		t.Fatalf("cuda backend with %+v: %v", opt, err)
	}
	fmt.Printf("cuda backend with %+v: matmul %s\n", opt, b.MatMulPath())
	if backends.m == nil {
		backends.m = map[Options]*Backend{}
	}
	backends.m[opt] = b
	return b
}

// gpuSeconds runs op once (loading kernels, allocating scratch), then bm.N timed times,
// and returns the seconds per run, with the device synchronised around the timing.
func gpuSeconds(bm *testing.B, b *Backend, op func()) float64 {
	op()
	if err := b.Synchronize(); err != nil {
		bm.Fatal(err)
	}
	bm.ResetTimer()
	for i := 0; i < bm.N; i++ {
		op()
	}
	if err := b.Synchronize(); err != nil {
		bm.Fatal(err)
	}
	return bm.Elapsed().Seconds() / float64(bm.N)
}

func benchMatMul(bm *testing.B, n, in, out int) {
	b := benchBackend(bm)
	r := rand.New(rand.NewPCG(7, 7))
	w := roundTo(randn(r, out*in), bf16)
	wt, err := b.Weight(w, out, in)
	if err != nil {
		bm.Fatal(err)
	}
	xt, _ := b.Weight(randn(r, n*in), n, in)
	res := b.Alloc(n, out)
	sec := gpuSeconds(bm, b, func() { b.MatMul(res, xt, wt) })
	bytes := float64(out*in*2 + n*in*4 + n*out*4)
	bm.ReportMetric(bytes/sec/1e9, "GB/s")
	bm.ReportMetric(2*float64(n*in*out)/sec/1e12, "TFLOP/s")
	bm.ReportMetric(bytes/4.3e12*1e6, "floor-us")
}
