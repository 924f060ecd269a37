package cpu_test

import (
	"context"
	"math"
	"os"
	"testing"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/backend/cpu"
	"github.com/lukv/lukv/backend/cpu/vec"
	"github.com/lukv/lukv/model"
	"github.com/lukv/lukv/models"
	"github.com/lukv/lukv/quant"
)

// BenchmarkForward measures prefill (512 tokens) and decode (64 steps after it) tokens/s
// of the default model, or of the checkpoint in $LUKV_BENCH_MODEL, with its matrices as
// loaded (bf16 checkpoints stay bf16), with the BF16Dot option, and quantized to int8
// (package quant, through WeightInt8: what `--weights int8` loads).
func BenchmarkForward(b *testing.B) {
	dir := os.Getenv("LUKV_BENCH_MODEL")
	if dir == "" {
		var err error
		if dir, err = models.DefaultDir(); err != nil {
			b.Fatal(err)
		}
	}
	for _, weights := range []string{"as-loaded", "bf16-dot", "int8"} {
		bk := &cpu.Backend{BF16Dot: weights == "bf16-dot"}
		m, err := model.Load(dir, bk)
		if err != nil {
			b.Fatal(err)
		}
		if weights == "int8" {
			toInt8(b, bk, m)
		}
		const n, steps = 512, 64
		ids := make([]int, n)
		for i := range ids {
			ids[i] = (i*7919 + 13) % m.Config.VocabSize
		}
		b.Run(weights+"/prefill", func(b *testing.B) {
			for b.Loop() {
				if _, err := m.Forward(context.Background(), ids, 0, m.NewCache(n), model.ForwardOptions{}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "tok/s")
		})
		b.Run(weights+"/decode", func(b *testing.B) {
			cache := m.NewCache(n + steps)
			if _, err := m.Forward(context.Background(), ids, 0, cache, model.ForwardOptions{}); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for b.Loop() {
				if err := cache.Truncate(n); err != nil {
					b.Fatal(err)
				}
				for s := range steps {
					if _, err := m.Forward(context.Background(), []int{s + 1}, n+s, cache, model.ForwardOptions{}); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(steps*b.N)/b.Elapsed().Seconds(), "tok/s")
		})
	}
}

// toInt8 replaces every projection matrix (and an untied LM head) by its int8 form.
func toInt8(b *testing.B, bk *cpu.Backend, m *model.Model) {
	conv := func(t *backend.Tensor) {
		w := (*t).(*cpu.Mat)
		q, err := quant.Quantize(bk.Read(w), w.R, w.C)
		if err != nil {
			b.Fatal(err)
		}
		if *t, err = bk.WeightInt8(q); err != nil {
			b.Fatal(err)
		}
	}
	for i := range m.Layers {
		l := &m.Layers[i]
		for _, t := range []*backend.Tensor{&l.Wq, &l.Wk, &l.Wv, &l.Wo, &l.Wgate, &l.Wup, &l.Wdown} {
			conv(t)
		}
	}
	if m.LMHead != m.Embed {
		conv(&m.LMHead)
	}
}

// The BF16Dot option's cost: the default model's logits after a 64-token prefill with
// activations rounded to bf16 against the exact products. Bounds: the largest difference
// under 5% of the logits' range, the greedy token unchanged at 95% of positions.
func TestBF16DotLogits(t *testing.T) {
	dir, err := models.DefaultDir()
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]int, 64)
	for i := range ids {
		ids[i] = (i*7919 + 13) % 8000
	}
	logits := func(b *cpu.Backend) ([]float32, int) {
		m, err := model.Load(dir, b)
		if err != nil {
			t.Fatal(err)
		}
		out, err := m.Forward(context.Background(), ids, 0, m.NewCache(len(ids)), model.ForwardOptions{AllLogits: true})
		if err != nil {
			t.Fatal(err)
		}
		return out, m.Config.VocabSize
	}
	want, V := logits(cpu.New())
	got, _ := logits(&cpu.Backend{BF16Dot: true})
	var maxDiff, sumDiff float64
	lo, hi := math.Inf(1), math.Inf(-1)
	same := 0
	for p := range len(ids) {
		g, w := got[p*V:(p+1)*V], want[p*V:(p+1)*V]
		for i := range w {
			d := math.Abs(float64(g[i] - w[i]))
			maxDiff, sumDiff = max(maxDiff, d), sumDiff+d
			lo, hi = min(lo, float64(w[i])), max(hi, float64(w[i]))
		}
		if argmax(g) == argmax(w) {
			same++
		}
	}
	t.Logf("bf16 activations (vec.HasBF16Dot %v): logits max |diff| %.4g, mean %.4g, range %.4g; greedy token same at %d of %d positions",
		vec.HasBF16Dot(), maxDiff, sumDiff/float64(len(got)), hi-lo, same, len(ids))
	if maxDiff > 0.05*(hi-lo) || same < len(ids)*95/100 {
		t.Errorf("bf16 activations move the logits too far: max |diff| %.4g of range %.4g, greedy same at %d of %d", maxDiff, hi-lo, same, len(ids))
	}
}

func argmax(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}
