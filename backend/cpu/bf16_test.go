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
	const rows, cols, n = 77, 48, 13 // rows not a multiple of any tile
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
	b := &Backend{Threads: 3}
	if !b.KeepsBF16() || (&Backend{WidenBF16: true}).KeepsBF16() {
		t.Fatal("KeepsBF16 does not follow the WidenBF16 option")
	}
	wb, err := b.WeightBF16(w16, rows, cols)
	if err != nil {
		t.Fatal(err)
	}
	wf, _ := b.Weight(w32, rows, cols)
	if wb.(*Mat).DType() != "bfloat16" || wf.(*Mat).DType() != "float32" || wb.(*Mat).Data != nil {
		t.Errorf("dtypes %s, %s; bf16 Data kept: %v", wb.(*Mat).DType(), wf.(*Mat).DType(), wb.(*Mat).Data != nil)
	}
	for _, xr := range []int{1, n} { // the matrix-vector and the blocked product
		xm := &Mat{R: xr, C: cols, Data: x[:xr*cols]}
		got, want := b.Alloc(xr, rows), b.Alloc(xr, rows)
		b.MatMul(got, xm, wb)
		b.MatMul(want, xm, wf)
		if !slices.Equal(b.Read(got), b.Read(want)) {
			t.Errorf("MatMul of %d rows with bf16 weights differs from the widened weights", xr)
		}
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
