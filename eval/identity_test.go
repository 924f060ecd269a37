package eval

import (
	"os"
	"path/filepath"
	"testing"
)

// TestFingerprintModel: the fingerprint changes with the config, the tokenizer, and the
// first or last bytes of a weights file (header and data end), and not with other files.
func TestFingerprintModel(t *testing.T) {
	dir := t.TempDir()
	weights := make([]byte, 3<<20)
	for i := range weights {
		weights[i] = byte(i * 7)
	}
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("config.json", []byte(`{"a":1}`))
	write("tokenizer.json", []byte(`{}`))
	write("model.safetensors", weights)
	base, err := FingerprintModel(dir)
	if err != nil {
		t.Fatal(err)
	}
	write("README.md", []byte("notes"))
	if fp, _ := FingerprintModel(dir); fp != base {
		t.Error("a README changed the fingerprint")
	}
	for _, c := range []struct {
		name string
		edit func()
		undo func()
	}{
		{"config", func() { write("config.json", []byte(`{"a":2}`)) }, func() { write("config.json", []byte(`{"a":1}`)) }},
		{"tokenizer", func() { write("tokenizer.json", []byte(`{ }`)) }, func() { write("tokenizer.json", []byte(`{}`)) }},
		{"weights header", func() { weights[10]++; write("model.safetensors", weights) }, func() { weights[10]--; write("model.safetensors", weights) }},
		{"weights end", func() { weights[len(weights)-1]++; write("model.safetensors", weights) }, func() { weights[len(weights)-1]--; write("model.safetensors", weights) }},
		{"another shard", func() { write("model-2.safetensors", []byte("x")) }, func() { os.Remove(filepath.Join(dir, "model-2.safetensors")) }},
	} {
		c.edit()
		if fp, err := FingerprintModel(dir); err != nil || fp == base {
			t.Errorf("%s: fingerprint unchanged (%v)", c.name, err)
		}
		c.undo()
		if fp, _ := FingerprintModel(dir); fp != base {
			t.Errorf("%s: undoing it did not restore the fingerprint", c.name)
		}
	}
	if _, err := FingerprintModel(t.TempDir()); err == nil {
		t.Error("an empty folder has a fingerprint")
	}
}
