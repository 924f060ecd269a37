package cpu

import (
	"fmt"
	"sync"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/loader"
)

// bf16 weights: a Mat whose W16 is set holds a weight matrix as bfloat16 bit patterns
// (Data is nil). MatMul widens one block of its rows at a time into a scratch buffer and
// runs the float32 product on it, so results are bit-identical to the widened matrix's
// while the matrix itself stays at two bytes per value.

var _ backend.BF16Weights = (*Backend)(nil)

// KeepsBF16 reports the KeepBF16 option.
func (b *Backend) KeepsBF16() bool { return b.KeepBF16 }

// WeightBF16 keeps a bf16 matrix as bf16.
func (b *Backend) WeightBF16(data []uint16, rows, cols int) (backend.Tensor, error) {
	if len(data) != rows*cols {
		return nil, fmt.Errorf("cpu: bf16 weight of %d values does not fill [%d, %d]", len(data), rows, cols)
	}
	return &Mat{R: rows, C: cols, W16: data}, nil
}

// DType names the element type the matrix is stored in: "bfloat16" or "float32".
func (m *Mat) DType() string {
	if m.W16 != nil {
		return "bfloat16"
	}
	return "float32"
}

// scratch holds the float32 buffers MatMul widens blocks of bf16 rows into.
var scratch = sync.Pool{New: func() any { return new([]float32) }}

// widenRows writes rows [lo, hi) of a bf16 matrix as float32 into dst.
func (m *Mat) widenRows(dst []float32, lo, hi int) []float32 {
	src := m.W16[lo*m.C : hi*m.C]
	dst = dst[:len(src)]
	for i, h := range src {
		dst[i] = loader.BF16ToFloat32(h)
	}
	return dst
}
