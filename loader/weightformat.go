package loader

import (
	"fmt"
	"strings"
)

// WeightFormat is the element type a model holds its weight matrices in (lukv-run's
// --weights), as opposed to the type a file stores them in.
type WeightFormat string

// The weight formats. The zero value is WeightsAuto.
const (
	// WeightsAuto holds each matrix in the type the checkpoint stores it in where the
	// backend can (bf16 stays bf16; a GGUF Q8_0 projection becomes int8), float32 otherwise.
	WeightsAuto WeightFormat = "auto"
	WeightsF32  WeightFormat = "f32"
	WeightsBF16 WeightFormat = "bf16"
	// WeightsInt8 quantizes the linear projections to package quant's int8 format at load.
	WeightsInt8 WeightFormat = "int8"
)

// ParseWeightFormat reads a --weights value: auto, f32, bf16 or int8 (any case; "" is auto).
func ParseWeightFormat(s string) (WeightFormat, error) {
	switch f := WeightFormat(strings.ToLower(s)); f {
	case "":
		return WeightsAuto, nil
	case WeightsAuto, WeightsF32, WeightsBF16, WeightsInt8:
		return f, nil
	}
	return "", fmt.Errorf("weight format %q: want auto, f32, bf16 or int8", s)
}

// StoredFormat is the format a tensor is stored in, as a WeightFormat: WeightsBF16 for
// bf16, WeightsInt8 for GGUF Q8_0 (exactly package quant's int8 values with a float16
// scale), WeightsF32 for everything else (f32, f16). ok is false for a missing tensor or
// weights that cannot tell.
func StoredFormat(w Weights, name string) (f WeightFormat, ok bool) {
	switch w := w.(type) {
	case *Checkpoint:
		info, ok := w.Info(name)
		if !ok {
			return "", false
		}
		if info.DType == BF16 {
			return WeightsBF16, true
		}
		return WeightsF32, true
	case *GGUFModel:
		gname, ok := w.hf[name]
		if !ok {
			return "", false
		}
		t, _ := w.File.Tensor(gname)
		switch t.Type {
		case GGMLBF16:
			return WeightsBF16, true
		case GGMLQ8_0:
			return WeightsInt8, true
		}
		return WeightsF32, true
	}
	return "", false
}
