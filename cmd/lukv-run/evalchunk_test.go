package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lukv/lukv/eval"
)

// TestEvalChunkFlagsRejectBadInput: eval's --chunk, --kv-budget and --max-kv-memory are
// checked before the model is loaded or the --out folder made.
func TestEvalChunkFlagsRejectBadInput(t *testing.T) {
	for _, c := range []struct {
		model string
		flags []string
		want  string
	}{
		{"/no/such/model", []string{"--chunk", "-1"}, "--chunk -1: want a positive number of tokens"},
		{"/no/such/model", []string{"--methods", "full", "--chunk", "64"}, "--chunk evicts during the prefill"},
		{"/no/such/model", []string{"--kv-budget", "0"}, "--kv-budget 0: want a number of tokens per head >= 1"},
		{"/no/such/model", []string{"--kv-budget", "10", "--max-kv-memory", "1GiB"}, "give --kv-budget or --max-kv-memory, not both"},
		{"/no/such/model", []string{"--kv-budget", "10", "--lengths", "512,1024"}, "give one --lengths value, not 2"},
		{"/no/such/model", []string{"--kv-budget", "10", "--lengths", "512"}, "/no/such/model"},
		{"", []string{"--kv-budget", "100", "--lengths", "512", "--compression", "0.5"}, "give --kv-budget or --compression, not both"},
		{"", []string{"--kv-budget", "100000000", "--lengths", "512"}, "above the model's context"},
		{"", []string{"--kv-budget", "2", "--lengths", "512"}, "below what every head keeps anyway"},
		{"", []string{"--max-kv-memory", "lots", "--lengths", "512"}, "--max-kv-memory"},
		{"", []string{"--max-kv-memory", "1KiB", "--lengths", "512"}, "--max-kv-memory"},
	} {
		out := filepath.Join(t.TempDir(), "out")
		args := append([]string{"eval", "ruler", "--out", out, "--methods", "snapkv", "--samples", "1"}, c.flags...)
		if c.model != "" {
			args = append(args, "--model", c.model)
		}
		_, _, err := runCLI(t, args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want it to contain %q", c.flags, err, c.want)
		}
		if _, serr := os.Stat(out); !errors.Is(serr, os.ErrNotExist) {
			t.Errorf("%v: --out folder created (%v)", c.flags, serr)
		}
	}
}

// TestEvalChunked: eval --chunk runs chunked eviction end to end on the default model,
// records the chunk in run.json, and --kv-budget sets the compression from the budget
// (128 tokens of a 512-token sample: 0.75).
func TestEvalChunked(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	_, _, err := runCLI(t, "eval", "ruler", "--out", out, "--methods", "full,snapkv", "--samples", "1", "--lengths", "512",
		"--tasks", "niah_single_1", "--chunk", "128", "--kv-budget", "128")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(out, "run.json"))
	if err != nil {
		t.Fatal(err)
	}
	var id eval.RunIdentity
	if err := json.Unmarshal(raw, &id); err != nil {
		t.Fatalf("run.json: %v", err)
	}
	if id.Chunk != 128 {
		t.Errorf("run.json records chunk %d, want 128", id.Chunk)
	}
	cells, err := eval.LoadCells(filepath.Join(out, "results.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	ratios := map[string]float64{}
	for _, c := range cells {
		ratios[c.Method] = c.Ratio
	}
	if len(cells) != 2 || ratios["snapkv"] != 0.75 || ratios["full"] != 0 {
		t.Errorf("cells %+v: want full and snapkv at 0.75", cells)
	}
}
