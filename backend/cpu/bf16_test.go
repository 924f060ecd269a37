package cpu

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/lukv/lukv/loader"
)

// A bf16-kept weight gives bit-identical MatMul, Embed and Read results to the same
// values widened to float32, and holds two bytes per value.
func TestBF16WeightsMatchWidened(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	const rows, cols, n = 77, 48, 5 // rows not a multiple of MatMul's block of 32
	w16 := make([]uint16, rows*cols)
	w32 := make([]float32, rows*cols)
	for i := range w16 {
		w16[i] = loader.Float32ToBF16(float32(r.NormFloat64()))
		w32[i] = loader.BF16ToFloat32(w16[i])
	}
	x := make([]float32, n*cols)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	b := &Backend{KeepBF16: true, Threads: 3}
	if !b.KeepsBF16() || New().KeepsBF16() {
		t.Fatal("KeepsBF16 does not follow the option")
	}
	wb, err := b.WeightBF16(w16, rows, cols)
	if err != nil {
		t.Fatal(err)
	}
	wf, _ := b.Weight(w32, rows, cols)
	if wb.(*Mat).DType() != "bfloat16" || wf.(*Mat).DType() != "float32" || wb.(*Mat).Data != nil {
		t.Errorf("dtypes %s, %s; bf16 Data kept: %v", wb.(*Mat).DType(), wf.(*Mat).DType(), wb.(*Mat).Data != nil)
	}
	xm := &Mat{R: n, C: cols, Data: x}
	got, want := b.Alloc(n, rows), b.Alloc(n, rows)
	b.MatMul(got, xm, wb)
	b.MatMul(want, xm, wf)
	if !slices.Equal(b.Read(got), b.Read(want)) {
		t.Error("MatMul with bf16 weights differs from the widened weights")
	}
	ids := []int{0, 76, 3, 3}
	ge, we := b.Alloc(len(ids), cols), b.Alloc(len(ids), cols)
	b.Embed(ge, wb, ids)
	b.Embed(we, wf, ids)
	if !slices.Equal(b.Read(ge), b.Read(we)) {
		t.Error("Embed from a bf16 table differs")
	}
	if !slices.Equal(b.Read(wb), w32) {
		t.Error("Read of a bf16 weight is not its widened values")
	}
	if _, err := b.WeightBF16(w16[:10], rows, cols); err == nil {
		t.Error("a short bf16 weight was accepted")
	}
}
