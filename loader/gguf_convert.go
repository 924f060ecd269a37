package loader

import (
	"fmt"
	"path/filepath"
	"strings"
)

// GGUFFileType is general.file_type for a file whose weights are typ (llama.cpp's
// numbering: the type of most tensors).
func GGUFFileType(typ GGMLType) uint32 {
	switch typ {
	case GGMLF16:
		return 1
	case GGMLQ8_0:
		return 7
	case GGMLBF16:
		return 32
	case GGMLQ4_K:
		return 15 // MOSTLY_Q4_K_M
	case GGMLQ6_K:
		return 18
	}
	return 0 // F32
}

// ParseGGMLType reads a weight type name: f32, f16, bf16, q8_0, q4_k or q6_k (any case).
func ParseGGMLType(s string) (GGMLType, error) {
	switch strings.ToLower(s) {
	case "f32":
		return GGMLF32, nil
	case "f16":
		return GGMLF16, nil
	case "bf16":
		return GGMLBF16, nil
	case "q8_0":
		return GGMLQ8_0, nil
	case "q4_k":
		return GGMLQ4_K, nil
	case "q6_k":
		return GGMLQ6_K, nil
	}
	return 0, fmt.Errorf("%w: weight type %q (want f32, f16, bf16, q8_0, q4_k or q6_k)", ErrUnsupportedDType, s)
}

// fallbackType is the type a matrix with rows of n values is written in when typ is
// asked for: a block type whose blocks do not tile the row falls back to Q8_0 (k-quants,
// as llama.cpp does for such rows) or F16.
func fallbackType(typ GGMLType, n int) GGMLType {
	if (typ == GGMLQ4_K || typ == GGMLQ6_K) && n%kBlock != 0 {
		typ = GGMLQ8_0
	}
	if typ == GGMLQ8_0 && n%q8Block != 0 {
		typ = GGMLF16
	}
	return typ
}

