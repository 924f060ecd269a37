package backend

// BF16Weights is implemented by backends that can keep bfloat16 weight matrices as
// bfloat16 in memory (half the bytes of float32), converting them inside their kernels,
// instead of receiving them widened to float32 through Weight.
type BF16Weights interface {
	// KeepsBF16 says whether the backend wants bf16 matrices as bf16 (it may be an option).
	KeepsBF16() bool
	// WeightBF16 takes a [rows, cols] matrix of bfloat16 bit patterns, row-major.
	WeightBF16(data []uint16, rows, cols int) (Tensor, error)
}
