package cpu

import (
	"fmt"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/quant"
)

// int8 weights: a Mat whose Q8 is set holds a weight matrix in package quant's layout
// (Data is nil); package vec's kernels dequantize it as they go.

var _ backend.Int8Weights = (*Backend)(nil)

// WeightInt8 keeps an int8 matrix as int8.
func (b *Backend) WeightInt8(m *quant.Int8) (backend.Tensor, error) {
	if m == nil || m.Rows <= 0 || m.Cols <= 0 || m.Cols%quant.GroupSize != 0 ||
		len(m.Q) != m.Rows*m.Cols || len(m.Scales) != len(m.Q)/quant.GroupSize {
		return nil, fmt.Errorf("cpu: int8 weight is not a [rows, cols] matrix with one scale per %d values", quant.GroupSize)
	}
	return &Mat{R: m.Rows, C: m.Cols, Q8: m}, nil
}
