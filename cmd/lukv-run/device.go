package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/lukv/lukv"
	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/backend/cpu"
	"github.com/lukv/lukv/loader"
	"github.com/lukv/lukv/model"
	"github.com/lukv/lukv/models"
	"github.com/lukv/lukv/tokenizer"
)

// precision is how a command trades exactness for speed on --device cuda (the CPU
// backend computes in float32 whatever it is told). Each command picks one; the
// environment can override it (see withEnv).
type precision struct {
	// TensorCores runs the prefill matmuls on bf16 tensor cores (cuda.Options.TensorCores).
	TensorCores bool
	// KVBF16 stores the KV cache in bf16 (cuda.Options.KVBF16).
	KVBF16 bool
}

var (
	// fastPrecision is generate's and bench's: speed.
	fastPrecision = precision{TensorCores: true, KVBF16: true}
	// exactPrecision is eval's and profile's: their numbers then match the float32 CPU
	// reference.
	exactPrecision = precision{}
)

// withEnv applies LUKV_CUDA_TENSOR_CORES (1/on/true or 0/off/false) and LUKV_CUDA_KV
// (bf16 or f32) where set.
func (p precision) withEnv() (precision, error) {
	switch v := os.Getenv("LUKV_CUDA_TENSOR_CORES"); v {
	case "":
	case "1", "on", "true":
		p.TensorCores = true
	case "0", "off", "false":
		p.TensorCores = false
	default:
		return p, fmt.Errorf("LUKV_CUDA_TENSOR_CORES=%q: want 1 or 0", v)
	}
	switch v := os.Getenv("LUKV_CUDA_KV"); v {
	case "":
	case "bf16":
		p.KVBF16 = true
	case "f32":
		p.KVBF16 = false
	default:
		return p, fmt.Errorf("LUKV_CUDA_KV=%q: want bf16 or f32", v)
	}
	return p, nil
}

// newCUDABackend is set by cuda.go in binaries built with -tags cuda.
var newCUDABackend func(precision) (backend.Backend, error)

// backendFor returns the backend a --device flag names, at precision prec (cuda only),
// for weights held as weights (the CPU keeps bf16 matrices as bf16 unless told f32).
func backendFor(device string, threads int, prec precision, weights loader.WeightFormat) (backend.Backend, error) {
	switch device {
	case "cpu":
		return &cpu.Backend{Threads: threads, WidenBF16: weights == loader.WeightsF32}, nil
	case "cuda":
		if newCUDABackend == nil {
			return nil, errors.New("--device cuda: this lukv-run was built without GPU support; build it with `go build -tags cuda ./cmd/lukv-run` on a machine with the CUDA toolkit (see README)")
		}
		prec, err := prec.withEnv()
		if err != nil {
			return nil, err
		}
		return newCUDABackend(prec)
	default:
		return nil, fmt.Errorf("--device %q: want cpu or cuda", device)
	}
}

// checkThreads rejects a negative --threads.
func checkThreads(threads int) error {
	if threads < 0 {
		return fmt.Errorf("--threads %d: want >= 0 (0: all cores)", threads)
	}
	return nil
}

// modelDir resolves --model: a folder, a GGUF file, or the embedded default when empty.
func modelDir(flagValue string) (string, error) {
	if flagValue == "" {
		return models.DefaultDir()
	}
	st, err := os.Stat(flagValue)
	if err != nil {
		return "", fmt.Errorf("--model: %w", err)
	}
	if !st.IsDir() && !loader.IsGGUF(flagValue) {
		return "", fmt.Errorf("--model %s: not a folder and not a GGUF file (want a Hugging Face checkpoint folder with config.json, *.safetensors and tokenizer.json, or a .gguf file)", flagValue)
	}
	return flagValue, nil
}

// openModel resolves --model, makes the --device backend at precision prec and loads the
// model (its matrices held as weights) and its tokenizer onto it. It returns the model's
// folder too.
func openModel(modelFlag, device string, threads int, prec precision, weights loader.WeightFormat) (string, *model.Model, *tokenizer.Tokenizer, error) {
	b, err := backendFor(device, threads, prec, weights)
	if err != nil {
		return "", nil, nil, err
	}
	dir, err := modelDir(modelFlag)
	if err != nil {
		return "", nil, nil, err
	}
	g, err := lukv.LoadWith(dir, b, model.LoadOptions{Weights: weights})
	if err != nil {
		return "", nil, nil, err
	}
	return dir, g.Model, g.Tokenizer, nil
}
