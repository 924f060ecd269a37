// Command make-random-checkpoint writes a random-weight bf16 Llama checkpoint of a given
// shape, for memory and speed measurements on machines without torch: config.json,
// model.safetensors (one file, written tensor by tensor so that memory stays small),
// and the default model's tokenizer (tokenizer.json, tokenizer_config.json), whose token
// ids are all below 8192 and so valid for any vocabulary at least that large.
//
// Every matrix and the embedding are drawn from N(0, 0.02^2) (a Llama config's
// initializer_range), norm weights are 1; the text such a model writes is noise.
//
//	go run ./scripts/make-random-checkpoint --shape 8b   --out /tmp/lukv-8b     # 16 GB
//	go run ./scripts/make-random-checkpoint --shape 790m --out /tmp/lukv-790m   # 790 MB
//
// Shapes: 8b is Llama-3.1-8B's (hidden 4096, 32 layers, 32 query / 8 KV heads of 128,
// MLP 14336, vocabulary 128256, untied LM head); 790m is the 790 MB model (hidden
// 2048, 8 layers, 16 query / 4 KV heads of 128, MLP 5632, vocabulary 8192). --layers,
// --hidden and the rest override a shape's numbers.
package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/lukv/lukv/loader"
	"github.com/lukv/lukv/models"
)

type shape struct {
	Hidden, Layers, Heads, KVHeads, HeadDim, Intermediate, Vocab int
	Tied                                                         bool
}

var shapes = map[string]shape{
	"8b":   {Hidden: 4096, Layers: 32, Heads: 32, KVHeads: 8, HeadDim: 128, Intermediate: 14336, Vocab: 128256},
	"790m": {Hidden: 2048, Layers: 8, Heads: 16, KVHeads: 4, HeadDim: 128, Intermediate: 5632, Vocab: 8192},
}

type tensor struct {
	name  string
	shape []int
	ones  bool
}

func (s shape) tensors() []tensor {
	H, F, V := s.Hidden, s.Intermediate, s.Vocab
	q, kv := s.Heads*s.HeadDim, s.KVHeads*s.HeadDim
	ts := []tensor{{name: "model.embed_tokens.weight", shape: []int{V, H}}}
	for i := range s.Layers {
		p := fmt.Sprintf("model.layers.%d.", i)
		ts = append(ts,
			tensor{p + "input_layernorm.weight", []int{H}, true},
			tensor{p + "self_attn.q_proj.weight", []int{q, H}, false},
			tensor{p + "self_attn.k_proj.weight", []int{kv, H}, false},
			tensor{p + "self_attn.v_proj.weight", []int{kv, H}, false},
			tensor{p + "self_attn.o_proj.weight", []int{H, q}, false},
			tensor{p + "post_attention_layernorm.weight", []int{H}, true},
			tensor{p + "mlp.gate_proj.weight", []int{F, H}, false},
			tensor{p + "mlp.up_proj.weight", []int{F, H}, false},
			tensor{p + "mlp.down_proj.weight", []int{H, F}, false})
	}
	ts = append(ts, tensor{"model.norm.weight", []int{H}, true})
	if !s.Tied {
		ts = append(ts, tensor{"lm_head.weight", []int{V, H}, false})
	}
	return ts
}

func (s shape) config() map[string]any {
	return map[string]any{
		"architectures": []string{"LlamaForCausalLM"}, "model_type": "llama",
		"attention_bias": false, "mlp_bias": false, "hidden_act": "silu",
		"bos_token_id": 0, "eos_token_id": 1, // the default model's tokenizer's special tokens
		"dtype": "bfloat16", "torch_dtype": "bfloat16",
		"hidden_size": s.Hidden, "num_hidden_layers": s.Layers, "num_attention_heads": s.Heads,
		"num_key_value_heads": s.KVHeads, "head_dim": s.HeadDim, "intermediate_size": s.Intermediate,
		"vocab_size": s.Vocab, "tie_word_embeddings": s.Tied, "initializer_range": 0.02,
		"max_position_embeddings": 8192, "rms_norm_eps": 1e-5,
		"rope_parameters": map[string]any{"rope_type": "default", "rope_theta": 500000.0},
	}
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "make-random-checkpoint:", err)
		os.Exit(1)
	}
}

func run() error {
	name := flag.String("shape", "790m", "8b or 790m")
	out := flag.String("out", "", "folder to write (made if missing; not inside the repository)")
	seed := flag.Uint64("seed", 0, "random seed")
	layers := flag.Int("layers", 0, "override the shape's layer count")
	flag.Parse()
	s, ok := shapes[*name]
	if !ok {
		return fmt.Errorf("--shape %q: want 8b or 790m", *name)
	}
	if *layers < 0 {
		return fmt.Errorf("--layers %d: want >= 1 (0: the shape's)", *layers)
	} else if *layers > 0 {
		s.Layers = *layers
	}
	if *out == "" {
		return fmt.Errorf("--out is required")
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	cfg, err := json.MarshalIndent(s.config(), "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*out, "config.json"), append(cfg, '\n'), 0o644); err != nil {
		return err
	}
	tiny, err := models.DefaultDir()
	if err != nil {
		return err
	}
	for _, f := range []string{"tokenizer.json", "tokenizer_config.json"} {
		b, err := os.ReadFile(filepath.Join(tiny, f))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(*out, f), b, 0o644); err != nil {
			return err
		}
	}
	path := filepath.Join(*out, "model.safetensors")
	n, err := writeWeights(path, s.tensors(), *seed)
	if err != nil {
		os.Remove(path)
		return err
	}
	fmt.Printf("%s: %d bytes (%.2f GiB), shape %s %+v\n", path, n, float64(n)/(1<<30), *name, s)
	return nil
}

// writeWeights streams the tensors into a safetensors file as bf16 and returns its size.
func writeWeights(path string, ts []tensor, seed uint64) (int64, error) {
	header := map[string]any{"__metadata__": map[string]string{"format": "pt", "note": "random weights (make-random-checkpoint)"}}
	var offset int64
	for _, t := range ts {
		size := int64(2)
		for _, d := range t.shape {
			size *= int64(d)
		}
		header[t.name] = map[string]any{"dtype": loader.BF16, "shape": t.shape, "data_offsets": []int64{offset, offset + size}}
		offset += size
	}
	hdr, err := json.Marshal(header)
	if err != nil {
		return 0, err
	}
	for len(hdr)%8 != 0 {
		hdr = append(hdr, ' ')
	}
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	w := bufio.NewWriterSize(f, 4<<20)
	binary.Write(w, binary.LittleEndian, uint64(len(hdr)))
	w.Write(hdr)
	rng := rand.New(rand.NewPCG(seed, 0x7a11))
	one := loader.Float32ToBF16(1)
	buf := make([]byte, 0, 1<<20)
	for _, t := range ts {
		count := 1
		for _, d := range t.shape {
			count *= d
		}
		for i := 0; i < count; i++ {
			v := one
			if !t.ones {
				v = loader.Float32ToBF16(float32(rng.NormFloat64() * 0.02))
			}
			buf = binary.LittleEndian.AppendUint16(buf, v)
			if len(buf) == cap(buf) {
				if _, err := w.Write(buf); err != nil {
					f.Close()
					return 0, err
				}
				buf = buf[:0]
			}
		}
	}
	w.Write(buf)
	if err := w.Flush(); err != nil {
		f.Close()
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	return 8 + int64(len(hdr)) + offset, nil
}
