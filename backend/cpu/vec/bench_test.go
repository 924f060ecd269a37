package vec

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/lukv/lukv/quant"
)

// Benchmarks at the 790 MB bench model's MLP shape (hidden 2048, intermediate 5632):
// a decode step's matrix-vector product (bound by weight bytes: GB/s is the figure to set
// beside the machine's copy bandwidth) and a 512-token prefill's product (bound by
// arithmetic: GFLOP/s), for each weight type, on GOMAXPROCS threads.
func benchMatMul(b *testing.B, n int) {
	const rows, cols = 5632, 2048
	r := rand.New(rand.NewPCG(1, 1))
	wf := randF32(r, rows*cols)
	q, err := quant.Quantize(wf, rows, cols)
	if err != nil {
		b.Fatal(err)
	}
	mats := []struct {
		name  string
		m     Matrix
		bytes int
	}{
		{"f32", Matrix{F32: wf}, 4 * rows * cols},
		{"bf16", Matrix{BF16: randBF16(r, rows*cols)}, 2 * rows * cols},
		{"int8", Matrix{Int8: q}, int(q.Bytes())},
	}
	x := randF32(r, n*cols)
	out := make([]float32, n*rows)
	threads := runtime.GOMAXPROCS(0)
	for _, c := range mats {
		c.m.Rows, c.m.Cols = rows, cols
		b.Run(fmt.Sprintf("%s/%s", c.name, ks.name), func(b *testing.B) {
			b.SetBytes(int64(c.bytes))
			for b.Loop() {
				MatMul(out, x, n, &c.m, threads)
			}
			b.ReportMetric(2*float64(n)*rows*cols*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

func BenchmarkGEMV(b *testing.B)    { benchMatMul(b, 1) }
func BenchmarkGEMM512(b *testing.B) { benchMatMul(b, 512) }

// BenchmarkMemoryRead streams a 512 MiB buffer through DotF32 on GOMAXPROCS threads: the
// machine's read bandwidth, the floor a decode step's weight reads are set against.
func BenchmarkMemoryRead(b *testing.B) {
	buf := make([]float32, 128<<20)
	for i := range buf {
		buf[i] = 1
	}
	threads := runtime.GOMAXPROCS(0)
	const chunk = 1 << 20
	b.SetBytes(int64(4 * len(buf)))
	for b.Loop() {
		ParallelFor(threads, len(buf)/chunk, func(i int) {
			c := buf[i*chunk : (i+1)*chunk]
			if DotF32(c, c) != chunk {
				panic("bad sum")
			}
		})
	}
}

// BenchmarkGEMM512RoundX: the bf16 product of BenchmarkGEMM512 with x rounded to bf16 (on
// bf16 dot-product instructions where the CPU has them).
func BenchmarkGEMM512RoundX(b *testing.B) {
	const n, rows, cols = 512, 5632, 2048
	r := rand.New(rand.NewPCG(1, 1))
	w := Matrix{Rows: rows, Cols: cols, BF16: randBF16(r, rows*cols)}
	x := randF32(r, n*cols)
	out := make([]float32, n*rows)
	for b.Loop() {
		MatMulRoundX(out, x, n, &w, runtime.GOMAXPROCS(0))
	}
	b.ReportMetric(2*float64(n)*rows*cols*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}
