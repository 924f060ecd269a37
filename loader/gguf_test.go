package loader

import (
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// ggufSample writes a small GGUF file with every metadata type and tensor type and
// returns its path and the tensors' values.
func ggufSample(t *testing.T) (string, map[string][]float32) {
	t.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	vals := func(n int) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		return x
	}
	data := map[string][]float32{"a": vals(64 * 3), "b": vals(10), "c": vals(32 * 2), "d": vals(6)}
	kvs := []GGUFKV{
		{"u8", uint8(7)}, {"i8", int8(-7)}, {"u16", uint16(700)}, {"i16", int16(-700)}, {"u32", uint32(70000)},
		{"i32", int32(-70000)}, {"u64", uint64(1 << 40)}, {"i64", int64(-1 << 40)}, {"f32", float32(0.5)},
		{"f64", 0.25}, {"yes", true}, {"name", "lukv ✓"}, {"strs", []string{"a", "", "b c"}},
		{"ints", []int32{1, -2, 3}}, {"floats", []float32{1.5, -2}},
	}
	tensors := []GGUFWriteTensor{
		{Name: "a", Type: GGMLQ8_0, Shape: []int{3, 64}, Data: data["a"]},
		{Name: "b", Type: GGMLF32, Shape: []int{10}, Data: data["b"]},
		{Name: "c", Type: GGMLF16, Shape: []int{2, 32}, Data: data["c"]},
		{Name: "d", Type: GGMLBF16, Shape: []int{1, 2, 3}, Load: func() ([]float32, error) { return data["d"], nil }},
	}
	path := filepath.Join(t.TempDir(), "sample.gguf")
	if err := WriteGGUF(path, kvs, tensors); err != nil {
		t.Fatal(err)
	}
	return path, data
}

func TestGGUFRoundTrip(t *testing.T) {
	path, data := ggufSample(t)
	if !IsGGUF(path) {
		t.Fatal("IsGGUF false for a GGUF file")
	}
	g, err := OpenGGUF(path)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	want := map[string]any{"u8": uint64(7), "i8": int64(-7), "u16": uint64(700), "i16": int64(-700), "u32": uint64(70000),
		"i32": int64(-70000), "u64": uint64(1 << 40), "i64": int64(-1 << 40), "f32": 0.5, "f64": 0.25, "yes": true,
		"name": "lukv ✓", "strs": []any{"a", "", "b c"}, "ints": []any{int64(1), int64(-2), int64(3)}, "floats": []any{1.5, -2.0}}
	for k, w := range want {
		if v, ok := g.Value(k); !ok || !reflect.DeepEqual(v, w) {
			t.Errorf("metadata %s = %#v, want %#v", k, v, w)
		}
	}
	if !slices.Equal(g.TensorNames(), []string{"a", "b", "c", "d"}) {
		t.Errorf("tensor names %v", g.TensorNames())
	}
	shapes := map[string][]int{"a": {3, 64}, "b": {10}, "c": {2, 32}, "d": {1, 2, 3}}
	for name, x := range data {
		info, _ := g.Tensor(name)
		if !slices.Equal(info.Shape(), shapes[name]) || info.Offset%32 != 0 {
			t.Errorf("%s: shape %v offset %d", name, info.Shape(), info.Offset)
		}
		got, err := g.Float32(name)
		if err != nil {
			t.Fatal(err)
		}
		for i := range x {
			var want float32
			switch info.Type {
			case GGMLF32:
				want = x[i]
			case GGMLF16:
				want = F16ToFloat32(Float32ToF16(x[i]))
			case GGMLBF16:
				want = BF16ToFloat32(Float32ToBF16(x[i]))
			case GGMLQ8_0:
				// Within half a quantization step of its block (d = max|x|/127).
				blk := x[i/32*32 : i/32*32+32]
				var amax float64
				for _, v := range blk {
					amax = math.Max(amax, math.Abs(float64(v)))
				}
				if d := math.Abs(float64(got[i] - x[i])); d > amax/127*0.5*1.01 {
					t.Errorf("%s[%d]: Q8_0 %g vs %g: off by %g, more than half a step", name, i, got[i], x[i], d)
				}
				continue
			}
			if got[i] != want {
				t.Errorf("%s[%d] = %g, want %g", name, i, got[i], want)
			}
		}
	}
	if _, err := g.Float32("nope"); !errors.Is(err, ErrMissingTensor) {
		t.Errorf("absent tensor: %v", err)
	}
}

