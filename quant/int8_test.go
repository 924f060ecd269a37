package quant

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestQuantizeRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	rows, cols := 7, 96
	w := make([]float32, rows*cols)
	for i := range w {
		w[i] = float32(rng.NormFloat64()) * float32(1+i%5)
	}
	w[5] = 0
	m, err := Quantize(w, rows, cols)
	if err != nil {
		t.Fatal(err)
	}
	if m.Bytes() != int64(rows*cols+4*rows*cols/GroupSize) {
		t.Fatalf("Bytes %d", m.Bytes())
	}
	d := m.Dequantize()
	for i := range w {
		s := m.Scales[i/GroupSize]
		// Rounding to the nearest step: the error is at most half a step.
		if e := math.Abs(float64(d[i] - w[i])); e > float64(s)/2*1.0001 {
			t.Fatalf("weight %d: %v became %v (step %v)", i, w[i], d[i], s)
		}
	}
	// The largest magnitude of each group is represented exactly as ±127 steps.
	for g := range m.Scales {
		hit := false
		for _, q := range m.Q[g*GroupSize : (g+1)*GroupSize] {
			hit = hit || q == 127 || q == -127
		}
		if !hit {
			t.Fatalf("group %d: no value at ±127", g)
		}
	}
}

func TestQuantizeZeroGroup(t *testing.T) {
	m, err := Quantize(make([]float32, 64), 1, 64)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range m.Dequantize() {
		if v != 0 {
			t.Fatalf("value %d = %v", i, v)
		}
	}
}

func TestQuantizeRejects(t *testing.T) {
	for name, c := range map[string]struct {
		w          []float32
		rows, cols int
	}{
		"cols not multiple": {make([]float32, 40), 1, 40},
		"length mismatch":   {make([]float32, 10), 1, 32},
		"zero rows":         {nil, 0, 32},
		"nan":               {append(make([]float32, 31), float32(math.NaN())), 1, 32},
	} {
		if _, err := Quantize(c.w, c.rows, c.cols); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
