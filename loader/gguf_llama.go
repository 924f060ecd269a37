package loader

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// A Llama-architecture GGUF file as lukv's Config and Hugging Face tensor names.
//
// llama.cpp's converter renames tensors (token_embd, blk.N.attn_q, ..., output_norm,
// output), reverses the order of dimensions (ggml lists the innermost first: the same
// bytes as HF's row-major [out, in]), and permutes the rows of q_proj and k_proj within
// each head from Hugging Face's rotate-half RoPE layout (pairs j and j+D/2) to its
// interleaved one (pairs 2i and 2i+1). GGUFModel undoes all three, so the forward pass
// sees exactly the tensors of the safetensors checkpoint.

// ggufLayerTensors maps the per-layer GGUF tensor names to Hugging Face's
// (blk.N.<gguf> <-> model.layers.N.<hf>), the reader's and the converter's one table.
var ggufLayerTensors = []struct{ gguf, hf string }{
	{"attn_norm", "input_layernorm"},
	{"attn_q", "self_attn.q_proj"},
	{"attn_k", "self_attn.k_proj"},
	{"attn_v", "self_attn.v_proj"},
	{"attn_output", "self_attn.o_proj"},
	{"ffn_norm", "post_attention_layernorm"},
	{"ffn_gate", "mlp.gate_proj"},
	{"ffn_up", "mlp.up_proj"},
	{"ffn_down", "mlp.down_proj"},
}

// ggufModelTensors are the tensors outside the layers.
var ggufModelTensors = []struct{ gguf, hf string }{
	{"token_embd", "model.embed_tokens"},
	{"output_norm", "model.norm"},
	{"output", "lm_head"},
}

// ggufRopeFreqs is the tensor llama.cpp's converter writes for llama3 RoPE scaling:
// one divisor per rotated pair.
const ggufRopeFreqs = "rope_freqs.weight"

// hfName maps a GGUF tensor name to Hugging Face's, ok false for a name lukv does not
// know.
func hfName(name string) (string, bool) {
	base, suffix, ok := cutLast(name, ".")
	if !ok || (suffix != "weight" && suffix != "bias") {
		return "", false
	}
	for _, t := range ggufModelTensors {
		if base == t.gguf {
			return t.hf + "." + suffix, true
		}
	}
	rest, ok := strings.CutPrefix(base, "blk.")
	if !ok {
		return "", false
	}
	num, part, ok := strings.Cut(rest, ".")
	n, err := strconv.Atoi(num)
	if !ok || err != nil || n < 0 || n >= maxSize || strconv.Itoa(n) != num {
		return "", false
	}
	for _, t := range ggufLayerTensors {
		if part == t.gguf {
			return fmt.Sprintf("model.layers.%d.%s.%s", n, t.hf, suffix), true
		}
	}
	return "", false
}

// ggufName maps a Hugging Face tensor name to GGUF's, ok false for one that has no
// GGUF name.
func ggufName(name string) (string, bool) {
	base, suffix, ok := cutLast(name, ".")
	if !ok {
		return "", false
	}
	for _, t := range ggufModelTensors {
		if base == t.hf {
			return t.gguf + "." + suffix, true
		}
	}
	rest, ok := strings.CutPrefix(base, "model.layers.")
	if !ok {
		return "", false
	}
	num, part, ok := strings.Cut(rest, ".")
	if !ok {
		return "", false
	}
	for _, t := range ggufLayerTensors {
		if part == t.hf {
			return "blk." + num + "." + t.gguf + "." + suffix, true
		}
	}
	return "", false
}

