// Command make-cpu-bench-model writes a random-weight bf16 Llama checkpoint for CPU speed
// benchmarks (scripts/bench-cpu.sh), in Go because scripts/make_bench_model.py needs torch.
// The default shape is the 790 MB model of issue 20's table: 8 layers, hidden 2048, MLP
// 5632, 16 query and 4 KV heads of 128, vocabulary 8192 (lukv-tiny's tokenizer, copied
// in), an untied LM head. Matrices and embeddings are N(0, 0.02^2), norms 1; speed does not
// depend on the values.
//
//	go run ./scripts/make-cpu-bench-model -out /tmp/bench-790m
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/lukv/lukv/loader"
)

func main() {
	out := flag.String("out", "", "folder to write (created)")
	layers := flag.Int("layers", 8, "decoder layers")
	hidden := flag.Int("hidden", 2048, "hidden size")
	inter := flag.Int("intermediate", 5632, "MLP intermediate size")
	heads := flag.Int("heads", 16, "query heads (head size: hidden / heads)")
	kvHeads := flag.Int("kv-heads", 4, "KV heads")
	tok := flag.String("tokenizer-from", "models/lukv-tiny", "folder whose tokenizer.json and tokenizer_config.json are copied (its vocabulary sets the model's)")
	seed := flag.Uint64("seed", 0, "random seed")
	flag.Parse()
	if err := run(*out, *tok, *layers, *hidden, *inter, *heads, *kvHeads, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "make-cpu-bench-model:", err)
		os.Exit(1)
	}
}

func run(out, tok string, layers, hidden, inter, heads, kvHeads int, seed uint64) error {
	switch {
	case out == "":
		return fmt.Errorf("--out is required")
	case layers <= 0 || hidden <= 0 || inter <= 0 || heads <= 0 || kvHeads <= 0:
		return fmt.Errorf("--layers, --hidden, --intermediate, --heads and --kv-heads must be positive")
	case hidden%heads != 0 || heads%kvHeads != 0:
		return fmt.Errorf("--hidden (%d) must divide by --heads (%d), and --heads by --kv-heads (%d)", hidden, heads, kvHeads)
	}
	var vocab struct {
		Model struct {
			Vocab map[string]int `json:"vocab"`
		} `json:"model"`
	}
	tj, err := os.ReadFile(filepath.Join(tok, "tokenizer.json"))
	if err != nil {
		return fmt.Errorf("--tokenizer-from: %w", err)
	}
	if err := json.Unmarshal(tj, &vocab); err != nil || len(vocab.Model.Vocab) == 0 {
		return fmt.Errorf("--tokenizer-from: %s/tokenizer.json has no model.vocab (%v)", tok, err)
	}
	V := 0
	for _, id := range vocab.Model.Vocab {
		V = max(V, id+1)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	for _, f := range []string{"tokenizer.json", "tokenizer_config.json"} {
		b, err := os.ReadFile(filepath.Join(tok, f))
		if err != nil {
			return fmt.Errorf("--tokenizer-from: %w", err)
		}
		if err := os.WriteFile(filepath.Join(out, f), b, 0o644); err != nil {
			return err
		}
	}
	D := hidden / heads
	cfg := map[string]any{
		"architectures": []string{"LlamaForCausalLM"}, "model_type": "llama",
		"attention_bias": false, "attention_dropout": 0.0, "mlp_bias": false,
		"bos_token_id": 0, "eos_token_id": 1, "dtype": "bfloat16",
		"head_dim": D, "hidden_act": "silu", "hidden_size": hidden, "intermediate_size": inter,
		"initializer_range": 0.02, "max_position_embeddings": 4096,
		"num_attention_heads": heads, "num_hidden_layers": layers, "num_key_value_heads": kvHeads,
		"rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false, "vocab_size": V,
	}
	cj, _ := json.MarshalIndent(cfg, "", "  ")
	if err := os.WriteFile(filepath.Join(out, "config.json"), append(cj, '\n'), 0o644); err != nil {
		return err
	}
	r := rand.New(rand.NewPCG(seed, 0x790))
	var ts []loader.WriteTensor
	add := func(name string, shape ...int) {
		n := 1
		for _, s := range shape {
			n *= s
		}
		d := make([]float32, n)
		for i := range d {
			if len(shape) == 1 {
				d[i] = 1
			} else {
				d[i] = float32(r.NormFloat64() * 0.02)
			}
		}
		ts = append(ts, loader.WriteTensor{Name: name, DType: loader.BF16, Shape: shape, Data: d})
	}
	add("model.embed_tokens.weight", V, hidden)
	for l := range layers {
		p := fmt.Sprintf("model.layers.%d.", l)
		add(p+"input_layernorm.weight", hidden)
		add(p+"self_attn.q_proj.weight", heads*D, hidden)
		add(p+"self_attn.k_proj.weight", kvHeads*D, hidden)
		add(p+"self_attn.v_proj.weight", kvHeads*D, hidden)
		add(p+"self_attn.o_proj.weight", hidden, heads*D)
		add(p+"post_attention_layernorm.weight", hidden)
		add(p+"mlp.gate_proj.weight", inter, hidden)
		add(p+"mlp.up_proj.weight", inter, hidden)
		add(p+"mlp.down_proj.weight", hidden, inter)
	}
	add("model.norm.weight", hidden)
	add("lm_head.weight", V, hidden)
	if err := loader.WriteShardedCheckpoint(out, ts, 2<<30); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(out, ".complete"), nil, 0o644)
}
