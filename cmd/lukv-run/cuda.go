//go:build cuda

package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/backend/cuda"
)

// In binaries built with -tags cuda, --device cuda opens GPU 0. Environment:
//
//   - LUKV_CUDA_WEIGHTS picks how matrices are stored: "exact" (default: the
//     checkpoint's own bf16/fp16, never rounded), "bf16" (round everything to bfloat16)
//     or "f32".
//   - LUKV_CUDA_TENSOR_CORES=1 or 0 turns the bf16 tensor-core matmuls of the prefill
//     (cuda.Options.TensorCores, through cuBLAS) on or off. Unset: the command's
//     precision decides (device.go: on for generate and bench, off for eval and
//     profile, whose results then match the float32 CPU path). When cuBLAS cannot be
//     loaded the tiled float32 kernel runs, with a warning.
//   - LUKV_CUDA_KV picks the KV cache's element type (cuda.Options.KVBF16): "bf16"
//     (keys and values rounded to bfloat16 as they are appended: half the memory and
//     half the bytes a decode step's attention reads) or "f32" (exact). Unset: the
//     command's precision decides (bf16 for generate and bench, f32 for eval and
//     profile).
//   - LUKV_CUDA_FUSE=0 launches every decode op as it is called (cuda.Options.Unfused):
//     no grouping of the matmuls that share an input, no RoPE inside the cache append.
//     The results are the same up to float32 rounding; it measures what the fusion saves.
//   - LUKV_CUBLAS names libcublas.so.N or its folder when the usual places lack it.
//   - LUKV_KERNELS names the folder of compiled kernels (default: kernels/build next to
//     the binary or above the working directory).
func init() {
	newCUDABackend = func(prec precision) (backend.Backend, error) {
		opt := cuda.Options{TensorCores: prec.TensorCores, KVBF16: prec.KVBF16}
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
		if p := b.MatMulPath(); opt.TensorCores && strings.Contains(p, "unavailable") {
			fmt.Fprintln(os.Stderr, "lukv-run: warning: prefill matmuls run on the", p)
		}
		return b, nil
	}
}