func cutLast(s, sep string) (before, after string, ok bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

// RopeRowsToGGUF reorders the rows of a q or k projection ([heads*D, cols], row-major)
// from Hugging Face's rotate-half layout to llama.cpp's interleaved one, as llama.cpp's
// converter does: within each head, row s*D/2 + i moves to row 2i + s.
func RopeRowsToGGUF(x []float32, heads, cols int) []float32 {
	return permuteRopeRows(x, heads, cols, true)
}

// RopeRowsFromGGUF is the inverse of RopeRowsToGGUF.
func RopeRowsFromGGUF(x []float32, heads, cols int) []float32 {
	return permuteRopeRows(x, heads, cols, false)
}

func permuteRopeRows(x []float32, heads, cols int, toGGUF bool) []float32 {
	out := make([]float32, len(x))
	D := len(x) / cols / heads
	for h := range heads {
		for s := range 2 {
			for i := range D / 2 {
				hf, gg := h*D+s*D/2+i, h*D+2*i+s
				src, dst := hf, gg
				if !toGGUF {
					src, dst = gg, hf
				}
				copy(out[dst*cols:(dst+1)*cols], x[src*cols:(src+1)*cols])
			}
		}
	}
	return out
}

// GGUFVocab is the tokenizer a GGUF file stores (tokenizer.ggml.*), as plain data;
// package tokenizer turns it into a Tokenizer (tokenizer.FromGGUF) and back.
type GGUFVocab struct {
	Model  string   // tokenizer.ggml.model: "gpt2" (byte-level BPE) or "llama" (SentencePiece)
	Pre    string   // tokenizer.ggml.pre: the pre-tokenizer's name, e.g. "llama-bpe"
	Tokens []string // tokenizer.ggml.tokens, by id
	Types  []int32  // tokenizer.ggml.token_type: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte
	Merges []string // tokenizer.ggml.merges: "left right", by rank
	Scores []float32
	BOS    int   // tokenizer.ggml.bos_token_id; -1 when absent
	EOS    []int // eos_token_id, then eot_token_id and eom_token_id when present
	AddBOS *bool // tokenizer.ggml.add_bos_token; nil when absent
	AddEOS *bool // tokenizer.ggml.add_eos_token
	// AddSpacePrefix is tokenizer.ggml.add_space_prefix (SentencePiece: "▁" in front of
	// the text); nil when absent.
	AddSpacePrefix *bool
}

// Token types of tokenizer.ggml.token_type.
const (
	GGUFTokenNormal      = 1
	GGUFTokenUnknown     = 2
	GGUFTokenControl     = 3
	GGUFTokenUserDefined = 4
	GGUFTokenUnused      = 5
	GGUFTokenByte        = 6
)

// GGUFModel is a Llama-architecture GGUF file opened as a model: its Config, its
// tensors under Hugging Face names (it implements Weights) and its tokenizer.
type GGUFModel struct {
	File   *GGUFFile
	Config *Config
	hf     map[string]string // Hugging Face name -> GGUF name
	names  []string          // Hugging Face names, sorted
}

var _ Weights = (*GGUFModel)(nil)

// OpenGGUFModel opens a GGUF file and reads its Llama metadata and tensor names.
func OpenGGUFModel(path string) (*GGUFModel, error) {
	f, err := OpenGGUF(path)
	if err != nil {
		return nil, err
	}
	m := &GGUFModel{File: f, hf: map[string]string{}}
	if err := m.init(); err != nil {
		f.Close()
		return nil, err
	}
	return m, nil
}

func (m *GGUFModel) init() error {
	f := m.File
	for _, name := range f.TensorNames() {
		if name == ggufRopeFreqs {
			continue
		}
		hf, ok := hfName(name)
		if !ok {
			return fmt.Errorf("%s: %w: tensor %q is not part of a Llama model", f.Path(), ErrUnsupported, name)
		}
		m.hf[hf] = name
		m.names = append(m.names, hf)
	}
	slices.Sort(m.names)
	cfg, err := m.config()
	if err != nil {
		return err
	}
	m.Config = cfg
	return nil
}

// config reads the llama.* metadata into a Config.
func (m *GGUFModel) config() (*Config, error) {
	f := m.File
	arch, ok, err := f.metaString("general.architecture")
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%s: %w: %q", f.Path(), ErrMissingField, "general.architecture")
	}
	if arch != "llama" {
		return nil, fmt.Errorf("%s: %w: general.architecture %q (lukv opens llama GGUF files)", f.Path(), ErrUnsupported, arch)
	}
	c := &Config{Arch: ArchLlama, ModelType: "llama", BOSTokenID: -1, RopeTheta: 10000}
	size := func(key string, dst *int, required bool) error {
		v, ok, err := f.metaUint("llama." + key)
		switch {
		case err != nil:
			return err
		case !ok && required:
			return fmt.Errorf("%s: %w: %q", f.Path(), ErrMissingField, "llama."+key)
		case !ok:
			return nil
		case v == 0 || v > maxSize:
			return fmt.Errorf("%s: %w: llama.%s is %d, want 1..%d", f.Path(), ErrBadConfig, key, v, maxSize)
		}
		*dst = int(v)
		return nil
	}
	for _, s := range []struct {
		key string
		dst *int
	}{
		{"block_count", &c.NumLayers}, {"embedding_length", &c.HiddenSize}, {"feed_forward_length", &c.IntermediateSize},
		{"attention.head_count", &c.NumHeads}, {"context_length", &c.MaxPositionEmbeddings},
	} {
		if err := size(s.key, s.dst, true); err != nil {
			return nil, err
		}
	}
	c.NumKVHeads = c.NumHeads
	if err := size("attention.head_count_kv", &c.NumKVHeads, false); err != nil {
		return nil, err
	}
	if c.NumHeads%c.NumKVHeads != 0 {
		return nil, fmt.Errorf("%s: %w: llama.attention.head_count %d is not a multiple of llama.attention.head_count_kv %d", f.Path(), ErrBadConfig, c.NumHeads, c.NumKVHeads)
	}
	if c.HiddenSize%c.NumHeads == 0 {
		c.HeadDim = c.HiddenSize / c.NumHeads
	}
	if err := size("attention.key_length", &c.HeadDim, false); err != nil {
		return nil, err
	}
	if c.HeadDim == 0 || c.HeadDim%2 != 0 {
		return nil, fmt.Errorf("%s: %w: head dimension %d must be positive and even (llama.attention.key_length)", f.Path(), ErrBadConfig, c.HeadDim)
	}
	for _, key := range []string{"attention.value_length", "rope.dimension_count"} {
		n := c.HeadDim
		if err := size(key, &n, false); err != nil {
			return nil, err
		}
		if n != c.HeadDim {
			return nil, fmt.Errorf("%s: %w: llama.%s %d differs from the head dimension %d", f.Path(), ErrUnsupported, key, n, c.HeadDim)
		}
	}
	eps, ok, err := f.metaFloat("llama.attention.layer_norm_rms_epsilon")
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%s: %w: %q", f.Path(), ErrMissingField, "llama.attention.layer_norm_rms_epsilon")
	}
	if c.RMSNormEps = eps; !(eps > 0 && eps < 1) {
		return nil, fmt.Errorf("%s: %w: llama.attention.layer_norm_rms_epsilon is %g, want in (0, 1)", f.Path(), ErrBadConfig, eps)
	}
	// No default for the RoPE base: llama.cpp assumes 10000 when it is absent, which is
	// wrong for files whose converter did not find rope_theta (transformers 5 keeps it
	// in rope_parameters, where llama.cpp's converter does not look).
	theta, ok, err := f.metaFloat("llama.rope.freq_base")
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%s: %w: %q (the RoPE base; lukv does not assume 10000)", f.Path(), ErrMissingField, "llama.rope.freq_base")
	}
	c.RopeTheta = theta
	if !(c.RopeTheta > 0) || math.IsInf(c.RopeTheta, 0) {
		return nil, fmt.Errorf("%s: %w: llama.rope.freq_base is %g, want positive", f.Path(), ErrBadConfig, c.RopeTheta)
	}
	if err := m.ropeScaling(c); err != nil {
		return nil, err
	}

	// Vocabulary: llama.vocab_size, else the token list, else the embedding's rows.
	tokens, _, err := f.metaStrings("tokenizer.ggml.tokens")
	if err != nil {
		return nil, err
	}
	c.VocabSize = len(tokens)
	if err := size("vocab_size", &c.VocabSize, false); err != nil {
		return nil, err
	}
	if t, ok := f.Tensor("token_embd.weight"); ok && c.VocabSize == 0 && len(t.Dims) == 2 {
		c.VocabSize = int(min(t.Dims[1], maxSize))
	}
	if c.VocabSize <= 0 {
		return nil, fmt.Errorf("%s: %w: no vocabulary size (llama.vocab_size, tokenizer.ggml.tokens)", f.Path(), ErrMissingField)
	}
	_, hasOutput := m.hf["lm_head.weight"]
	c.TieWordEmbeddings = !hasOutput
	_, c.AttentionBias = m.hf["model.layers.0.self_attn.q_proj.bias"]
	_, c.OutputBias = m.hf["model.layers.0.self_attn.o_proj.bias"]
	if t, ok := f.Tensor("token_embd.weight"); ok {
		c.TorchDType = t.Type.String()
	}

	v, err := m.Vocab()
	if err != nil {
		return nil, err
	}
	c.BOSTokenID, c.EOSTokenIDs = v.BOS, v.EOS
	return c, nil
}

