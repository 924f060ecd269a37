package cpu_test

import (
	"context"
	"os"
	"testing"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/backend/cpu"
	"github.com/lukv/lukv/model"
	"github.com/lukv/lukv/models"
	"github.com/lukv/lukv/quant"
)

// BenchmarkForward measures prefill (512 tokens) and decode (64 steps after it) tokens/s
// of the default model, or of the checkpoint in $LUKV_BENCH_MODEL, with its matrices as
// loaded (bf16 checkpoints stay bf16) and quantized to int8 (package quant, through
// WeightInt8: what `--weights int8` loads).
func BenchmarkForward(b *testing.B) {
	dir := os.Getenv("LUKV_BENCH_MODEL")
	if dir == "" {
		var err error
		if dir, err = models.DefaultDir(); err != nil {
			b.Fatal(err)
		}
	}
	for _, weights := range []string{"as-loaded", "int8"} {
		bk := cpu.New()
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
