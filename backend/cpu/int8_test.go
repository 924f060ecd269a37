package cpu

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/lukv/lukv/quant"
)

// An int8-kept weight computes what its dequantized float32 matrix computes (up to
// float32 rounding: the kernels apply the scale per group), for Embed and Read exactly.
func TestInt8WeightsMatchDequantized(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	const rows, cols = 45, 96
	w := make([]float32, rows*cols)
	for i := range w {
		w[i] = float32(r.NormFloat64())
	}
	q, err := quant.Quantize(w, rows, cols)
	if err != nil {
		t.Fatal(err)
	}
	b := &Backend{Threads: 2}
	wq, err := b.WeightInt8(q)
	if err != nil {
		t.Fatal(err)
	}
	deq := q.Dequantize()
	wf, _ := b.Weight(deq, rows, cols)
	if d := wq.(*Mat).DType(); d != "int8" || wq.(*Mat).Data != nil {
		t.Fatalf("int8 weight kept as %s (Data kept: %v)", d, wq.(*Mat).Data != nil)
	}
	for _, n := range []int{1, 2, 9} {
		x := b.Alloc(n, cols)
		for i := range x.(*Mat).Data {
			x.(*Mat).Data[i] = float32(r.NormFloat64())
		}
		got, want := b.Alloc(n, rows), b.Alloc(n, rows)
		b.MatMul(got, x, wq)
		b.MatMul(want, x, wf)
		g, wnt := b.Read(got), b.Read(want)
		for i := range g {
			if math.Abs(float64(g[i]-wnt[i])) > 1e-4*(1+math.Abs(float64(wnt[i]))) {
				t.Fatalf("n=%d: int8 MatMul %v, dequantized %v at %d", n, g[i], wnt[i], i)
			}
		}
	}
	if !slices.Equal(b.Read(wq), deq) {
		t.Error("Read of an int8 weight is not its dequantized values")
	}
	e := b.Alloc(2, cols)
	b.Embed(e, wq, []int{44, 3})
	if !slices.Equal(b.Read(e), append(deq[44*cols:45*cols:45*cols], deq[3*cols:4*cols]...)) {
		t.Error("Embed from an int8 table differs from the dequantized rows")
	}
	bad := *q
	bad.Scales = bad.Scales[1:]
	for _, m := range []*quant.Int8{nil, &bad} {
		if _, err := b.WeightInt8(m); err == nil {
			t.Errorf("a malformed int8 weight was accepted: %v", m != nil)
		}
	}
}