// ropeScaling reads llama.rope.scaling.* and the rope_freqs tensor.
func (m *GGUFModel) ropeScaling(c *Config) error {
	f := m.File
	typ, _, err := f.metaString("llama.rope.scaling.type")
	if err != nil {
		return err
	}
	switch typ {
	case "", "none":
	case "linear":
		factor, ok, err := f.metaFloat("llama.rope.scaling.factor")
		if err != nil {
			return err
		}
		if !ok || !(factor > 0) || math.IsInf(factor, 0) {
			return fmt.Errorf("%s: %w: llama.rope.scaling.type linear needs a positive llama.rope.scaling.factor", f.Path(), ErrBadConfig)
		}
		if factor != 1 {
			c.RopeScaling = &RopeScaling{Type: "linear", Factor: factor}
		}
	default:
		return fmt.Errorf("%s: %w: llama.rope.scaling.type %q (lukv reads none and linear from GGUF, and llama3 scaling as the rope_freqs tensor)", f.Path(), ErrUnsupported, typ)
	}
	t, ok := f.Tensor(ggufRopeFreqs)
	if !ok {
		return nil
	}
	if c.RopeScaling != nil {
		return fmt.Errorf("%s: %w: both llama.rope.scaling.type %q and a %s tensor", f.Path(), ErrUnsupported, typ, ggufRopeFreqs)
	}
	if len(t.Dims) != 1 || int(t.Dims[0]) != c.HeadDim/2 {
		return fmt.Errorf("%s: tensor %q: %w: dims %v, want [%d]", f.Path(), ggufRopeFreqs, ErrShapeMismatch, t.Dims, c.HeadDim/2)
	}
	x, err := f.Float32(ggufRopeFreqs)
	if err != nil {
		return err
	}
	sc := &RopeScaling{Type: "freq_factors", FreqFactors: make([]float64, len(x))}
	for j, v := range x {
		if !(v > 0) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("%s: tensor %q: %w: factor %d is %g, want positive", f.Path(), ggufRopeFreqs, ErrBadConfig, j, v)
		}
		sc.FreqFactors[j] = float64(v)
	}
	c.RopeScaling = sc
	return nil
}

