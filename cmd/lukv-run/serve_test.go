package main

import (
	"context"
	"encoding/json"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lukv/lukv/models"
	"github.com/lukv/lukv/tokenizer"
)

// TestServeFlagErrors: bad flags fail before the server starts, naming the flag.
func TestServeFlagErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--device", "tpu"}, "--device \"tpu\""},
		{[]string{"--prefill-chunk", "-1"}, "--prefill-chunk -1"},
		{[]string{"--gpu-leave", "much"}, "--gpu-leave"},
		{[]string{"--kv-memory", "0"}, "--kv-memory"},
		{[]string{"--port", "70000"}, "--port"},
		{[]string{"--threads", "-3"}, "--threads -3"},
		{[]string{"--kv-memory", "lots"}, "--kv-memory"},
		{[]string{"--kv-memory", "100B"}, "--kv-memory"},
		{[]string{"--kv-method", "magic", "--kv-compression", "0.5"}, "--kv-method/--kv-allocator/--kv-compression: serve: default eviction: kv_method"},
		{[]string{"--kv-compression", "1.5", "--kv-method", "knorm"}, "--kv-method/--kv-allocator/--kv-compression: serve: default eviction: kv_compression"},
		{[]string{"extra"}, "unexpected argument"},
	} {
		err := runServe(context.Background(), c.args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("serve %v: got %v, want an error naming %s", c.args, err, c.want)
		}
	}
	if loadServeCUDA == nil { // a binary built without -tags cuda
		err := runServe(context.Background(), []string{"--device", "cuda"}, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "built without GPU support") {
			t.Errorf("serve --device cuda without GPU support: got %v", err)
		}
	}
}

// TestGenerateChat: generate --chat sends the prompt through the chat template (the
// default model's fallback) and encodes it without adding another BOS.
func TestGenerateChat(t *testing.T) {
	out, _, err := runCLI(t, "generate", "--chat", "--prompt", "Hello", "--max-new-tokens", "3", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Prompt       string `json:"prompt"`
		PromptTokens int    `json:"prompt_tokens"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if want := "<|begin_of_text|>user: Hello\nassistant:"; res.Prompt != want {
		t.Fatalf("prompt %q, want %q", res.Prompt, want)
	}
	dir, err := models.DefaultDir()
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	ids := tok.Encode(res.Prompt, false)
	if res.PromptTokens != len(ids) || ids[0] != 0 || (len(ids) > 1 && ids[1] == 0) {
		t.Fatalf("%d prompt tokens %v: want one BOS (id 0) from the template", res.PromptTokens, ids)
	}
}
