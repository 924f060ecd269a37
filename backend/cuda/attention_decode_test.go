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

// withSplitK runs f with the split-K decode kernel on (attention_decode.go).
func withSplitK(f func()) {
	old := decodeSplitKOn
	decodeSplitKOn = true
	defer func() { decodeSplitKOn = old }()
	f()
}

// TestDecodeSplitK: decode_attn_* against the CPU, float32 and bf16 caches, groups of
// 1, 2, 3 (a repeated vector), 4, 7 and 8, head dims 16 to 256, caches long enough for
// many splits (combined by the last block) and heads left by compaction at very
// different lengths, including 0 (keep fraction 0: only the new row is visible) and 1.
// After each call the split counters must be back at zero.
func TestDecodeSplitK(t *testing.T) {
	cases := []decodeCase{
		{32, 8, 128, 1, 5000, []float64{1, 0.3, 0, 0.7, 1, 0.5, 0.9, 0.0002}},
		{8, 4, 64, 1, 900, []float64{0.2, 1, 0, 0.4}},
		{6, 2, 32, 1, 700, []float64{1, 0.1}},
		{28, 4, 128, 1, 3000, []float64{0.5, 0.8, 1, 0.2}},
		{8, 1, 64, 1, 400, []float64{0.9}},
		{4, 4, 16, 1, 600, []float64{1, 0.5, 0.25, 0}},
		{2, 2, 256, 1, 1200, []float64{0.7, 1}},
		{16, 2, 128, 1, 100, []float64{1, 1}},
	}
	withSplitK(func() {
		for _, bfKV := range []bool{false, true} {
			b := testBackend(t)
			if bfKV {
				b = kvBF16Backend(t)
			}
			for ci, c := range cases {
				if _, ok := planSplitK(c.heads, c.kvHeads, c.hd, c.fill, b.sms, bfKV); !ok {
					t.Fatalf("case %d: planSplitK refused %+v", ci, c)
				}
				t.Run(fmt.Sprintf("bf16_%v/case%d", bfKV, ci), func(t *testing.T) { splitKCase(t, b, bfKV, ci, c) })
			}
		}
	})
}

func splitKCase(t *testing.T, b *Backend, bfKV bool, ci int, c decodeCase) {
	r := rand.New(rand.NewPCG(60, uint64(ci)))
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
			if i == 0 {
				out = poisoned(b, n, c.heads*c.hd)
			}
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
	step(1, "decode before compaction")
	keep := make([][]int, c.kvHeads)
	for h := range keep {
		for j := 0; j < cc.Len(0, h); j++ {
			if c.keep[h] > 0 && (j == 0 || r.Float64() < c.keep[h]) {
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
		step(1, fmt.Sprintf("decode call %d after compaction (lengths %v)", i, lens(cc, c.kvHeads)))
	}
}

func lens(c backend.KVCache, kvHeads int) []int {
	l := make([]int, kvHeads)
	for h := range l {
		l[h] = c.Len(0, h)
	}
	return l
}

// TestPlanSplitK: the planner takes groups up to 8 and head dims that are multiples of 16
// up to 256; the splits tile the visible keys in whole tiles (no empty split, at most
// daMaxSplits); shared memory fits the 227 KB a block may opt into.
func TestPlanSplitK(t *testing.T) {
	for _, bfKV := range []bool{false, true} {
		for _, hd := range []int{8, 16, 64, 96, 128, 256, 512} {
			for _, g := range [][2]int{{32, 8}, {28, 4}, {8, 8}, {64, 2}, {4, 1}, {6, 2}, {9, 1}} {
				for _, maxLen := range []int{0, 100, 5000, 200000, 2000000} {
					p, ok := planSplitK(g[0], g[1], hd, maxLen, 132, bfKV)
					wantOK := hd%16 == 0 && hd <= 256 && g[0]/g[1] <= 8
					name := fmt.Sprintf("bf16 %v hd %d heads %v len %d: %+v", bfKV, hd, g, maxLen, p)
					if ok != wantOK {
						t.Errorf("%s: ok %v, want %v", name, ok, wantOK)
					}
					if !ok {
						continue
					}
					visible := maxLen + 1
					if 1<<p.lgG < g[0]/g[1] || p.lgG > 3 || p.chunk%p.tile != 0 {
						t.Errorf("%s: vectors or chunk", name)
					}
					if p.splits < 1 || p.splits > daMaxSplits || p.splits*p.chunk < visible || (p.splits-1)*p.chunk >= visible {
						t.Errorf("%s: splits do not tile the keys", name)
					}
					if p.smem > 227*1024 {
						t.Errorf("%s: %d bytes of shared memory", name, p.smem)
					}
				}
			}
		}
	}
}

// TestSplitKModel: the default model decodes the same with the split-K decode attention
// as with attention_decode_*: 8 steps after a prompt, float32 accuracy, same tokens.
func TestSplitKModel(t *testing.T) {
	b := testBackend(t)
	ma, mb := loadTiny(t, b), loadTiny(t, b)
	ids := []int{1, 450, 2030, 17, 3, 99, 1200, 5}
	ca, cb := ma.NewCache(8), mb.NewCache(8)
	la, err := ma.Forward(context.Background(), ids, 0, ca, model.ForwardOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mb.Forward(context.Background(), ids, 0, cb, model.ForwardOptions{}); err != nil {
		t.Fatal(err)
	}
	tok := generate.Argmax(la)
	for i := 0; i < 8; i++ {
		if la, err = ma.Forward(context.Background(), []int{tok}, len(ids)+i, ca, model.ForwardOptions{}); err != nil {
			t.Fatal(err)
		}
		var lb []float32
		withSplitK(func() { lb, err = mb.Forward(context.Background(), []int{tok}, len(ids)+i, cb, model.ForwardOptions{}) })
		if err != nil {
			t.Fatal(err)
		}
		backendtest.Check(t, fmt.Sprintf("step %d logits, split-K vs attention_decode", i), lb, la, f32Tol)
		if generate.Argmax(la) != generate.Argmax(lb) {
			t.Fatalf("step %d: token %d with split-K, %d without", i, generate.Argmax(lb), generate.Argmax(la))
		}
		tok = generate.Argmax(la)
	}
}

// BenchmarkAttentionDecodeSplitK: BenchmarkAttentionDecodeKV's step with decode_attn_*.
func BenchmarkAttentionDecodeSplitK(bm *testing.B) {
	withSplitK(func() {
		for _, ctx := range []int{8192, 32768} {
			bm.Run(fmt.Sprintf("bf16/ctx=%d", ctx), func(bm *testing.B) { benchAttentionDecode(bm, true, ctx) })
		}
	})
}
