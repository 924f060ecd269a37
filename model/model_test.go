package model

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/backend/cpu"
	"github.com/lukv/lukv/loader"
)

// oomBackend is a CPU backend whose allocations fail once a budget is spent, as a full
// GPU's do.
type oomBackend struct {
	*cpu.Backend
	left int
}

func (b *oomBackend) Alloc(rows, cols int) backend.Tensor {
	if b.left -= rows * cols; b.left < 0 {
		panic(fmt.Errorf("alloc [%d, %d]: %w", rows, cols, backend.ErrOutOfMemory))
	}
	return b.Backend.Alloc(rows, cols)
}

func TestForwardOutOfMemoryIsAnError(t *testing.T) {
	b := &oomBackend{Backend: cpu.New(), left: 1 << 30}
	m, err := Load(filepath.Join("..", "tests", "testdata", "models", "llama3"), b)
	if err != nil {
		t.Fatal(err)
	}
	b.left = 1000 // less than the activations of a 40-token forward pass
	_, err = m.Forward(context.Background(), make([]int, 40), 0, m.NewCache(40), ForwardOptions{})
	if !errors.Is(err, backend.ErrOutOfMemory) {
		t.Fatalf("error %v, want one wrapping ErrOutOfMemory", err)
	}
	b.left = 1 << 30
	if _, err := m.Forward(context.Background(), make([]int, 40), 0, m.NewCache(40), ForwardOptions{}); err != nil {
		t.Fatalf("after memory is back: %v", err)
	}
}

