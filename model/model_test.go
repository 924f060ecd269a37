package model

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/backend/cpu"
)

// oomBackend is a CPU backend whose allocations fail once a budget is spent, as a full
// GPU's do.
type oomBackend struct {
	*cpu.Backend
	left int
}

func (b *oomBackend) Alloc(rows, cols int) backend.Tensor {
	if b.left -= rows * cols; b.left < 0 {
		panic(fmt.Errorf("alloc [%d, %d]: %w", rows, cols, backend.ErrOutOfMemory))
	}
	return b.Backend.Alloc(rows, cols)
}

func TestForwardOutOfMemoryIsAnError(t *testing.T) {
	b := &oomBackend{Backend: cpu.New(), left: 1 << 30}
	m, err := Load(filepath.Join("..", "tests", "testdata", "models", "llama3"), b)
	if err != nil {
		t.Fatal(err)
	}
	b.left = 1000 // less than the activations of a 40-token forward pass
	_, err = m.Forward(context.Background(), make([]int, 40), 0, m.NewCache(40), ForwardOptions{})
	if !errors.Is(err, backend.ErrOutOfMemory) {
		t.Fatalf("error %v, want one wrapping ErrOutOfMemory", err)
	}
	b.left = 1 << 30
	if _, err := m.Forward(context.Background(), make([]int, 40), 0, m.NewCache(40), ForwardOptions{}); err != nil {
		t.Fatalf("after memory is back: %v", err)
	}
}
