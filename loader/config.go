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
	AttentionBias         bool         // q, k, v projections have biases (always for Qwen2)
	OutputBias            bool         // o_proj has a bias too (Llama and Qwen3 with attention_bias; never Qwen2, Mistral)
	QKNorm                bool         // per-head RMSNorm on q and k before RoPE (Qwen3)
	SlidingWindow         *int         // attention window in tokens; nil: full attention
	BOSTokenID            int          // -1 when absent
	EOSTokenIDs           []int        // eos_token_id, an int or a list; may be empty
	TorchDType            string       // the weights' dtype as saved: torch_dtype (4.x) or dtype (5.x)

	Generation *GenerationConfig // generation_config.json, when LoadConfigDir found one
}

// RopeScaling is a RoPE context-extension scheme (model/rope.go computes it):
//   - "linear": positions divided by Factor.
//   - "dynamic": NTK-aware scaling of the base once a sequence passes
//     max_position_embeddings (Factor).
//   - "yarn": per-frequency blend of interpolated and original frequencies (Factor,
//     OriginalMaxPositionEmbeddings, BetaFast, BetaSlow, Truncate) and an attention
//     factor on cos/sin (AttentionFactor, or derived from Mscale/MscaleAllDim).
//   - "llama3" (Llama 3.1): Factor, LowFreqFactor, HighFreqFactor,
//     OriginalMaxPositionEmbeddings.
//   - "freq_factors": per-pair divisors (FreqFactors), from a GGUF file's rope_freqs.
type RopeScaling struct {
	Type                          string
	Factor                        float64
	LowFreqFactor                 float64
	HighFreqFactor                float64
	OriginalMaxPositionEmbeddings int

	// YaRN only.
	AttentionFactor      float64 // 0: derived from Factor (and Mscale, MscaleAllDim)
	BetaFast, BetaSlow   float64 // rotation counts bounding the blend; 32 and 1 when absent
	Mscale, MscaleAllDim float64 // DeepSeek-style attention factor inputs; 0 when absent
	NoTruncate           bool    // "truncate": false keeps the blend bounds fractional

	// "freq_factors" only (GGUF files, whose converter stores llama3 scaling as a
	// rope_freqs tensor): frequency j is divided by FreqFactors[j].
	FreqFactors []float64
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

	AttentionFactor     *float64 `json:"attention_factor"`
	BetaFast            *float64 `json:"beta_fast"`
	BetaSlow            *float64 `json:"beta_slow"`
	Mscale              *float64 `json:"mscale"`
	MscaleAllDim        *float64 `json:"mscale_all_dim"`
	Truncate            *bool    `json:"truncate"`
	PartialRotaryFactor *float64 `json:"partial_rotary_factor"`
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

	// Read only to refuse what lukv does not implement.
	HiddenAct           *string         `json:"hidden_act"`
	MLPBias             *bool           `json:"mlp_bias"`
	PartialRotaryFactor *float64        `json:"partial_rotary_factor"`
	LayerTypes          []string        `json:"layer_types"`
	QuantizationConfig  json.RawMessage `json:"quantization_config"`
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
	var err error
	if err = json.Unmarshal(data, &r); err != nil {
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
	for _, p := range []*float64{r.PartialRotaryFactor, ropeField(rope)} {
		if p != nil && *p != 1 {
			return nil, fmt.Errorf("%s: %w: partial_rotary_factor %g (lukv rotates the whole head)", path, ErrUnsupported, *p)
		}
	}
	if err := checkUnsupported(&r, path); err != nil {
		return nil, err
	}

	// Architecture-specific attention details.
	if r.AttentionBias != nil {
		c.AttentionBias = *r.AttentionBias
	}
	switch c.Arch {
	case ArchLlama:
		c.OutputBias = c.AttentionBias // LlamaAttention gives o_proj the same bias switch
	case ArchMistral:
		c.AttentionBias = false // MistralAttention has no biases, whatever the config says
	case ArchQwen2:
		c.AttentionBias = true // Qwen2 always has q, k, v biases (o never); its config has no switch
	case ArchQwen3:
		c.QKNorm = true
		c.OutputBias = c.AttentionBias
	}
	qwen := c.Arch == ArchQwen2 || c.Arch == ArchQwen3
	if qwen && r.UseSlidingWindow != nil && *r.UseSlidingWindow {
		// Qwen's windows apply to layers from max_window_layers on only: per-layer windows.
		return nil, fmt.Errorf("%s: %w: use_sliding_window true (Qwen's per-layer sliding windows)", path, ErrUnsupported)
	}
	if r.SlidingWindow != nil && !qwen {
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
	if c.EOSTokenIDs, err = parseTokenIDs(r.EOSTokenID); err != nil {
		return nil, bad("eos_token_id: %v", err)
	}
	if r.DType != "" {
		c.TorchDType = r.DType
	}
	return c, nil
}

// ropeField is the rope object's partial_rotary_factor, nil when absent.
func ropeField(r *rawRope) *float64 {
	if r == nil {
		return nil
	}
	return r.PartialRotaryFactor
}

// checkUnsupported refuses config fields whose value changes the model in a way lukv
// does not implement, naming the field and its value.
func checkUnsupported(r *rawConfig, path string) error {
	unsupported := func(format string, args ...any) error {
		return fmt.Errorf("%s: %w: %s", path, ErrUnsupported, fmt.Sprintf(format, args...))
	}
	if r.HiddenAct != nil {
		switch *r.HiddenAct {
		case "silu", "swish":
		default:
			return unsupported("hidden_act %q (lukv's MLP is SwiGLU: silu or swish)", *r.HiddenAct)
		}
	}
	if r.MLPBias != nil && *r.MLPBias {
		return unsupported("mlp_bias true (biases on gate, up and down projections)")
	}
	if q := bytes.TrimSpace(r.QuantizationConfig); len(q) > 0 && string(q) != "null" {
		return unsupported("quantization_config (pre-quantized weights; lukv reads bf16, f16 and f32 checkpoints)")
	}
	for i, lt := range r.LayerTypes {
		switch {
		case lt == "full_attention" && (r.SlidingWindow == nil || (r.UseSlidingWindow != nil && !*r.UseSlidingWindow)):
		case lt == "sliding_attention" && r.SlidingWindow != nil && (r.UseSlidingWindow == nil || *r.UseSlidingWindow):
		case lt == "full_attention" || lt == "sliding_attention":
			return unsupported("layer_types[%d] is %q: per-layer attention types (lukv applies sliding_window to every layer or none)", i, lt)
		default:
			return unsupported("layer_types[%d] is %q", i, lt)
		}
	}
	return nil
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
	case "dynamic":
		if sc.Factor, err = need("factor", r.Factor); err != nil {
			return nil, err
		}
	case "yarn":
		if err := parseYarn(r, sc, path); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%s: %w: rope scaling type %q (supported: default, linear, dynamic, yarn, llama3)", path, ErrUnsupported, typ)
	}
	return sc, nil
}

// parseYarn reads YaRN's fields; absent ones keep transformers' defaults (beta_fast 32,
// beta_slow 1, truncate true, the attention factor derived from the factor).
func parseYarn(r *rawRope, sc *RopeScaling, path string) error {
	bad := func(field string, v float64) error {
		return fmt.Errorf("%s: %w: rope_scaling.%s is %g, want positive", path, ErrBadConfig, field, v)
	}
	if r.Factor == nil {
		return fmt.Errorf("%s: %w: %q", path, ErrMissingField, "rope_scaling.factor")
	}
	opt := func(field string, v *float64, def float64) (float64, error) {
		if v == nil {
			return def, nil
		}
		if !(*v > 0) || math.IsInf(*v, 0) {
			return 0, bad(field, *v)
		}
		return *v, nil
	}
	var err error
	if sc.Factor, err = opt("factor", r.Factor, 0); err != nil {
		return err
	}
	if sc.AttentionFactor, err = opt("attention_factor", r.AttentionFactor, 0); err != nil {
		return err
	}
	if sc.BetaFast, err = opt("beta_fast", r.BetaFast, 32); err != nil {
		return err
	}
	if sc.BetaSlow, err = opt("beta_slow", r.BetaSlow, 1); err != nil {
		return err
	}
	if sc.Mscale, err = opt("mscale", r.Mscale, 0); err != nil {
		return err
	}
	if sc.MscaleAllDim, err = opt("mscale_all_dim", r.MscaleAllDim, 0); err != nil {
		return err
	}
	if r.OrigMaxPos != nil {
		if sc.OriginalMaxPositionEmbeddings = *r.OrigMaxPos; sc.OriginalMaxPositionEmbeddings <= 0 || sc.OriginalMaxPositionEmbeddings > maxSize {
			return fmt.Errorf("%s: %w: rope_scaling.original_max_position_embeddings is %d, want 1..%d", path, ErrBadConfig, sc.OriginalMaxPositionEmbeddings, maxSize)
		}
	}
	sc.NoTruncate = r.Truncate != nil && !*r.Truncate
	return nil
}

// ContextLength is the longest sequence lukv runs for this config: max_position_embeddings,
// except where the RoPE scaling exists to run past it: dynamic NTK scaling up to Factor
// times it, YaRN up to Factor times its original context when that is longer.
func (c *Config) ContextLength() int {
	n := c.MaxPositionEmbeddings
	if sc := c.RopeScaling; sc != nil {
		switch sc.Type {
		case "dynamic":
			n = max(n, int(math.Min(sc.Factor*float64(n), maxSize)))
		case "yarn":
			if sc.OriginalMaxPositionEmbeddings > 0 {
				n = max(n, int(math.Min(sc.Factor*float64(sc.OriginalMaxPositionEmbeddings), maxSize)))
			}
		}
	}
	return n
}
