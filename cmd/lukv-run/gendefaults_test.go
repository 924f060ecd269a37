package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// generation_config.json's defaults apply to the flags the user leaves unset; a flag wins.
func TestGenerateUsesGenerationConfig(t *testing.T) {
	src, err := filepath.Abs(filepath.Join("..", "..", "tests", "testdata", "models", "llama3"))
	if err != nil {
		t.Fatal(err)
	}
	var golden struct {
		Prompt    string `json:"prompt"`
		GreedyIDs []int  `json:"greedy_ids"`
	}
	data, err := os.ReadFile(filepath.Join(src, "golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &golden); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, f := range []string{"config.json", "model.safetensors", "tokenizer.json"} {
		if err := os.Symlink(filepath.Join(src, f), filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	tokens := func(genConfig string, flags ...string) []int {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "generation_config.json"), []byte(genConfig), 0o644); err != nil {
			t.Fatal(err)
		}
		out, _, err := runCLI(t, append([]string{"generate", "--model", dir, "--json", "--prompt", golden.Prompt}, flags...)...)
		if err != nil {
			t.Fatal(err)
		}
		var res struct{ Tokens []int }
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatal(err)
		}
		return res.Tokens
	}
	if got := tokens(`{"max_new_tokens": 3}`); !slices.Equal(got, golden.GreedyIDs[:3]) {
		t.Errorf("max_new_tokens 3, greedy: %v, want %v", got, golden.GreedyIDs[:3])
	}
	if got := tokens(`{"max_new_tokens": 3}`, "--max-new-tokens", "5"); !slices.Equal(got, golden.GreedyIDs[:5]) {
		t.Errorf("--max-new-tokens 5 over max_new_tokens 3: %v, want %v", got, golden.GreedyIDs[:5])
	}
	// Sampling at a high temperature leaves the greedy path; --temperature 0 returns to it.
	hot := `{"do_sample": true, "temperature": 100.0, "max_new_tokens": 8}`
	if got := tokens(hot, "--seed", "3"); slices.Equal(got, golden.GreedyIDs[:8]) {
		t.Errorf("do_sample with temperature 100 gave the greedy tokens %v", got)
	}
	if got := tokens(hot, "--temperature", "0"); !slices.Equal(got, golden.GreedyIDs[:8]) {
		t.Errorf("--temperature 0 over do_sample: %v, want greedy %v", got, golden.GreedyIDs[:8])
	}
}