// Every prefix of a valid file that cuts into its tensor data (or before) is refused
// with ErrTruncated, never a panic; the padding after the last tensor is optional.
func TestGGUFTruncated(t *testing.T) {
	path, _ := ggufSample(t)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	g, err := ParseGGUF(data, "whole.gguf")
	if err != nil {
		t.Fatal(err)
	}
	end := 0
	for _, name := range g.TensorNames() {
		info, _ := g.Tensor(name)
		end = max(end, int(info.Offset+info.Size))
	}
	for n := 0; n < len(data); n++ {
		_, err := ParseGGUF(data[:n], "cut.gguf")
		if n < end && !errors.Is(err, ErrTruncated) {
			t.Fatalf("file cut to %d of %d bytes (data ends at %d): %v, want ErrTruncated", n, len(data), end, err)
		}
		if n >= end && err != nil {
			t.Fatalf("file without %d bytes of trailing padding: %v", len(data)-n, err)
		}
	}
}

// setU32/setU64 patch a copy of a file.
func patched(data []byte, off int, v any) []byte {
	d := slices.Clone(data)
	switch x := v.(type) {
	case uint32:
		binary.LittleEndian.PutUint32(d[off:], x)
	case uint64:
		binary.LittleEndian.PutUint64(d[off:], x)
	}
	return d
}