// Vocab reads the tokenizer.ggml.* metadata.
func (m *GGUFModel) Vocab() (*GGUFVocab, error) { return m.File.Vocab() }

// Vocab reads the tokenizer a GGUF file stores (tokenizer.ggml.*), checking that the
// lists agree in length and the special token ids are in range.
func (f *GGUFFile) Vocab() (*GGUFVocab, error) {
	v := &GGUFVocab{BOS: -1}
	var err error
	var ok bool
	if v.Model, ok, err = f.metaString("tokenizer.ggml.model"); err != nil {
		return nil, err
	} else if !ok {
		return nil, fmt.Errorf("%s: %w: %q (the file has no tokenizer)", f.Path(), ErrMissingField, "tokenizer.ggml.model")
	}
	if v.Pre, _, err = f.metaString("tokenizer.ggml.pre"); err != nil {
		return nil, err
	}
	if v.Tokens, ok, err = f.metaStrings("tokenizer.ggml.tokens"); err != nil {
		return nil, err
	} else if !ok || len(v.Tokens) == 0 {
		return nil, fmt.Errorf("%s: %w: %q", f.Path(), ErrMissingField, "tokenizer.ggml.tokens")
	}
	n := len(v.Tokens)
	types, ok, err := f.metaInts("tokenizer.ggml.token_type")
	if err != nil {
		return nil, err
	}
	if ok {
		if len(types) != n {
			return nil, fmt.Errorf("%s: %w: tokenizer.ggml.token_type has %d entries for %d tokens", f.Path(), ErrBadConfig, len(types), n)
		}
		for _, t := range types {
			v.Types = append(v.Types, int32(t))
		}
	}
	if v.Merges, _, err = f.metaStrings("tokenizer.ggml.merges"); err != nil {
		return nil, err
	}
	scores, ok, err := f.metaFloats("tokenizer.ggml.scores")
	if err != nil {
		return nil, err
	}
	if ok {
		if len(scores) != n {
			return nil, fmt.Errorf("%s: %w: tokenizer.ggml.scores has %d entries for %d tokens", f.Path(), ErrBadConfig, len(scores), n)
		}
		for _, s := range scores {
			v.Scores = append(v.Scores, float32(s))
		}
	}
	id := func(key string) (int, bool, error) {
		x, ok, err := f.metaUint("tokenizer.ggml." + key)
		if err != nil || !ok {
			return -1, false, err
		}
		if x >= uint64(n) {
			return -1, false, fmt.Errorf("%s: %w: tokenizer.ggml.%s %d is outside the %d tokens", f.Path(), ErrBadConfig, key, x, n)
		}
		return int(x), true, nil
	}
	if v.BOS, _, err = id("bos_token_id"); err != nil {
		return nil, err
	}
	for _, key := range []string{"eos_token_id", "eot_token_id", "eom_token_id"} {
		e, ok, err := id(key)
		if err != nil {
			return nil, err
		}
		if ok && !slices.Contains(v.EOS, e) {
			v.EOS = append(v.EOS, e)
		}
	}
	for key, dst := range map[string]**bool{"add_bos_token": &v.AddBOS, "add_eos_token": &v.AddEOS, "add_space_prefix": &v.AddSpacePrefix} {
		b, ok, err := f.metaBool("tokenizer.ggml." + key)
		if err != nil {
			return nil, err
		}
		if ok {
			*dst = &b
		}
	}
	return v, nil
}

