package tests

import (
	"context"
	"testing"

	"github.com/lukv/lukv/backend/cpu"
	"github.com/lukv/lukv/model"
	"github.com/lukv/lukv/models"
)

// loadDefault loads the embedded default model on the CPU backend.
func loadDefault(b *testing.B) *model.Model {
	b.Helper()
	dir, err := models.DefaultDir()
	if err != nil {
		b.Fatal(err)
	}
	m, err := model.Load(dir, cpu.New())
	if err != nil {
		b.Fatal(err)
	}
	return m
}

// benchPrompt is n token ids cycling through the vocabulary.
func benchPrompt(m *model.Model, n int) []int {
	ids := make([]int, n)
	for i := range ids {
		ids[i] = (i*7919 + 13) % m.Config.VocabSize
	}
	return ids
}

// BenchmarkCPUPrefill reports prompt tokens/s for a prefill of the default model.
func BenchmarkCPUPrefill(b *testing.B) {
	m := loadDefault(b)
	n := min(1024, m.Config.MaxPositionEmbeddings)
	ids := benchPrompt(m, n)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := m.Forward(context.Background(), ids, 0, m.NewCache(n), model.ForwardOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "tok/s")
}

// BenchmarkCPUDecode reports decode tokens/s of the default model after a prompt that
// fills a quarter of its context.
func BenchmarkCPUDecode(b *testing.B) {
	m := loadDefault(b)
	n := min(1024, m.Config.MaxPositionEmbeddings/4)
	steps := 32
	cache := m.NewCache(n + steps)
	if _, err := m.Forward(context.Background(), benchPrompt(m, n), 0, cache, model.ForwardOptions{}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := cache.Truncate(n); err != nil {
			b.Fatal(err)
		}
		for s := 0; s < steps; s++ {
			if _, err := m.Forward(context.Background(), []int{s + 1}, n+s, cache, model.ForwardOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(steps*b.N)/b.Elapsed().Seconds(), "tok/s")
}
