package model

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/backend/cpu"
	"github.com/lukv/lukv/loader"
	"github.com/lukv/lukv/quant"
	"github.com/lukv/lukv/tokenizer"
)

// int8Backend is a CPU backend with backend.Int8Weights: it records the int8 matrices it
// is given and multiplies with their dequantized values (a stand-in for real int8 kernels).
type int8Backend struct {
	*cpu.Backend
	got map[*cpu.Mat]*quant.Int8
}

func (b *int8Backend) WeightInt8(m *quant.Int8) (backend.Tensor, error) {
	t, err := b.Weight(m.Dequantize(), m.Rows, m.Cols)
	if err != nil {
		return nil, err
	}
	b.got[t.(*cpu.Mat)] = m
	return t, nil
}

// convertTiny writes the default model as a GGUF file of typ.
func convertTiny(t *testing.T, typ loader.GGMLType) string {
	t.Helper()
	dir := filepath.Join("..", "models", "lukv-tiny")
	js, err := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	vocab, err := tokenizer.GGUFVocabFromJSON(js, "tokenizer.json")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "tiny.gguf")
	if err := loader.ConvertToGGUF(dir, out, typ, vocab); err != nil {
		t.Fatal(err)
	}
	return out
}

var tinyIDs = []int{0, 17, 400, 23, 9, 1200, 77, 5}

func logitsWith(t *testing.T, path string, b backend.Backend, opt LoadOptions) ([]float32, *Model) {
	t.Helper()
	m, err := LoadWith(path, b, opt)
	if err != nil {
		t.Fatal(err)
	}
	out, err := m.Forward(context.Background(), tinyIDs, 0, m.NewCache(len(tinyIDs)), ForwardOptions{AllLogits: true})
	if err != nil {
		t.Fatal(err)
	}
	return out, m
}

// int8 weights reach a backend with int8 kernels as package quant's matrices (the seven
// projections of every layer, nothing else); a backend without them computes the same
// logits from the dequantized values and says so once.
func TestInt8Weights(t *testing.T) {
	dir := filepath.Join("..", "models", "lukv-tiny")
	ib := &int8Backend{Backend: cpu.New(), got: map[*cpu.Mat]*quant.Int8{}}
	var quiet, fallback bytes.Buffer
	got, m := logitsWith(t, dir, ib, LoadOptions{Weights: loader.WeightsInt8, Log: &quiet})
	if want := 7 * m.Config.NumLayers; len(ib.got) != want {
		t.Fatalf("%d int8 matrices, want %d", len(ib.got), want)
	}
	for _, l := range m.Layers {
		for _, w := range []backend.Tensor{l.Wq, l.Wk, l.Wv, l.Wo, l.Wgate, l.Wup, l.Wdown} {
			if ib.got[w.(*cpu.Mat)] == nil {
				t.Fatal("a projection was not handed over as int8")
			}
		}
	}
	if ib.got[m.Embed.(*cpu.Mat)] != nil || ib.got[m.LMHead.(*cpu.Mat)] != nil {
		t.Error("the embedding or LM head was quantized")
	}
	if quiet.Len() != 0 {
		t.Errorf("log with int8 kernels: %q", quiet.String())
	}
	same, _ := logitsWith(t, dir, noInt8{cpu.New()}, LoadOptions{Weights: loader.WeightsInt8, Log: &fallback})
	if !slices.Equal(same, got) {
		t.Errorf("the dequantizing fallback's logits differ (max relative %g)", relErr(same, got))
	}
	if n := strings.Count(fallback.String(), "\n"); n != 1 || !strings.Contains(fallback.String(), "no int8 kernels") {
		t.Errorf("fallback log %q, want one line saying the backend has no int8 kernels", fallback.String())
	}
	// The int8 model is close to the float one, not equal to it.
	want, _ := logitsWith(t, dir, cpu.New(), LoadOptions{Weights: loader.WeightsF32})
	if e := relErr(got, want); e == 0 || e > 0.03 {
		t.Errorf("int8 logits differ from f32's by %g of the largest logit, want (0, 3%%]", e)
	}
}

