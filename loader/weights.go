package loader

import (
	"strconv"
	"strings"
)

// Weights is a model's named tensors in Hugging Face naming ("model.layers.0.self_attn.
// q_proj.weight"), whatever the file format: a safetensors Checkpoint, a GGUF file.
type Weights interface {
	// Names lists every tensor, sorted.
	Names() []string
	// Expect returns the named tensor as float32 after checking it exists
	// (ErrMissingTensor) and has exactly the given shape (ErrShapeMismatch).
	Expect(name string, shape ...int) ([]float32, error)
}

var _ Weights = (*Checkpoint)(nil)

// LayerCount is the number of transformer layers the tensor names describe: one more
// than the highest N of "model.layers.N." (0 when there is none).
func LayerCount(names []string) int {
	n := 0
	for _, name := range names {
		rest, ok := strings.CutPrefix(name, "model.layers.")
		if !ok {
			continue
		}
		num, _, ok := strings.Cut(rest, ".")
		if i, err := strconv.Atoi(num); ok && err == nil && i >= 0 && i < maxSize {
			n = max(n, i+1)
		}
	}
	return n
}
