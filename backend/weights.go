package backend

import "github.com/lukv/lukv/quant"

// BF16Weights is implemented by backends that can keep bfloat16 weight matrices as
// bfloat16 in memory (half the bytes of float32), converting them inside their kernels,
// instead of receiving them widened to float32 through Weight.
type BF16Weights interface {
	// KeepsBF16 says whether the backend wants bf16 matrices as bf16 (it may be an option).
	KeepsBF16() bool
	// WeightBF16 takes a [rows, cols] matrix of bfloat16 bit patterns, row-major.
	WeightBF16(data []uint16, rows, cols int) (Tensor, error)
}

// Int8Weights is implemented by backends that keep int8 weight matrices (package quant's
// layout: int8 values, one float32 scale per quant.GroupSize weights of a row) as int8,
// dequantizing inside their matrix kernels. MatMul accepts the returned tensor as its
// weight argument like any other.
type Int8Weights interface {
	WeightInt8(m *quant.Int8) (Tensor, error)
}
