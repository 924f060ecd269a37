package loader

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strings"
)

// Arch is a model architecture lukv implements, named in config.json's
// "architectures" list.
type Arch int

// The supported architectures. All are the Llama block (RMSNorm, GQA attention with
// RoPE, SwiGLU MLP); they differ in QKV bias (Qwen2), per-head q/k RMSNorm (Qwen3)
// and sliding-window attention (Mistral).
const (
	ArchLlama   Arch = iota // LlamaForCausalLM
	ArchMistral             // MistralForCausalLM
	ArchQwen2               // Qwen2ForCausalLM
	ArchQwen3               // Qwen3ForCausalLM
)

var archNames = []string{"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"}

// String is the Hugging Face class name, e.g. "LlamaForCausalLM".
func (a Arch) String() string {
	if a < 0 || int(a) >= len(archNames) {
		return fmt.Sprintf("Arch(%d)", int(a))
	}
	return archNames[a]
}

// Config is the part of a Hugging Face config.json that the forward pass needs.
type Config struct {
	Arch                  Arch
	ModelType             string // "llama", "mistral", "qwen2", "qwen3"
	HiddenSize            int    // H
	NumLayers             int    // num_hidden_layers
	NumHeads              int    // query heads, Nq
	NumKVHeads            int    // key/value heads, Nkv (GQA); NumHeads when absent
	HeadDim               int    // D: head_dim, else HiddenSize/NumHeads; even
	IntermediateSize      int    // F, the MLP width
	VocabSize             int    // V
	RMSNormEps            float64
	RopeTheta             float64      // RoPE base; 10000 when absent
	RopeScaling           *RopeScaling // nil: plain RoPE
	MaxPositionEmbeddings int          // context length
	TieWordEmbeddings     bool         // lm_head shares embed_tokens
	AttentionBias         bool         // q, k, v projections have biases (always for Qwen2; o never)
	QKNorm                bool         // per-head RMSNorm on q and k before RoPE (Qwen3)
	SlidingWindow         *int         // attention window in tokens; nil: full attention
	BOSTokenID            int          // -1 when absent
	EOSTokenIDs           []int        // eos_token_id, an int or a list; may be empty
	TorchDType            string       // the weights' dtype as saved: torch_dtype (4.x) or dtype (5.x)
}

// RopeScaling is a RoPE context-extension scheme. Type is "llama3" (Llama 3.1: Factor,
// LowFreqFactor, HighFreqFactor, OriginalMaxPositionEmbeddings) or "linear" (positions
// divided by Factor).
type RopeScaling struct {
	Type                          string
	Factor                        float64
	LowFreqFactor                 float64
	HighFreqFactor                float64
	OriginalMaxPositionEmbeddings int
}

// maxSize bounds every size field: far above any real model, small enough that
// products of two sizes cannot overflow.
const maxSize = 1 << 24

// rawRope is rope_scaling (transformers 4.x) or rope_parameters (5.x, which also
// carries rope_theta). Old configs spell rope_type as "type".
type rawRope struct {
	RopeType       string   `json:"rope_type"`
	Type           string   `json:"type"`
	RopeTheta      *float64 `json:"rope_theta"`
	Factor         *float64 `json:"factor"`
	LowFreqFactor  *float64 `json:"low_freq_factor"`
	HighFreqFactor *float64 `json:"high_freq_factor"`
	OrigMaxPos     *int     `json:"original_max_position_embeddings"`
}

// rawConfig is config.json as written; pointers tell absent (or null) fields.
type rawConfig struct {
	Architectures         []string        `json:"architectures"`
	ModelType             string          `json:"model_type"`
	HiddenSize            *int            `json:"hidden_size"`
	NumHiddenLayers       *int            `json:"num_hidden_layers"`
	NumAttentionHeads     *int            `json:"num_attention_heads"`
	NumKeyValueHeads      *int            `json:"num_key_value_heads"`
	HeadDim               *int            `json:"head_dim"`
	IntermediateSize      *int            `json:"intermediate_size"`
	VocabSize             *int            `json:"vocab_size"`
	RMSNormEps            *float64        `json:"rms_norm_eps"`
	RopeTheta             *float64        `json:"rope_theta"`
	RopeScaling           *rawRope        `json:"rope_scaling"`
	RopeParameters        *rawRope        `json:"rope_parameters"`
	MaxPositionEmbeddings *int            `json:"max_position_embeddings"`
	TieWordEmbeddings     *bool           `json:"tie_word_embeddings"`
	AttentionBias         *bool           `json:"attention_bias"`
	SlidingWindow         *int            `json:"sliding_window"`
	UseSlidingWindow      *bool           `json:"use_sliding_window"`
	BOSTokenID            *int            `json:"bos_token_id"`
	EOSTokenID            json.RawMessage `json:"eos_token_id"`
	TorchDType            string          `json:"torch_dtype"`
	DType                 string          `json:"dtype"`
}

