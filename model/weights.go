package model

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/loader"
	"github.com/lukv/lukv/quant"
)

// LoadOptions are the options of LoadWith and FromCheckpointWith. The zero value loads
// as Load does.
type LoadOptions struct {
	// Weights is the format the matrices are held in (loader.WeightsAuto when empty):
	//   - auto: as stored where the backend keeps that type (bf16 on a backend whose
	//     KeepsBF16 is true, int8 for a GGUF Q8_0 projection), float32 otherwise;
	//   - f32: every matrix widened to float32;
	//   - bf16: every matrix as bf16 (float32 checkpoints are rounded to bf16); a backend
	//     without backend.BF16Weights gets the rounded values as float32;
	//   - int8: the linear projections (see Quantized) quantized with package quant; the
	//     embedding and LM head as auto. A backend without backend.Int8Weights gets the
	//     dequantized values as float32 (the int8 model's numbers, float32 memory).
	Weights loader.WeightFormat
	// Log receives one line per fallback (a format the backend cannot hold); nil: stderr.
	Log io.Writer
}

// Quantized says whether int8 weights quantize the tensor of that (Hugging Face) name:
// the seven linear projections of every layer (q, k, v, o, gate, up, down), which hold
// almost all the weights and are read once per decode step through MatMul. The embedding
// and the LM head stay in the checkpoint's type: the embedding is read a row per token
// through the backends' float path (Embed), and the LM head's error lands directly in the
// logits with no normalisation after it (and for tied models it is the embedding).
func Quantized(name string) bool {
	for _, p := range []string{".q_proj.weight", ".k_proj.weight", ".v_proj.weight", ".o_proj.weight",
		".gate_proj.weight", ".up_proj.weight", ".down_proj.weight"} {
		if strings.HasPrefix(name, "model.layers.") && strings.HasSuffix(name, p) {
			return true
		}
	}
	return false
}

// LoadWith is Load with options.
func LoadWith(dir string, b backend.Backend, opt LoadOptions) (*Model, error) {
	if loader.IsGGUF(dir) {
		g, err := loader.OpenGGUFModel(dir)
		if err != nil {
			return nil, err
		}
		defer g.Close()
		return FromCheckpointWith(g.Config, g, b, opt)
	}
	cfg, err := loader.LoadConfigDir(dir)
	if err != nil {
		return nil, err
	}
	ck, err := loader.OpenCheckpoint(dir)
	if err != nil {
		return nil, err
	}
	defer ck.Close()
	return FromCheckpointWith(cfg, ck, b, opt)
}

// weightLoader hands one checkpoint's matrices to a backend in the format LoadOptions ask for.
type weightLoader struct {
	ck     loader.Weights
	b      backend.Backend
	format loader.WeightFormat
	log    io.Writer
	logged sync.Map // fallback messages already written
}

func newWeightLoader(ck loader.Weights, b backend.Backend, opt LoadOptions) (*weightLoader, error) {
	f, err := loader.ParseWeightFormat(string(opt.Weights))
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	w := &weightLoader{ck: ck, b: b, format: f, log: opt.Log}
	if w.log == nil {
		w.log = os.Stderr
	}
	return w, nil
}

// fallback writes msg once.
func (w *weightLoader) fallback(msg string) {
	if _, done := w.logged.LoadOrStore(msg, true); !done {
		fmt.Fprintf(w.log, "[lukv] %s\n", msg)
	}
}

// formatOf is the format the named matrix is held in.
func (w *weightLoader) formatOf(name string) loader.WeightFormat {
	stored, ok := loader.StoredFormat(w.ck, name)
	if !ok {
		stored = loader.WeightsF32
	}
	f := w.format
	if f == loader.WeightsInt8 && !Quantized(name) {
		f = loader.WeightsAuto
	}
	if f != loader.WeightsAuto {
		return f
	}
	switch stored {
	case loader.WeightsBF16:
		if keep, ok := w.b.(backend.BF16Weights); ok && keep.KeepsBF16() {
			return loader.WeightsBF16
		}
	case loader.WeightsInt8:
		if Quantized(name) {
			return loader.WeightsInt8
		}
	}
	return loader.WeightsF32
}

// matrix loads the named [rows, cols] matrix.
func (w *weightLoader) matrix(name string, rows, cols int) (backend.Tensor, error) {
	switch w.formatOf(name) {
	case loader.WeightsBF16:
		return w.bf16(name, rows, cols)
	case loader.WeightsInt8:
		return w.int8(name, rows, cols)
	}
	data, err := w.ck.Expect(name, rows, cols)
	if err != nil {
		return nil, err
	}
	return w.b.Weight(data, rows, cols)
}

func (w *weightLoader) bf16(name string, rows, cols int) (backend.Tensor, error) {
	keep, canKeep := w.b.(backend.BF16Weights)
	if raw, ok := w.ck.(interface {
		BF16(name string, shape ...int) ([]uint16, bool, error)
	}); ok && canKeep {
		data, ok, err := raw.BF16(name, rows, cols)
		if err != nil {
			return nil, err
		}
		if ok {
			return keep.WeightBF16(data, rows, cols)
		}
	}
	data, err := w.ck.Expect(name, rows, cols)
	if err != nil {
		return nil, err
	}
	if !canKeep {
		w.fallback(fmt.Sprintf("the %s backend takes no bf16 matrices (backend.BF16Weights): it is given the bf16-rounded values as float32", w.b.Name()))
		for i, x := range data {
			data[i] = loader.BF16ToFloat32(loader.Float32ToBF16(x))
		}
		return w.b.Weight(data, rows, cols)
	}
	bits := make([]uint16, len(data))
	for i, x := range data {
		bits[i] = loader.Float32ToBF16(x)
	}
	return keep.WeightBF16(bits, rows, cols)
}

func (w *weightLoader) int8(name string, rows, cols int) (backend.Tensor, error) {
	data, err := w.ck.Expect(name, rows, cols)
	if err != nil {
		return nil, err
	}
	q, err := quant.Quantize(data, rows, cols)
	if err != nil {
		return nil, fmt.Errorf("model: tensor %q: %w", name, err)
	}
	if ib, ok := w.b.(backend.Int8Weights); ok {
		return ib.WeightInt8(q)
	}
	w.fallback(fmt.Sprintf("the %s backend has no int8 kernels: it holds the int8 weights dequantized to float32 (the int8 model's numbers, float32 memory)", w.b.Name()))
	return w.b.Weight(q.Dequantize(), rows, cols)
}
