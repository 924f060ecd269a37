package main

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// convert writes the default model as GGUF, and generate runs it with the same tokens.
func TestConvertAndGenerateGGUF(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	out, _, err := runCLI(t, "convert", "--to", "gguf", "--type", "bf16", "--out", path)
	if err != nil || !strings.Contains(out, "wrote "+path) {
		t.Fatalf("convert: %q, %v", out, err)
	}
	tokens := func(args ...string) []int {
		t.Helper()
		out, _, err := runCLI(t, append([]string{"generate", "--prompt", "The lighthouse keeper counted", "--max-new-tokens", "6", "--json"}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		var res struct{ Tokens []int }
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatal(err)
		}
		return res.Tokens
	}
	if want, got := tokens(), tokens("--model", path); len(want) == 0 || !slices.Equal(got, want) {
		t.Errorf("GGUF model's tokens %v, the default model's %v", got, want)
	}
	for _, c := range []struct {
		args []string
		says string
	}{
		{[]string{"--to", "onnx", "--out", path}, `--to "onnx"`},
		{[]string{"--type", "q5_k", "--out", path}, `"q5_k"`},
		{[]string{"--type", "f16"}, "--out"},
		{[]string{"--model", t.TempDir(), "--out", path}, "tokenizer.json"},
	} {
		if _, _, err := runCLI(t, append([]string{"convert"}, c.args...)...); err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("convert %v: error %v, want one naming %s", c.args, err, c.says)
		}
	}
}