// withConfig copies the llama3 test checkpoint into a temporary folder with its
// config.json edited.
func withConfig(t *testing.T, edit func(m map[string]any)) string {
	t.Helper()
	src := filepath.Join("..", "tests", "testdata", "models", "llama3")
	dir := t.TempDir()
	for _, f := range []string{"model.safetensors", "tokenizer.json"} {
		if err := os.Symlink(mustAbs(t, filepath.Join(src, f)), filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(filepath.Join(src, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	if b, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func mustAbs(t *testing.T, p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// A config.json whose layer count disagrees with the weights is refused, naming both.
func TestLoadLayerCountMismatch(t *testing.T) {
	for _, n := range []int{1, 3} {
		dir := withConfig(t, func(m map[string]any) { m["num_hidden_layers"] = n })
		_, err := Load(dir, cpu.New())
		if !errors.Is(err, loader.ErrBadConfig) {
			t.Fatalf("num_hidden_layers %d: error %v, want ErrBadConfig", n, err)
		}
		if want := fmt.Sprintf("num_hidden_layers is %d but the weights have 2 layers", n); !strings.Contains(err.Error(), want) {
			t.Errorf("error %q should say %q", err, want)
		}
	}
}

// A gelu config is refused at load, naming the field.
func TestLoadRefusesGelu(t *testing.T) {
	dir := withConfig(t, func(m map[string]any) { m["hidden_act"] = "gelu" })
	if _, err := Load(dir, cpu.New()); !errors.Is(err, loader.ErrUnsupported) || !strings.Contains(err.Error(), `hidden_act "gelu"`) {
		t.Fatalf("error %v, want ErrUnsupported naming hidden_act", err)
	}
}

// Llama's attention_bias gives o_proj a bias too: the model must ask for it.
func TestLoadLlamaAttentionBiasNeedsOutputBias(t *testing.T) {
	dir := withConfig(t, func(m map[string]any) { m["attention_bias"] = true })
	_, err := Load(dir, cpu.New())
	if !errors.Is(err, loader.ErrMissingTensor) || !strings.Contains(err.Error(), "q_proj.bias") {
		t.Fatalf("error %v, want a missing q_proj.bias", err)
	}
}

// The sliding window: within it nothing changes; past it the CPU backend attends over
// the window only (logits change), and a backend without windowed attention refuses.
func TestSlidingWindowForward(t *testing.T) {
	ids := make([]int, 40)
	for i := range ids {
		ids[i] = (i * 37) % 500
	}
	logits := func(window any, b backend.Backend) ([]float32, error) {
		dir := withConfig(t, func(m map[string]any) {
			m["architectures"] = []string{"MistralForCausalLM"}
			m["sliding_window"] = window
		})
		m, err := Load(dir, b)
		if err != nil {
			t.Fatal(err)
		}
		return m.Forward(context.Background(), ids, 0, m.NewCache(len(ids)), ForwardOptions{AllLogits: true})
	}
	full, err := logits(nil, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	wide, err := logits(40, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	if e := relErr(wide, full); e != 0 {
		t.Errorf("window 40 over 40 tokens differs from full attention by %g", e)
	}
	narrow, err := logits(8, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	V := len(full) / len(ids)
	if e := relErr(narrow[:8*V], full[:8*V]); e != 0 {
		t.Errorf("window 8: the first 8 rows differ from full attention by %g", e)
	}
	if e := relErr(narrow[39*V:], full[39*V:]); e < 1e-3 {
		t.Errorf("window 8: the last row is the full-attention one (rel diff %g)", e)
	}
	if _, err := logits(8, noWindow{cpu.New()}); !errors.Is(err, ErrContextTooLong) {
		t.Errorf("backend without windowed attention: %v, want ErrContextTooLong", err)
	}
}

// noWindow hides the CPU backend's AttentionWindow.
type noWindow struct{ backend.Backend }

func relErr(got, want []float32) float64 {
	var d, m float64
	for i := range got {
		d = math.Max(d, math.Abs(float64(got[i]-want[i])))
		m = math.Max(m, math.Abs(float64(want[i])))
	}
	return d / m
}

// The CPU backend keeping bf16 weights as bf16 computes the same logits, bit for bit, as
// the widened weights, holding its matrices in half the bytes.
func TestKeepBF16SameLogits(t *testing.T) {
	dir := filepath.Join("..", "models", "lukv-tiny")
	ids := []int{0, 17, 400, 23, 9, 1200, 77, 5}
	run := func(b *cpu.Backend) ([]float32, *Model) {
		m, err := Load(dir, b)
		if err != nil {
			t.Fatal(err)
		}
		out, err := m.Forward(context.Background(), ids, 0, m.NewCache(len(ids)), ForwardOptions{AllLogits: true})
		if err != nil {
			t.Fatal(err)
		}
		return out, m
	}
	want, _ := run(&cpu.Backend{WidenBF16: true})
	got, m := run(cpu.New())
	if !slices.Equal(got, want) {
		t.Errorf("logits with bf16-kept weights differ (max relative %g)", relErr(got, want))
	}
	for _, w := range []backend.Tensor{m.Embed, m.Layers[0].Wq, m.Layers[7].Wdown} {
		if d := w.(*cpu.Mat).DType(); d != "bfloat16" {
			t.Errorf("a weight matrix is kept as %s", d)
		}
	}
	if d := m.Norm.(*cpu.Mat).DType(); d != "float32" {
		t.Errorf("the final norm is kept as %s, want float32 (vectors are widened)", d)
	}
}

// RoPE scalings reach the forward pass: degenerate settings reproduce plain RoPE exactly,
// real ones change the logits (dynamic only past max_position_embeddings).
func TestRoPEScalingInForward(t *testing.T) {
	ids := make([]int, 40)
	for i := range ids {
		ids[i] = (i*53 + 7) % 500
	}
	logits := func(rope map[string]any, maxPos int) []float32 {
		t.Helper()
		dir := withConfig(t, func(m map[string]any) {
			m["rope_parameters"] = rope
			m["max_position_embeddings"] = maxPos
		})
		m, err := Load(dir, cpu.New())
		if err != nil {
			t.Fatal(err)
		}
		out, err := m.Forward(context.Background(), ids, 0, m.NewCache(len(ids)), ForwardOptions{AllLogits: true})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	base := map[string]any{"rope_type": "default", "rope_theta": 10000.0}
	plain := logits(base, 256)
	with := func(kv ...any) map[string]any {
		m := map[string]any{"rope_theta": 10000.0}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	for _, c := range []struct {
		name   string
		rope   map[string]any
		maxPos int
		same   bool
	}{
		{"linear factor 1", with("rope_type", "linear", "factor", 1.0), 256, true},
		{"linear factor 4", with("rope_type", "linear", "factor", 4.0), 256, false},
		{"yarn factor 1, attention factor 1", with("rope_type", "yarn", "factor", 1.0, "attention_factor", 1.0), 256, true},
		{"yarn factor 1, attention factor 1.5", with("rope_type", "yarn", "factor", 1.0, "attention_factor", 1.5), 256, false},
		{"yarn factor 4", with("rope_type", "yarn", "factor", 4.0, "original_max_position_embeddings", 64), 256, false},
		{"dynamic within the context", with("rope_type", "dynamic", "factor", 4.0), 256, true},
		{"dynamic past the context", with("rope_type", "dynamic", "factor", 4.0), 32, false},
	} {
		got := logits(c.rope, c.maxPos)
		if e := relErr(got, plain); (e == 0) != c.same {
			t.Errorf("%s: relative difference from plain RoPE %g, want same=%v", c.name, e, c.same)
		}
	}
}