// Names lists the tensors under Hugging Face names, sorted (Weights).
func (m *GGUFModel) Names() []string { return slices.Clone(m.names) }

// Expect returns the tensor named in Hugging Face's naming as float32, after checking
// its shape, with q_proj and k_proj rows back in Hugging Face's RoPE layout (Weights).
func (m *GGUFModel) Expect(name string, shape ...int) ([]float32, error) {
	f := m.File
	gname, ok := m.hf[name]
	if !ok {
		return nil, fmt.Errorf("%s: tensor %q: %w", f.Path(), name, ErrMissingTensor)
	}
	t, _ := f.Tensor(gname)
	if got := t.Shape(); !slices.Equal(got, shape) {
		return nil, fmt.Errorf("%s: tensor %q (%s): %w: got %v, want %v", f.Path(), gname, name, ErrShapeMismatch, got, shape)
	}
	x, err := f.Float32(gname)
	if err != nil {
		return nil, err
	}
	if heads := m.ropeHeads(name); heads > 0 {
		rows := heads * m.Config.HeadDim
		if len(shape) == 0 || shape[0] != rows {
			return nil, fmt.Errorf("%s: tensor %q (%s): %w: %v, want %d rows (%d heads of %d) first", f.Path(), gname, name, ErrShapeMismatch, shape, rows, heads, m.Config.HeadDim)
		}
		x = RopeRowsFromGGUF(x, heads, len(x)/rows)
	}
	return x, nil
}

