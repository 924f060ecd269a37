//go:build cuda

package main

import (
	"fmt"

	"github.com/lukv/lukv/backend/cuda"
	"github.com/lukv/lukv/kvpool"
	"github.com/lukv/lukv/model"
	"github.com/lukv/lukv/serve"
)

// serve --device cuda: generate's precision (tensor-core prefill, bf16 KV pool; the
// LUKV_CUDA_* variables override it, cuda.go).
func init() {
	loadServeCUDA = func(dir string, kvBytes, leave int64) (*model.Model, *kvpool.Pool, func(), error) {
		prec, err := fastPrecision.withEnv()
		if err != nil {
			return nil, nil, nil, err
		}
		b, err := newCUDABackend(prec)
		if err != nil {
			return nil, nil, nil, err
		}
		cb, ok := b.(*cuda.Backend)
		if !ok {
			return nil, nil, nil, fmt.Errorf("--device cuda: backend of type %T", b)
		}
		m, pb, err := serve.LoadCUDA(dir, cb, kvBytes, leave)
		if err != nil {
			cb.Close()
			return nil, nil, nil, err
		}
		return m, pb.Pool(), func() { pb.Close() }, nil
	}
}