// LoadConfig reads and validates a config.json.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseConfig(data, path)
}

// ParseConfig validates the contents of a config.json; path is only used in error
// messages.
func ParseConfig(data []byte, path string) (*Config, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%s: %w: %s", path, ErrBadConfig, fmt.Sprintf(format, args...))
	}
	missing := func(field string) error {
		return fmt.Errorf("%s: %w: %q", path, ErrMissingField, field)
	}
	var r rawConfig
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, bad("%v", err)
	}
	if len(r.Architectures) == 0 {
		return nil, missing("architectures")
	}
	c := &Config{ModelType: r.ModelType, BOSTokenID: -1, RopeTheta: 10000, TorchDType: r.TorchDType}
	arch := -1
	for i, name := range archNames {
		if r.Architectures[0] == name {
			arch = i
		}
	}
	if arch < 0 {
		return nil, fmt.Errorf("%s: %w %q (supported: %s)", path, ErrUnknownArchitecture, r.Architectures[0], strings.Join(archNames, ", "))
	}
	c.Arch = Arch(arch)

	// Required sizes, each positive and below maxSize.
	for _, f := range []struct {
		name string
		src  *int
		dst  *int
	}{
		{"hidden_size", r.HiddenSize, &c.HiddenSize},
		{"num_hidden_layers", r.NumHiddenLayers, &c.NumLayers},
		{"num_attention_heads", r.NumAttentionHeads, &c.NumHeads},
		{"intermediate_size", r.IntermediateSize, &c.IntermediateSize},
		{"vocab_size", r.VocabSize, &c.VocabSize},
		{"max_position_embeddings", r.MaxPositionEmbeddings, &c.MaxPositionEmbeddings},
	} {
		if f.src == nil {
			return nil, missing(f.name)
		}
		if *f.src <= 0 || *f.src > maxSize {
			return nil, bad("%s is %d, want 1..%d", f.name, *f.src, maxSize)
		}
		*f.dst = *f.src
	}
	if r.RMSNormEps == nil {
		return nil, missing("rms_norm_eps")
	}
	if c.RMSNormEps = *r.RMSNormEps; !(c.RMSNormEps > 0 && c.RMSNormEps < 1) {
		return nil, bad("rms_norm_eps is %g, want in (0, 1)", c.RMSNormEps)
	}

	// Attention heads.
	c.NumKVHeads = c.NumHeads
	if r.NumKeyValueHeads != nil {
		c.NumKVHeads = *r.NumKeyValueHeads
	}
	if c.NumKVHeads <= 0 || c.NumHeads%c.NumKVHeads != 0 {
		return nil, bad("num_attention_heads %d is not a multiple of num_key_value_heads %d", c.NumHeads, c.NumKVHeads)
	}
	if r.HeadDim != nil {
		c.HeadDim = *r.HeadDim
	} else {
		if c.HiddenSize%c.NumHeads != 0 {
			return nil, bad("hidden_size %d is not a multiple of num_attention_heads %d (and no head_dim)", c.HiddenSize, c.NumHeads)
		}
		c.HeadDim = c.HiddenSize / c.NumHeads
	}
	if c.HeadDim <= 0 || c.HeadDim > maxSize || c.HeadDim%2 != 0 {
		return nil, bad("head_dim %d must be positive and even (RoPE rotates pairs)", c.HeadDim)
	}

	// RoPE: transformers 5.x writes rope_parameters (with rope_theta inside), 4.x
	// rope_theta and rope_scaling; the newer form wins when both are present.
	rope := r.RopeScaling
	if r.RopeTheta != nil {
		c.RopeTheta = *r.RopeTheta
	}
	if r.RopeParameters != nil {
		rope = r.RopeParameters
		if rope.RopeTheta != nil {
			c.RopeTheta = *rope.RopeTheta
		}
	}
	if !(c.RopeTheta > 0) || math.IsInf(c.RopeTheta, 0) {
		return nil, bad("rope_theta is %g, want positive", c.RopeTheta)
	}
	if rope != nil {
		sc, err := parseRopeScaling(rope, path)
		if err != nil {
			return nil, err
		}
		c.RopeScaling = sc
	}

	// Architecture-specific attention details.
	if r.AttentionBias != nil {
		c.AttentionBias = *r.AttentionBias
	}
	switch c.Arch {
	case ArchQwen2:
		c.AttentionBias = true // Qwen2 always has q, k, v biases; its config has no switch
	case ArchQwen3:
		c.QKNorm = true
	}
	if r.SlidingWindow != nil && (r.UseSlidingWindow == nil || *r.UseSlidingWindow) {
		// Qwen configs carry a sliding_window that is off unless use_sliding_window.
		if *r.SlidingWindow <= 0 {
			return nil, bad("sliding_window is %d, want positive", *r.SlidingWindow)
		}
		w := *r.SlidingWindow
		c.SlidingWindow = &w
	}
	if r.TieWordEmbeddings != nil {
		c.TieWordEmbeddings = *r.TieWordEmbeddings
	}

	// Special tokens.
	if r.BOSTokenID != nil {
		c.BOSTokenID = *r.BOSTokenID
	}
	if eos := bytes.TrimSpace(r.EOSTokenID); len(eos) > 0 && string(eos) != "null" {
		var one int
		if err := json.Unmarshal(eos, &one); err == nil {
			c.EOSTokenIDs = []int{one}
		} else if err := json.Unmarshal(eos, &c.EOSTokenIDs); err != nil {
			return nil, bad("eos_token_id is neither an integer nor a list of integers: %s", eos)
		}
	}
	if r.DType != "" {
		c.TorchDType = r.DType
	}
	return c, nil
}