// ropeHeads is the number of heads whose rows llama.cpp permutes in the named
// (Hugging Face) tensor, 0 for a tensor it leaves alone.
func (m *GGUFModel) ropeHeads(name string) int {
	switch {
	case strings.Contains(name, ".self_attn.q_proj."):
		return m.Config.NumHeads
	case strings.Contains(name, ".self_attn.k_proj."):
		return m.Config.NumKVHeads
	}
	return 0
}

// Close unmaps the file.
func (m *GGUFModel) Close() error { return m.File.Close() }

// Typed metadata accessors: ok is false when the key is absent; a value of another type
// is an ErrBadGGUF naming the key.

func (g *GGUFFile) metaErr(key string, v any, want string) error {
	return fmt.Errorf("%s: %w: metadata %s is %T, want %s", g.path, ErrBadGGUF, key, v, want)
}

func (g *GGUFFile) metaUint(key string) (uint64, bool, error) {
	v, ok := g.meta[key]
	if !ok {
		return 0, false, nil
	}
	switch x := v.(type) {
	case uint64:
		return x, true, nil
	case int64:
		if x >= 0 {
			return uint64(x), true, nil
		}
	}
	return 0, false, g.metaErr(key, v, "a non-negative integer")
}

func (g *GGUFFile) metaFloat(key string) (float64, bool, error) {
	v, ok := g.meta[key]
	if !ok {
		return 0, false, nil
	}
	switch x := v.(type) {
	case float64:
		return x, true, nil
	case uint64:
		return float64(x), true, nil
	case int64:
		return float64(x), true, nil
	}
	return 0, false, g.metaErr(key, v, "a number")
}

func (g *GGUFFile) metaBool(key string) (bool, bool, error) {
	v, ok := g.meta[key]
	if !ok {
		return false, false, nil
	}
	b, isBool := v.(bool)
	if !isBool {
		return false, false, g.metaErr(key, v, "a bool")
	}
	return b, true, nil
}

func (g *GGUFFile) metaString(key string) (string, bool, error) {
	v, ok := g.meta[key]
	if !ok {
		return "", false, nil
	}
	s, isString := v.(string)
	if !isString {
		return "", false, g.metaErr(key, v, "a string")
	}
	return s, true, nil
}

// metaArray converts every element of an array with conv.
func metaArray[T any](g *GGUFFile, key string, conv func(any) (T, bool), want string) ([]T, bool, error) {
	v, ok := g.meta[key]
	if !ok {
		return nil, false, nil
	}
	arr, isArr := v.([]any)
	if !isArr {
		return nil, false, g.metaErr(key, v, "an array of "+want)
	}
	out := make([]T, len(arr))
	for i, e := range arr {
		if out[i], ok = conv(e); !ok {
			return nil, false, fmt.Errorf("%s: %w: metadata %s[%d] is %T, want %s", g.path, ErrBadGGUF, key, i, e, want)
		}
	}
	return out, true, nil
}

func (g *GGUFFile) metaStrings(key string) ([]string, bool, error) {
	return metaArray(g, key, func(e any) (string, bool) { s, ok := e.(string); return s, ok }, "strings")
}

func (g *GGUFFile) metaInts(key string) ([]int64, bool, error) {
	return metaArray(g, key, func(e any) (int64, bool) {
		switch x := e.(type) {
		case int64:
			return x, true
		case uint64:
			return int64(x), x <= math.MaxInt64
		}
		return 0, false
	}, "integers")
}

func (g *GGUFFile) metaFloats(key string) ([]float64, bool, error) {
	return metaArray(g, key, func(e any) (float64, bool) { x, ok := e.(float64); return x, ok }, "floats")
}
