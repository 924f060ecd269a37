package main

import (
	"flag"
	"fmt"

	"github.com/lukv/lukv/loader"
)

// weightsFlag is --weights, the format the model holds its matrices in; generate, eval,
// bench, profile and serve define it through addWeightsFlag.
type weightsFlag struct{ value *string }

func addWeightsFlag(fs *flag.FlagSet) *weightsFlag {
	return &weightsFlag{fs.String("weights", "auto", "weight matrices held as: auto (the checkpoint's type: bf16 stays bf16, GGUF Q8_0 is int8), f32, bf16, or int8 (the linear projections quantized at load; embedding and LM head as auto)")}
}

// format checks the flag (before anything loads) and returns its format.
func (w *weightsFlag) format() (loader.WeightFormat, error) {
	f, err := loader.ParseWeightFormat(*w.value)
	if err != nil {
		return "", fmt.Errorf("--weights: %w", err)
	}
	return f, nil
}
