// Package quant holds lukv's int8 weight format: symmetric 8-bit integers with one float32
// scale per group of GroupSize consecutive weights along a row. Both backends read this one
// layout (the CPU's vector dot products and the GPU's matrix-vector kernel), so it is chosen
// for them: the int8 values of a row are contiguous (16- and 32-byte loads), and the scales
// sit in their own array, not interleaved as in GGUF's Q8_0 blocks (34-byte blocks defeat
// aligned vector loads on the GPU).
package quant

import (
	"fmt"
	"math"
)

// GroupSize is the number of consecutive weights along a row that share one scale. 32
// matches a 256-bit AVX2 register of int8 and GGUF's Q8_0 group, so quality is comparable
// with llama.cpp's Q8_0.
const GroupSize = 32

// Int8 is a [Rows, Cols] row-major matrix: weight (r, c) is Q[r*Cols+c] * Scales[r*Cols/GroupSize + c/GroupSize].
type Int8 struct {
	Rows, Cols int
	Q          []int8
	Scales     []float32
}

// Bytes is the memory the matrix takes: one byte per weight plus its scales.
func (m *Int8) Bytes() int64 { return int64(len(m.Q)) + 4*int64(len(m.Scales)) }

// Quantize converts a [rows, cols] float32 matrix. cols must be a multiple of GroupSize
// (every Llama-family projection is); each group's scale is its largest magnitude / 127,
// and values round to the nearest integer (ties away from zero).
func Quantize(w []float32, rows, cols int) (*Int8, error) {
	if rows <= 0 || cols <= 0 || len(w) != rows*cols {
		return nil, fmt.Errorf("quant: matrix [%d, %d] with %d values", rows, cols, len(w))
	}
	if cols%GroupSize != 0 {
		return nil, fmt.Errorf("quant: int8 needs a row length divisible by %d, got %d", GroupSize, cols)
	}
	m := &Int8{Rows: rows, Cols: cols, Q: make([]int8, len(w)), Scales: make([]float32, len(w)/GroupSize)}
	for g := range m.Scales {
		grp := w[g*GroupSize : (g+1)*GroupSize]
		amax := float32(0)
		for _, x := range grp {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				return nil, fmt.Errorf("quant: row %d holds %v", g*GroupSize/cols, x)
			}
			amax = max(amax, float32(math.Abs(float64(x))))
		}
		if amax == 0 {
			continue // scale 0, values 0
		}
		s := amax / 127
		m.Scales[g] = s
		q := m.Q[g*GroupSize : (g+1)*GroupSize]
		for i, x := range grp {
			v := math.Round(float64(x / s))
			q[i] = int8(max(-127, min(127, v)))
		}
	}
	return m, nil
}

// Dequantize returns the float32 matrix the int8 values stand for (the reference that
// kernels are tested against).
func (m *Int8) Dequantize() []float32 {
	out := make([]float32, len(m.Q))
	for i, q := range m.Q {
		out[i] = float32(q) * m.Scales[i/GroupSize]
	}
	return out
}
