package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/lukv/lukv/bench"
	"github.com/lukv/lukv/eviction"
	"github.com/lukv/lukv/loader"
	"github.com/lukv/lukv/models"
)

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	modelFlag := fs.String("model", "", "Hugging Face checkpoint folder; empty: the embedded default model, "+models.DefaultName)
	device := fs.String("device", "cpu", "cpu or cuda")
	threads := fs.Int("threads", 0, "CPU threads (0: all cores)")
	weightsF := addWeightsFlag(fs)
	contextsFlag := fs.String("contexts", "", "context lengths to measure, in tokens (default: those of 8192, 32768 and 65536 that fit the model's context with the decode steps, else the largest power of two that does)")
	ratiosFlag := fs.String("compression", "0.5,0.8,0.9", "compression ratios of the decode rows (each also decoded with the full cache)")
	steps := fs.Int("decode-steps", 32, "timed decode steps per row (after 2 warmup steps)")
	warmup := fs.Int("warmup", 256, "tokens of the warmup prefill (capped at the smallest context)")
	scorerName := fs.String("scorer", "expected-attention", "scorer of the eviction-overhead measurement: "+strings.Join(eviction.ScorerNames(), ", "))
	overRatio := fs.Float64("overhead-ratio", bench.KVTargetRatio, "compression of the eviction-overhead measurement")
	overFlag := fs.String("overhead-contexts", "", "contexts of the eviction-overhead measurement (a second prefill with the scorer); empty: all, none: skip")
	seed := fs.Uint64("seed", 1, "seed of the random token ids and eviction scores")
	jsonOut := fs.String("json", "", "also write everything measured to this JSON file")
	cpuProfile := fs.String("cpuprofile", "", "write a Go CPU profile of the measurements to this file (where the host's time goes)")
	maxSeconds := fs.Float64("max-seconds", 0, "time budget of all measurements after the warmup (0: none); what does not fit is skipped or cut, and says so")
	ctxSeconds := fs.Float64("context-seconds", 0, "time budget of each context (0: none)")
	bandwidth := fs.Float64("bandwidth", bench.DefaultBandwidth, "memory bandwidth of the decode floor, bytes/s")
	peak := fs.Float64("peak-tflops", bench.DefaultPeakTFLOPS, "dense matrix rate the prefill is compared with, TFLOP/s")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: lukv-run bench [flags]\n\nMeasures prefill latency, decode ms/token with the full and the compressed KV cache, the\neviction overhead and the memory, at each context, against the floors: decode at\n(weight bytes + live KV bytes) / bandwidth, prefill at the peak matrix rate. Random token ids\n(seeded) and random eviction scores: speed does not depend on which tokens are kept.\nOn --device cuda the prefill matmuls use the bf16 tensor cores and the KV cache is bf16\n(LUKV_CUDA_TENSOR_CORES=0, LUKV_CUDA_KV=f32: off); with LUKV_CUDA_KERNEL_TIMES=1 every prefill and\ndecode row also gets the GPU time of each kernel (a table per row; timing costs host time,\nso such a run's timings are not the speed).\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench: unexpected argument %q", fs.Arg(0))
	}
	if err := checkThreads(*threads); err != nil {
		return err
	}
	weights, err := weightsF.format()
	if err != nil {
		return err
	}
	positive := func(s string) (int, error) {
		v, err := strconv.Atoi(s)
		if err == nil && v <= 0 {
			err = errors.New("must be > 0")
		}
		return v, err
	}
	ratios, err := splitList("compression", *ratiosFlag, func(s string) (float64, error) {
		v, err := strconv.ParseFloat(s, 64)
		if err == nil && !(v > 0 && v < 1) {
			err = errors.New("want 0 < ratio < 1")
		}
		return v, err
	})
	if err != nil {
		return err
	}
	if *steps < 1 || *warmup < 1 {
		return fmt.Errorf("--decode-steps %d and --warmup %d must be >= 1", *steps, *warmup)
	}
	if !(*overRatio > 0 && *overRatio < 1) {
		return fmt.Errorf("--overhead-ratio %v: want 0 < ratio < 1", *overRatio)
	}
	if !(*bandwidth > 0) || !(*peak > 0) || !(*maxSeconds >= 0) || !(*ctxSeconds >= 0) {
		return errors.New("--bandwidth and --peak-tflops must be > 0, --max-seconds and --context-seconds >= 0")
	}
	scorer, err := eviction.NewScorer(*scorerName)
	if err != nil {
		return fmt.Errorf("--scorer: %w", err)
	}
	// The lengths follow, and are checked against, the model's context before its weights
	// load.
	dir, err := modelDir(*modelFlag)
	if err != nil {
		return err
	}
	cfg, err := loader.ModelConfig(dir)
	if err != nil {
		return err
	}
	contexts := bench.DefaultContexts(cfg.ContextLength(), *steps)
	if *contextsFlag != "" {
		if contexts, err = splitList("contexts", *contextsFlag, positive); err != nil {
			return err
		}
	}
	overContexts := contexts
	switch *overFlag {
	case "":
	case "none":
		overContexts = nil
	default:
		if overContexts, err = splitList("overhead-contexts", *overFlag, positive); err != nil {
			return err
		}
	}
	settings := bench.Settings{Contexts: contexts, Compression: ratios, DecodeSteps: *steps, Warmup: *warmup, Scorer: scorer.Name(),
		OverheadRatio: *overRatio, OverheadContexts: overContexts, Seed: *seed, MaxSeconds: *maxSeconds, ContextSeconds: *ctxSeconds}
	if err := settings.Check(cfg.ContextLength()); err != nil {
		return fmt.Errorf("--contexts (model %s): %w", dir, err)
	}

	start := time.Now()
	fmt.Fprintf(stderr, "bench: loading %s on %s\n", dir, *device)
	_, m, _, err := openModel(*modelFlag, *device, *threads, fastPrecision, weights)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "bench: loaded in %.1f s\n", time.Since(start).Seconds())
	stopProfile, err := startCPUProfile(*cpuProfile)
	if err != nil {
		return err
	}
	defer stopProfile()
	b := &bench.Bench{Model: m, Dir: dir, Settings: settings, Scorer: scorer, Bandwidth: *bandwidth, PeakTFLOPS: *peak, Threads: *threads,
		Command: "lukv-run bench " + strings.Join(args, " "), Version: version, Progress: stderr,
		OnContext: func(r *bench.Report) error { return writeBenchJSON(*jsonOut, r) }}
	rep, err := b.Run(ctx)
	if err != nil {
		return err
	}
	bench.WriteTables(stdout, rep)
	return nil
}

// writeBenchJSON replaces path (empty: nothing) with the report, through a temporary
// file so that a run stopped mid-write leaves the previous report.
func writeBenchJSON(path string, r *bench.Report) error {
	if path == "" {
		return nil
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(js, '\n'), 0o644); err != nil {
		return fmt.Errorf("--json: %w", err)
	}
	return os.Rename(tmp, path)
}
