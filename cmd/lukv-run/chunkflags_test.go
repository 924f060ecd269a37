package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// TestGenerateChunkFlags: --chunk, --kv-budget and --max-kv-memory run the context chunk
// by chunk within the budget, and bad values stop before any work with the flag named.
func TestGenerateChunkFlags(t *testing.T) {
	prompt := strings.Repeat("The grass is green. The sky is blue. ", 12)
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"generate", "--prompt", prompt, "--max-new-tokens", "2", "--method", "knorm", "--kv-budget", "20", "--chunk", "16", "--json"}, &out, &errb)
	if err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	var res struct {
		PromptTokens int `json:"prompt_tokens"`
		Chunks       []struct {
			Tokens int `json:"tokens"`
		} `json:"chunks"`
		KVLivePrefill    int64 `json:"kv_live_bytes_prefill"`
		KVLiveCompressed int64 `json:"kv_live_bytes_compressed"`
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatal(err)
	}
	if want := (res.PromptTokens + 15) / 16; len(res.Chunks) != want {
		t.Errorf("%d chunks for %d tokens, want %d", len(res.Chunks), res.PromptTokens, want)
	}
	// lukv-tiny: 8 layers x 4 KV heads x 2 x 32 x 4 bytes = 8 KiB per token in every head.
	if max := int64(20+16) * 8192; res.KVLivePrefill > max {
		t.Errorf("peak live KV %d bytes > budget 20 + chunk 16 tokens = %d", res.KVLivePrefill, max)
	}
	if got := res.KVLiveCompressed / 8192; got > 21 || got < 19 {
		t.Errorf("%d tokens per head after the context, want about the budget of 20", got)
	}
	for _, c := range []struct{ args, want string }{
		{"--chunk 0", "--chunk 0"},
		{"--chunk -5", "--chunk -5"},
		{"--method knorm --kv-budget 3", "--kv-budget"},
		{"--method knorm --kv-budget 100000", "above the model's context"},
		{"--kv-budget 30", "needs an eviction --method"},
		{"--method knorm --max-kv-memory 2parsecs", "--max-kv-memory"},
		{"--method knorm --max-kv-memory 64KiB", "raise it or lower --chunk"},
		{"--method knorm --kv-budget 30 --compression 0.5", "not both"},
		{"--method knorm --kv-budget 30 --compress-at question", "--compress-at context"},
	} {
		args := append([]string{"generate", "--prompt", prompt}, strings.Fields(c.args)...)
		err := run(context.Background(), args, &out, &errb)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one naming %q", c.args, err, c.want)
		}
	}
}
