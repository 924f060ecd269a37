package cpu

import (
	"fmt"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/loader"
	"github.com/lukv/lukv/quant"
)

// bf16 weights: a Mat whose W16 is set holds a weight matrix as bfloat16 bit patterns
// (Data is nil). Package vec's kernels widen them as they go (a 16-bit shift) and sum in
// the same order as for float32 weights, so results are bit-identical to the widened
// matrix's while the matrix itself stays at two bytes per value.

var _ backend.BF16Weights = (*Backend)(nil)

// KeepsBF16 reports whether bf16 matrices stay bf16 (unless the WidenBF16 option is set).
func (b *Backend) KeepsBF16() bool { return !b.WidenBF16 }

// WeightBF16 keeps a bf16 matrix as bf16.
func (b *Backend) WeightBF16(data []uint16, rows, cols int) (backend.Tensor, error) {
	if len(data) != rows*cols {
		return nil, fmt.Errorf("cpu: bf16 weight of %d values does not fill [%d, %d]", len(data), rows, cols)
	}
	return &Mat{R: rows, C: cols, W16: data}, nil
}

// DType names the element type the matrix is stored in: "bfloat16", "int8" or "float32".
func (m *Mat) DType() string {
	switch {
	case m.W16 != nil:
		return "bfloat16"
	case m.Q8 != nil:
		return "int8"
	}
	return "float32"
}

// widenRows writes rows [lo, hi) of a bf16 or int8 matrix as float32 into dst.
func (m *Mat) widenRows(dst []float32, lo, hi int) []float32 {
	dst = dst[:(hi-lo)*m.C]
	if m.Q8 != nil {
		for i := range dst {
			j := lo*m.C + i
			dst[i] = float32(m.Q8.Q[j]) * m.Q8.Scales[j/quant.GroupSize]
		}
		return dst
	}
	for i, h := range m.W16[lo*m.C : hi*m.C] {
		dst[i] = loader.BF16ToFloat32(h)
	}
	return dst
}
