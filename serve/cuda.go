//go:build cuda

package serve

import (
	"fmt"

	"github.com/lukv/lukv/backend/cuda"
	"github.com/lukv/lukv/kvpool"
	"github.com/lukv/lukv/memplan"
	"github.com/lukv/lukv/model"
)

// CUDABlockTokens is the tokens of one KV head a GPU pool block holds: 16 rows of 128
// bf16 dims are 4 KiB of keys and 4 KiB of values, read as whole cache lines.
const CUDABlockTokens = 16

// LoadCUDA loads the checkpoint in dir onto the GPU backend b, then makes its KV pool in
// device memory: kvBytes bytes, or (kvBytes <= 0) all the device memory left after the
// weights but leave bytes, which the forward pass's activations, the prefill's scratch
// cache and eviction's scores need. The pool's element type is b's (cuda.Options.KVBF16).
// The returned model's backend is the paged one.
func LoadCUDA(dir string, b *cuda.Backend, kvBytes, leave int64) (*model.Model, *cuda.PagedBackend, error) {
	m, err := model.Load(dir, b)
	if err != nil {
		return nil, nil, err
	}
	if kvBytes <= 0 {
		free, _ := b.MemInfo()
		kvBytes = int64(free) - leave
		if kvBytes <= 0 {
			return nil, nil, fmt.Errorf("--kv-memory auto: %s free on the GPU after the weights, less than the %s left for activations (--gpu-leave)", memplan.FormatSize(int64(free)), memplan.FormatSize(leave))
		}
	}
	pool, err := kvpool.ForBudget(kvBytes, CUDABlockTokens, m.Config.HeadDim, b.KVElemBytes())
	if err != nil {
		return nil, nil, fmt.Errorf("--kv-memory: %w", err)
	}
	pb, err := cuda.NewPaged(b, pool, m.Config.HeadDim)
	if err != nil {
		return nil, nil, fmt.Errorf("--kv-memory %s: %w", memplan.FormatSize(kvBytes), err)
	}
	m.Backend = pb
	return m, pb, nil
}