// ConvertToGGUF writes the Llama checkpoint in dir (config.json, generation_config.json,
// safetensors) as a llama GGUF file at out, as llama.cpp's converter lays it out: its
// tensor names, q_proj and k_proj rows permuted to its RoPE layout, matrices as typ and
// vectors (norms, biases) as F32. Q8_0 matrices whose rows are not whole 32-value blocks
// are written F16, as llama.cpp does. vocab is the tokenizer to store (package
// tokenizer reads it from tokenizer.json: tokenizer.GGUFVocabFromJSON).
func ConvertToGGUF(dir, out string, typ GGMLType, vocab *GGUFVocab) error {
	cfg, err := LoadConfigDir(dir)
	if err != nil {
		return err
	}
	unsupported := func(format string, args ...any) error {
		return fmt.Errorf("convert %s to GGUF: %w: %s", dir, ErrUnsupported, fmt.Sprintf(format, args...))
	}
	switch {
	case cfg.Arch != ArchLlama && cfg.Arch != ArchMistral:
		return unsupported("%v (the converter writes llama GGUF files: Llama and Mistral)", cfg.Arch)
	case cfg.SlidingWindow != nil:
		return unsupported("sliding_window %d (a llama GGUF file has no sliding window)", *cfg.SlidingWindow)
	case cfg.RopeScaling != nil && cfg.RopeScaling.Type != "linear":
		return unsupported("rope scaling %q (the converter writes none or linear)", cfg.RopeScaling.Type)
	case len(cfg.EOSTokenIDs) > 3:
		return unsupported("%d end-of-sequence tokens (GGUF has eos, eot and eom)", len(cfg.EOSTokenIDs))
	}
	if vocab == nil || len(vocab.Tokens) == 0 {
		return fmt.Errorf("convert %s to GGUF: no tokenizer vocabulary", dir)
	}
	ck, err := OpenCheckpoint(dir)
	if err != nil {
		return err
	}
	defer ck.Close()

	u32 := func(v int) uint32 { return uint32(v) }
	kvs := []GGUFKV{
		{"general.architecture", "llama"},
		{"general.name", filepath.Base(filepath.Clean(dir))},
		{"general.file_type", GGUFFileType(typ)},
		{"llama.context_length", u32(cfg.MaxPositionEmbeddings)},
		{"llama.embedding_length", u32(cfg.HiddenSize)},
		{"llama.block_count", u32(cfg.NumLayers)},
		{"llama.feed_forward_length", u32(cfg.IntermediateSize)},
		{"llama.attention.head_count", u32(cfg.NumHeads)},
		{"llama.attention.head_count_kv", u32(cfg.NumKVHeads)},
		{"llama.attention.key_length", u32(cfg.HeadDim)},
		{"llama.attention.value_length", u32(cfg.HeadDim)},
		{"llama.rope.dimension_count", u32(cfg.HeadDim)},
		{"llama.rope.freq_base", float32(cfg.RopeTheta)},
		{"llama.attention.layer_norm_rms_epsilon", float32(cfg.RMSNormEps)},
		{"llama.vocab_size", u32(cfg.VocabSize)},
	}
	if sc := cfg.RopeScaling; sc != nil {
		kvs = append(kvs, GGUFKV{"llama.rope.scaling.type", "linear"}, GGUFKV{"llama.rope.scaling.factor", float32(sc.Factor)})
	}
	kvs = append(kvs, GGUFKV{"tokenizer.ggml.model", vocab.Model}, GGUFKV{"tokenizer.ggml.pre", vocab.Pre},
		GGUFKV{"tokenizer.ggml.tokens", vocab.Tokens}, GGUFKV{"tokenizer.ggml.token_type", vocab.Types})
	if len(vocab.Merges) > 0 {
		kvs = append(kvs, GGUFKV{"tokenizer.ggml.merges", vocab.Merges})
	}
	if len(vocab.Scores) > 0 {
		kvs = append(kvs, GGUFKV{"tokenizer.ggml.scores", vocab.Scores})
	}
	if cfg.BOSTokenID >= 0 {
		kvs = append(kvs, GGUFKV{"tokenizer.ggml.bos_token_id", u32(cfg.BOSTokenID)})
	}
	for i, id := range cfg.EOSTokenIDs {
		key := []string{"eos", "eot", "eom"}[i]
		kvs = append(kvs, GGUFKV{"tokenizer.ggml." + key + "_token_id", u32(id)})
	}
	if vocab.AddBOS != nil {
		kvs = append(kvs, GGUFKV{"tokenizer.ggml.add_bos_token", *vocab.AddBOS})
	}
	if vocab.AddEOS != nil {
		kvs = append(kvs, GGUFKV{"tokenizer.ggml.add_eos_token", *vocab.AddEOS})
	}

	var tensors []GGUFWriteTensor
	for _, name := range ck.Names() {
		gname, ok := ggufName(name)
		if !ok {
			return unsupported("tensor %q has no GGUF name", name)
		}
		info, _ := ck.Info(name)
		t := GGUFWriteTensor{Name: gname, Type: GGMLF32, Shape: info.Shape}
		if len(info.Shape) == 2 {
			t.Type = typ
			t.Type = fallbackType(typ, info.Shape[1])
		}
		heads := 0
		switch {
		case strings.Contains(name, ".self_attn.q_proj."):
			heads = cfg.NumHeads
		case strings.Contains(name, ".self_attn.k_proj."):
			heads = cfg.NumKVHeads
		}
		t.Load = func() ([]float32, error) {
			x, err := ck.Float32(name)
			if err != nil || heads == 0 {
				return x, err
			}
			if len(x)%(heads*cfg.HeadDim) != 0 {
				return nil, fmt.Errorf("%s: tensor %q: %w: %d values for %d heads of %d", dir, name, ErrShapeMismatch, len(x), heads, cfg.HeadDim)
			}
			return RopeRowsToGGUF(x, heads, len(x)/(heads*cfg.HeadDim)), nil
		}
		tensors = append(tensors, t)
	}
	return WriteGGUF(out, kvs, tensors)
}