func TestGGUFHostile(t *testing.T) {
	kvs := []GGUFKV{{"k", uint32(1)}}
	tensors := []GGUFWriteTensor{
		{Name: "x", Type: GGMLF32, Shape: []int{2, 8}, Data: make([]float32, 16)},
		{Name: "y", Type: GGMLF32, Shape: []int{8}, Data: make([]float32, 8)},
	}
	path := filepath.Join(t.TempDir(), "h.gguf")
	if err := WriteGGUF(path, kvs, tensors); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	// Layout: magic 0, version 4, tensors 8, kvs 16, key len 24, "k" 32, type 33, value 37,
	// tensor x: name len 41, "x" 49, ndims 50, dims 54 62, type 70, offset 74; tensor y: 82..
	yOff := 82 + 8 + 1 + 4 + 8 + 4 // offset field of y
	cases := []struct {
		name string
		data []byte
		want error
		says string
	}{
		{"magic", patched(data, 0, uint32(0x46554746)), ErrNotGGUF, "magic"},
		{"version 1", patched(data, 4, uint32(1)), ErrBadGGUF, "version 1"},
		{"big-endian", patched(data, 4, uint32(3<<24)), ErrBadGGUF, "big-endian"},
		{"huge tensor count", patched(data, 8, uint64(1<<60)), ErrTruncated, "tensors"},
		{"huge kv count", patched(data, 16, uint64(1<<61)), ErrTruncated, "metadata"},
		{"huge key length", patched(data, 24, uint64(1<<62)), ErrTruncated, "metadata key"},
		{"unknown value type", patched(data, 33, uint32(99)), ErrBadGGUF, "unknown value type"},
		{"zero dims", patched(data, 50, uint32(0)), ErrBadGGUF, "dimensions"},
		{"five dims", patched(data, 50, uint32(5)), ErrBadGGUF, "dimensions"},
		{"zero dim", patched(data, 54, uint64(0)), ErrBadGGUF, "dimensions"},
		{"dims overflow", patched(patched(data, 54, uint64(1<<39)), 62, uint64(1<<39)), ErrBadGGUF, "out of range"},
		{"unsupported type", patched(data, 70, uint32(13)), ErrUnsupportedDType, "ggml type 13"},
		{"q4_k partial block", patched(data, 70, uint32(12)), ErrBadGGUF, "256-value blocks"},
		{"q8_0 partial block", patched(data, 70, uint32(8)), ErrBadGGUF, "32-value blocks"},
		{"misaligned offset", patched(data, yOff, uint64(4)), ErrBadGGUF, "alignment"},
		{"overlap", patched(data, yOff, uint64(0)), ErrOverlap, `"y"`},
		{"past the end", patched(data, yOff, uint64(1<<20)), ErrTruncated, `"y"`},
	}
	for _, c := range cases {
		_, err := ParseGGUF(c.data, "h.gguf")
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.says) || !strings.Contains(err.Error(), "h.gguf") {
			t.Errorf("%s: %v, want %v naming %q and the file", c.name, err, c.want, c.says)
		}
	}
	dup := filepath.Join(t.TempDir(), "dup.gguf")
	if err := WriteGGUF(dup, []GGUFKV{{"k", true}, {"k", false}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenGGUF(dup); !errors.Is(err, ErrDuplicateName) {
		t.Errorf("duplicate key: %v", err)
	}
	if err := WriteGGUF(dup, nil, []GGUFWriteTensor{{Name: "q", Type: GGMLQ8_0, Shape: []int{1, 20}, Data: make([]float32, 20)}}); !errors.Is(err, ErrUnsupportedDType) {
		t.Errorf("writing Q8_0 rows of 20: %v", err)
	}
	if err := WriteGGUF(dup, nil, []GGUFWriteTensor{{Name: "s", Type: GGMLF32, Shape: []int{3}, Data: make([]float32, 2)}}); !errors.Is(err, ErrShapeMismatch) {
		t.Errorf("writing 2 values as [3]: %v", err)
	}
}

// The RoPE row permutation is llama.cpp's (rows s*D/2+i -> 2i+s within a head) and its
// inverse undoes it.
func TestRopeRowsPermutation(t *testing.T) {
	// Two heads of D = 4, one column: HF rows [0 1 2 3 | 4 5 6 7].
	x := []float32{0, 1, 2, 3, 4, 5, 6, 7}
	got := RopeRowsToGGUF(x, 2, 1)
	if want := []float32{0, 2, 1, 3, 4, 6, 5, 7}; !slices.Equal(got, want) {
		t.Fatalf("to GGUF: %v, want %v", got, want)
	}
	r := rand.New(rand.NewPCG(3, 4))
	y := make([]float32, 4*8*5) // 4 heads of 8, 5 columns
	for i := range y {
		y[i] = r.Float32()
	}
	if back := RopeRowsFromGGUF(RopeRowsToGGUF(y, 4, 5), 4, 5); !slices.Equal(back, y) {
		t.Error("RopeRowsFromGGUF does not undo RopeRowsToGGUF")
	}
}

func TestGGUFNames(t *testing.T) {
	for gg, hf := range map[string]string{
		"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight", "output.weight": "lm_head.weight",
		"blk.0.attn_q.weight": "model.layers.0.self_attn.q_proj.weight", "blk.11.attn_k.bias": "model.layers.11.self_attn.k_proj.bias",
		"blk.3.ffn_down.weight": "model.layers.3.mlp.down_proj.weight", "blk.2.attn_norm.weight": "model.layers.2.input_layernorm.weight",
		"blk.2.ffn_norm.weight": "model.layers.2.post_attention_layernorm.weight",
	} {
		if got, ok := hfName(gg); !ok || got != hf {
			t.Errorf("hfName(%q) = %q, %v; want %q", gg, got, ok, hf)
		}
		if got, ok := ggufName(hf); !ok || got != gg {
			t.Errorf("ggufName(%q) = %q, %v; want %q", hf, got, ok, gg)
		}
	}
	for _, bad := range []string{"blk.x.attn_q.weight", "blk.01.attn_q.weight", "blk.0.attn_qkv.weight", "token_embd", "blk.-1.attn_q.weight", "ffn_gate_exps.weight"} {
		if got, ok := hfName(bad); ok {
			t.Errorf("hfName(%q) = %q, want refused", bad, got)
		}
	}
}

// llamaGGUF writes a one-layer llama GGUF file with the given metadata edits (a nil
// value deletes the key) and returns its path.
func llamaGGUF(t *testing.T, edit map[string]any) string {
	t.Helper()
	kvs := []GGUFKV{
		{"general.architecture", "llama"}, {"llama.block_count", uint32(1)}, {"llama.embedding_length", uint32(32)},
		{"llama.feed_forward_length", uint32(32)}, {"llama.attention.head_count", uint32(2)}, {"llama.attention.head_count_kv", uint32(1)},
		{"llama.context_length", uint32(64)}, {"llama.attention.layer_norm_rms_epsilon", float32(1e-5)},
		{"llama.rope.freq_base", float32(500000)},
		{"tokenizer.ggml.model", "gpt2"}, {"tokenizer.ggml.pre", "llama-bpe"}, {"tokenizer.ggml.tokens", []string{"a", "b", "ab", "<s>"}},
		{"tokenizer.ggml.token_type", []int32{1, 1, 1, 3}}, {"tokenizer.ggml.merges", []string{"a b"}},
		{"tokenizer.ggml.bos_token_id", uint32(3)}, {"tokenizer.ggml.eos_token_id", uint32(2)},
	}
	var out []GGUFKV
	for _, kv := range kvs {
		if v, ok := edit[kv.Key]; ok {
			if v == nil {
				continue
			}
			kv.Value = v
		}
		out = append(out, kv)
	}
	for k, v := range edit {
		if !slices.ContainsFunc(kvs, func(kv GGUFKV) bool { return kv.Key == k }) && v != nil {
			out = append(out, GGUFKV{k, v})
		}
	}
	path := filepath.Join(t.TempDir(), "m.gguf")
	if err := WriteGGUF(path, out, []GGUFWriteTensor{{Name: "token_embd.weight", Type: GGMLF32, Shape: []int{4, 32}, Data: make([]float32, 128)}}); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestGGUFLlamaConfig(t *testing.T) {
	m, err := OpenGGUFModel(llamaGGUF(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	c := m.Config
	want := Config{Arch: ArchLlama, ModelType: "llama", HiddenSize: 32, NumLayers: 1, NumHeads: 2, NumKVHeads: 1, HeadDim: 16,
		IntermediateSize: 32, VocabSize: 4, RMSNormEps: float64(float32(1e-5)), RopeTheta: 500000, MaxPositionEmbeddings: 64,
		TieWordEmbeddings: true, BOSTokenID: 3, EOSTokenIDs: []int{2}, TorchDType: "F32"}
	if !reflect.DeepEqual(*c, want) {
		t.Errorf("config\n got %+v\nwant %+v", *c, want)
	}
	m.Close()

	lin, err := OpenGGUFModel(llamaGGUF(t, map[string]any{"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": float32(4)}))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(lin.Config.RopeScaling, &RopeScaling{Type: "linear", Factor: 4}) {
		t.Errorf("linear scaling: %+v", lin.Config.RopeScaling)
	}
	lin.Close()

	for _, c := range []struct {
		edit map[string]any
		want error
		says string
	}{
		{map[string]any{"general.architecture": "qwen2"}, ErrUnsupported, `general.architecture "qwen2"`},
		{map[string]any{"general.architecture": nil}, ErrMissingField, "general.architecture"},
		{map[string]any{"llama.rope.freq_base": nil}, ErrMissingField, "llama.rope.freq_base"},
		{map[string]any{"llama.block_count": nil}, ErrMissingField, "llama.block_count"},
		{map[string]any{"llama.block_count": "one"}, ErrBadGGUF, "llama.block_count"},
		{map[string]any{"llama.attention.head_count_kv": uint32(3)}, ErrBadConfig, "head_count_kv"},
		{map[string]any{"llama.attention.layer_norm_rms_epsilon": float32(0)}, ErrBadConfig, "layer_norm_rms_epsilon"},
		{map[string]any{"llama.rope.dimension_count": uint32(8)}, ErrUnsupported, "llama.rope.dimension_count 8"},
		{map[string]any{"llama.rope.scaling.type": "yarn"}, ErrUnsupported, `"yarn"`},
		{map[string]any{"llama.embedding_length": uint32(0)}, ErrBadConfig, "llama.embedding_length"},
		{map[string]any{"tokenizer.ggml.tokens": nil}, ErrMissingField, "tokenizer.ggml.tokens"},
		{map[string]any{"tokenizer.ggml.bos_token_id": uint32(9)}, ErrBadConfig, "bos_token_id 9"},
		{map[string]any{"tokenizer.ggml.token_type": []int32{1}}, ErrBadConfig, "token_type"},
		{map[string]any{"tokenizer.ggml.tokens": []int32{1, 2}}, ErrBadGGUF, "tokenizer.ggml.tokens[0]"},
	} {
		_, err := OpenGGUFModel(llamaGGUF(t, c.edit))
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%v: %v, want %v naming %q", c.edit, err, c.want, c.says)
		}
	}
	// A tensor that is not part of a llama model.
	path := filepath.Join(t.TempDir(), "extra.gguf")
	g, _ := OpenGGUF(llamaGGUF(t, nil))
	var kvs []GGUFKV
	for _, k := range g.Keys() {
		v, _ := g.Value(k)
		kvs = append(kvs, GGUFKV{k, plainValue(v)})
	}
	g.Close()
	if err := WriteGGUF(path, kvs, []GGUFWriteTensor{{Name: "blk.0.ffn_gate_exps.weight", Type: GGMLF32, Shape: []int{2}, Data: []float32{1, 2}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenGGUFModel(path); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "ffn_gate_exps") {
		t.Errorf("an MoE tensor: %v", err)
	}
}

// plainValue turns a read metadata value back into one WriteGGUF takes.
func plainValue(v any) any {
	switch x := v.(type) {
	case uint64:
		return uint32(x)
	case float64:
		return float32(x)
	case []any:
		switch x[0].(type) {
		case string:
			out := make([]string, len(x))
			for i, e := range x {
				out[i] = e.(string)
			}
			return out
		default:
			out := make([]int32, len(x))
			for i, e := range x {
				out[i] = int32(e.(int64))
			}
			return out
		}
	}
	return v
}
