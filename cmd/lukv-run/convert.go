package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/lukv/lukv/loader"
	"github.com/lukv/lukv/memplan"
	"github.com/lukv/lukv/models"
	"github.com/lukv/lukv/tokenizer"
)

// runConvert writes a Hugging Face Llama checkpoint as a GGUF file.
func runConvert(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("convert", flag.ContinueOnError)
	fs.SetOutput(stderr)
	to := fs.String("to", "gguf", "output format (gguf)")
	modelFlag := fs.String("model", "", "Hugging Face checkpoint folder; empty: the embedded default model, "+models.DefaultName)
	typ := fs.String("type", "f16", "weight type of the matrices: f32, f16, bf16, q8_0, q4_k or q6_k (norms stay f32; k-quant matrices whose rows are not whole 256-value blocks are written q8_0)")
	out := fs.String("out", "", "the GGUF file to write")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: lukv-run convert --to gguf [--model DIR] [--type f32|f16|bf16|q8_0|q4_k|q6_k] --out FILE.gguf\n\nWrites a Llama checkpoint as a llama GGUF file (llama.cpp's tensor names and RoPE row\nlayout, the tokenizer in the file) that lukv and llama.cpp open.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("convert: unexpected argument %q", fs.Arg(0))
	}
	if *to != "gguf" {
		return fmt.Errorf("--to %q: the only output format is gguf", *to)
	}
	if *out == "" {
		return errors.New("convert: --out FILE.gguf is required")
	}
	gt, err := loader.ParseGGMLType(*typ)
	if err != nil {
		return fmt.Errorf("--type: %w", err)
	}
	dir, err := modelDir(*modelFlag)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return err
	}
	vocab, err := tokenizer.GGUFVocabFromJSON(data, filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return err
	}
	if err := loader.ConvertToGGUF(dir, *out, gt, vocab); err != nil {
		return err
	}
	st, err := os.Stat(*out)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s (%s weights, %s)\n", *out, gt, memplan.FormatSize(st.Size()))
	return nil
}