// Each format holds the matrices it names on the CPU backend, whatever the backend's
// WidenBF16 option says, except auto, which follows it.
func TestWeightFormats(t *testing.T) {
	dir := filepath.Join("..", "models", "lukv-tiny") // stored as bf16
	for _, c := range []struct {
		format loader.WeightFormat
		keep   bool
		want   string
	}{
		{loader.WeightsAuto, false, "float32"},
		{loader.WeightsAuto, true, "bfloat16"},
		{loader.WeightsF32, true, "float32"},
		{loader.WeightsBF16, false, "bfloat16"},
		{loader.WeightsInt8, true, "bfloat16"}, // the embedding, not quantized, as stored
	} {
		m, err := LoadWith(dir, &cpu.Backend{WidenBF16: !c.keep}, LoadOptions{Weights: c.format, Log: &bytes.Buffer{}})
		if err != nil {
			t.Fatal(err)
		}
		if d := m.Embed.(*cpu.Mat).DType(); d != c.want {
			t.Errorf("%s keeping bf16 %v: embedding held as %s, want %s", c.format, c.keep, d, c.want)
		}
	}
	if _, err := LoadWith(dir, cpu.New(), LoadOptions{Weights: "int4"}); err == nil || !strings.Contains(err.Error(), "int4") {
		t.Errorf("weights int4: %v, want an error naming it", err)
	}
}

// bf16 on a float32 checkpoint rounds every matrix to bf16: the logits are those of
// the checkpoint with its matrices rounded.
func TestBF16RoundsFloat32Checkpoint(t *testing.T) {
	dir := filepath.Join("..", "models", "lukv-tiny")
	f32 := convertTiny(t, loader.GGMLF32)
	want, _ := logitsWith(t, dir, cpu.New(), LoadOptions{}) // bf16 values, widened
	got, m := logitsWith(t, f32, cpu.New(), LoadOptions{Weights: loader.WeightsBF16})
	if !slices.Equal(got, want) {
		t.Errorf("logits differ (max relative %g)", relErr(got, want))
	}
	if d := m.Layers[0].Wq.(*cpu.Mat).DType(); d != "bfloat16" {
		t.Errorf("q_proj held as %s", d)
	}
}

// The saved form of int8 weights is a GGUF Q8_0 file: loading it as int8 gives exactly
// the int8 values quantizing the safetensors checkpoint at load gives (Q8_0's float16
// scale is then the only difference: the values differ by at most that rounding).
func TestInt8FromQ8_0File(t *testing.T) {
	dir := filepath.Join("..", "models", "lukv-tiny")
	q8 := convertTiny(t, loader.GGMLQ8_0)
	g, err := loader.OpenGGUFModel(q8)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	fromFile := &int8Backend{Backend: cpu.New(), got: map[*cpu.Mat]*quant.Int8{}}
	mf, err := FromCheckpointWith(g.Config, g, fromFile, LoadOptions{}) // auto: Q8_0 is int8
	if err != nil {
		t.Fatal(err)
	}
	atLoad := &int8Backend{Backend: cpu.New(), got: map[*cpu.Mat]*quant.Int8{}}
	ml, err := LoadWith(dir, atLoad, LoadOptions{Weights: loader.WeightsInt8})
	if err != nil {
		t.Fatal(err)
	}
	if len(fromFile.got) != 7*mf.Config.NumLayers {
		t.Fatalf("auto on a Q8_0 file: %d int8 matrices, want %d", len(fromFile.got), 7*mf.Config.NumLayers)
	}
	name := "model.layers.3.mlp.down_proj.weight"
	stored, err := g.Expect(name, mf.Config.HiddenSize, mf.Config.IntermediateSize)
	if err != nil {
		t.Fatal(err)
	}
	qf, ql := fromFile.got[mf.Layers[3].Wdown.(*cpu.Mat)], atLoad.got[ml.Layers[3].Wdown.(*cpu.Mat)]
	if !slices.Equal(qf.Dequantize(), stored) {
		t.Error("int8 weights from a Q8_0 file are not the file's values")
	}
	if !slices.Equal(qf.Q, ql.Q) {
		t.Error("int8 values from the Q8_0 file differ from quantizing at load")
	}
	for i := range qf.Scales {
		if d := qf.Scales[i] - ql.Scales[i]; d > ql.Scales[i]/1024 || -d > ql.Scales[i]/1024 {
			t.Fatalf("scale %d: %g from the file, %g at load: more than float16 rounding apart", i, qf.Scales[i], ql.Scales[i])
		}
	}
}

// noInt8 is the CPU backend without its int8 kernels: the method below shadows the embedded
// WeightInt8 with another signature, so noInt8 is not a backend.Int8Weights.
type noInt8 struct{ *cpu.Backend }

func (noInt8) WeightInt8() {}