// parseRopeScaling turns a rope_scaling / rope_parameters object into a RopeScaling,
// nil for plain RoPE.
func parseRopeScaling(r *rawRope, path string) (*RopeScaling, error) {
	typ := r.RopeType
	if typ == "" {
		typ = r.Type
	}
	need := func(field string, v *float64) (float64, error) {
		if v == nil {
			return 0, fmt.Errorf("%s: %w: %q", path, ErrMissingField, "rope_scaling."+field)
		}
		if !(*v > 0) || math.IsInf(*v, 0) {
			return 0, fmt.Errorf("%s: %w: rope_scaling.%s is %g, want positive", path, ErrBadConfig, field, *v)
		}
		return *v, nil
	}
	var err error
	sc := &RopeScaling{Type: typ}
	switch typ {
	case "", "default":
		return nil, nil
	case "linear":
		if sc.Factor, err = need("factor", r.Factor); err != nil {
			return nil, err
		}
	case "llama3":
		if sc.Factor, err = need("factor", r.Factor); err != nil {
			return nil, err
		}
		if sc.LowFreqFactor, err = need("low_freq_factor", r.LowFreqFactor); err != nil {
			return nil, err
		}
		if sc.HighFreqFactor, err = need("high_freq_factor", r.HighFreqFactor); err != nil {
			return nil, err
		}
		if sc.HighFreqFactor <= sc.LowFreqFactor {
			return nil, fmt.Errorf("%s: %w: rope_scaling high_freq_factor %g must exceed low_freq_factor %g", path, ErrBadConfig, sc.HighFreqFactor, sc.LowFreqFactor)
		}
		if r.OrigMaxPos == nil {
			return nil, fmt.Errorf("%s: %w: %q", path, ErrMissingField, "rope_scaling.original_max_position_embeddings")
		}
		if sc.OriginalMaxPositionEmbeddings = *r.OrigMaxPos; sc.OriginalMaxPositionEmbeddings <= 0 {
			return nil, fmt.Errorf("%s: %w: rope_scaling.original_max_position_embeddings is %d, want positive", path, ErrBadConfig, sc.OriginalMaxPositionEmbeddings)
		}
	default:
		return nil, fmt.Errorf("%s: %w: rope scaling type %q (supported: llama3, linear, default)", path, ErrUnsupported, typ)
	}
	return sc, nil
}
