// Command dumpview prefills a model on the first N tokens of a text and dumps one layer's
// view (queries, keys, values, RoPE) with eviction.DumpLayerView, for
// scripts/score_goldens.py to score with kvpress's formulas on the GPU machine.
//
//	go run ./scripts/dumpview --model models/lukv-tiny --text FILE --tokens 256 --layer 3 --out view.safetensors
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/lukv/lukv/backend/cpu"
	"github.com/lukv/lukv/eviction"
	"github.com/lukv/lukv/model"
	"github.com/lukv/lukv/tokenizer"
)

func main() {
	dir := flag.String("model", "models/lukv-tiny", "checkpoint folder")
	text := flag.String("text", "", "text file (a calibration .json's context is fine as plain text)")
	n := flag.Int("tokens", 256, "tokens to prefill")
	layer := flag.Int("layer", 3, "layer to dump")
	out := flag.String("out", "view.safetensors", "output file")
	flag.Parse()
	if err := run(*dir, *text, *n, *layer, *out); err != nil {
		fmt.Fprintln(os.Stderr, "dumpview:", err)
		os.Exit(1)
	}
}

func run(dir, textPath string, n, layer int, out string) error {
	data, err := os.ReadFile(textPath)
	if err != nil {
		return err
	}
	m, err := model.Load(dir, cpu.New())
	if err != nil {
		return err
	}
	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return err
	}
	ids := tok.Encode(string(data), true)
	if len(ids) < n {
		return fmt.Errorf("%s has %d tokens, want %d", textPath, len(ids), n)
	}
	var dumpErr error
	c := eviction.NewCollector(m, eviction.KNormScorer{})
	c.OnView = func(v *eviction.LayerView) {
		if v.Layer == layer {
			dumpErr = eviction.DumpLayerView(out, v)
		}
	}
	if _, err := m.Forward(context.Background(), ids[:n], 0, m.NewCache(n), model.ForwardOptions{Observer: c}); err != nil {
		return err
	}
	return dumpErr
}
