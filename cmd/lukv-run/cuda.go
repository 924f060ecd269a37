//go:build cuda

package main

import (
	"fmt"
	"os"

	lrt "github.com/lukv/lukv/runtime"
	"github.com/lukv/lukv/runtime/cuda"
)

// In binaries built with -tags cuda, --device cuda opens GPU 0. LUKV_CUDA_WEIGHTS picks
// how matrices are stored: "exact" (default: the checkpoint's own bf16/fp16, never
// rounded), "bf16" (round everything to bfloat16) or "f32". LUKV_KERNELS names the
// folder of compiled kernels (default: kernels/build next to the binary or above the
// working directory).
func init() {
	newCUDABackend = func() (lrt.Backend, error) {
		opt := cuda.Options{}
		switch w := os.Getenv("LUKV_CUDA_WEIGHTS"); w {
		case "", "exact":
			opt.Weights = cuda.WeightsExact
		case "bf16":
			opt.Weights = cuda.WeightsBF16
		case "f32":
			opt.Weights = cuda.WeightsF32
		default:
			return nil, fmt.Errorf("LUKV_CUDA_WEIGHTS=%q: want exact, bf16 or f32", w)
		}
		b, err := cuda.New(opt)
		if err != nil {
			return nil, err
		}
		return b, nil
	}
}
