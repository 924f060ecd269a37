// Package golden reads the outside-oracle goldens under tests/testdata (written by
// scripts/make_goldens.py from Hugging Face transformers): golden.json and the logits in
// golden.safetensors. The CPU end-to-end tests and the CUDA backend's tests share it.
package golden

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/lukv/lukv/loader"
)

// Golden is a golden.json.
type Golden struct {
	Arch           string `json:"arch"`
	Prompt         string `json:"prompt"`
	PromptIDs      []int  `json:"prompt_ids"`
	GreedyIDs      []int  `json:"greedy_ids"`
	LogitPositions []int  `json:"logit_positions"`
	StoredDType    string `json:"stored_dtype"`
}

// Read loads dir/golden.json and dir/golden.safetensors. Logits are [len(LogitPositions),
// vocab] row-major: row r holds transformers' logits at prompt position LogitPositions[r].
func Read(dir string) (g *Golden, logits []float32, vocab int, err error) {
	data, err := os.ReadFile(filepath.Join(dir, "golden.json"))
	if err != nil {
		return nil, nil, 0, err
	}
	g = &Golden{}
	if err := json.Unmarshal(data, g); err != nil {
		return nil, nil, 0, fmt.Errorf("%s: %w", filepath.Join(dir, "golden.json"), err)
	}
	f, err := loader.OpenSafetensors(filepath.Join(dir, "golden.safetensors"))
	if err != nil {
		return nil, nil, 0, err
	}
	defer f.Close()
	info, ok := f.Info("logits")
	if !ok || len(info.Shape) != 2 || info.Shape[0] != len(g.LogitPositions) {
		return nil, nil, 0, fmt.Errorf("%s: want a logits tensor [%d, vocab]", f.Path(), len(g.LogitPositions))
	}
	logits, err = f.Float32("logits")
	if err != nil {
		return nil, nil, 0, err
	}
	return g, logits, info.Shape[1], nil
}
