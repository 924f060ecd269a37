package vec

import "testing"

// BenchmarkTile runs the tile kernel in use on panels that stay in L1: the arithmetic
// peak a product can approach (one thread).
func BenchmarkTile(b *testing.B) {
	for _, s := range sets {
		b.Run(s.name, func(b *testing.B) { benchTile(b, s) })
	}
}

func benchTile(b *testing.B, ks *kernelSet) {
	const kn = 256
	px := make([]float32, kn*ks.mr)
	pw := make([]float32, kn*ks.nr)
	c := make([]float32, ks.mr*ks.nr)
	for b.Loop() {
		ks.tile(kn, px, pw, c, ks.nr, 1)
	}
	b.ReportMetric(2*kn*float64(ks.mr*ks.nr)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}
