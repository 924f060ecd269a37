package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"strings"
	"time"

	"github.com/lukv/lukv/eviction"
	"github.com/lukv/lukv/progress"
	"github.com/lukv/lukv/report"
)

func runProfile(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("profile", flag.ContinueOnError)
	fs.SetOutput(stderr)
	modelFlag := fs.String("model", "", "Hugging Face checkpoint folder; empty: the embedded default model")
	calibration := fs.String("calibration", "", "calibration file: JSON {\"context\": ..., \"questions\": [...]} (required)")
	scorerName := fs.String("scorer", "expected-attention", "scorer whose ranking is profiled: "+strings.Join(eviction.ScorerNames(), ", "))
	sink := fs.Int("sink", 4, "first tokens every head always keeps")
	window := fs.Int("window", 1, "last tokens every head always keeps")
	horizon := fs.Int("horizon", 64, "tokens decoded after each question to measure future attention (>= 1)")
	temperature := fs.Float64("temperature", 0.7, "sampling temperature of that decode")
	seed := fs.Uint64("seed", 0, "random seed of that decode")
	perLayer := fs.Bool("per-layer", false, "solve each layer at the same ratio instead of one global budget")
	out := fs.String("out", "curve.npy", "output .npy (a JSON sidecar and a PNG heat map are written beside it)")
	device := fs.String("device", "cpu", "cpu or cuda")
	threads := fs.Int("threads", 0, "CPU threads (0: all cores)")
	weightsF := addWeightsFlag(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: lukv-run profile --calibration FILE [flags]\n\nProfiles a model offline for LU-KV: prefills the calibration context, scores its tokens,\ndecodes after every question with full attention to measure each token's future\nimportance, relaxes each head's eviction-loss curve to its convex hull and allocates one\nglobal budget greedily. Writes the [99, layers, kv_heads] prune-ratio curve as .npy\n(kvpress's format), a JSON sidecar and a PNG heat map.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("profile: unexpected argument %q", fs.Arg(0))
	}
	if *calibration == "" {
		return errors.New("profile: --calibration FILE is required")
	}
	switch {
	case *horizon < 1:
		return fmt.Errorf("--horizon %d: want >= 1 (the tokens decoded after each question are what the curve measures)", *horizon)
	case math.IsNaN(*temperature) || math.IsInf(*temperature, 0) || *temperature < 0:
		return fmt.Errorf("--temperature %v: want a number >= 0 (0 is greedy)", *temperature)
	case *sink < 0 || *window < 0:
		return fmt.Errorf("--sink %d and --window %d must be >= 0", *sink, *window)
	}
	if err := checkThreads(*threads); err != nil {
		return err
	}
	weights, err := weightsF.format()
	if err != nil {
		return err
	}
	cal, err := eviction.LoadCalibration(*calibration)
	if err != nil {
		return err
	}
	scorer, err := eviction.NewScorer(*scorerName)
	if err != nil {
		return fmt.Errorf("--scorer: %w", err)
	}
	dir, m, tok, err := openModel(*modelFlag, *device, *threads, exactPrecision, weights)
	if err != nil {
		return err
	}
	bar := progress.New(stderr, len(cal.Questions), progress.Options{Label: "profile", Unit: "questions"})
	p := &eviction.Profiler{Model: m, Tokenizer: tok, Scorer: scorer, Horizon: *horizon, Temperature: *temperature, Seed: *seed,
		Options:  eviction.ProfileOptions{Sink: *sink, Window: *window, MinKeepFraction: eviction.DefaultMinKeepFraction, PerLayer: *perLayer},
		Progress: func(done, _ int) { bar.Add(done - bar.Done()) }}
	start := time.Now()
	curve, err := p.Profile(ctx, cal)
	bar.Finish()
	if err != nil {
		return err
	}
	curve.Meta.Model = filepath.Base(dir)
	curve.Meta.Version = "lukv " + version + " (" + curve.Meta.Version + ")"
	if err := eviction.WriteNPY(*out, curve); err != nil {
		return err
	}
	png := strings.TrimSuffix(*out, ".npy") + ".png"
	if err := writeCurveHeatMap(png, curve); err != nil {
		return err
	}
	summary := map[string]any{"curve": *out, "sidecar": *out + ".json", "heatmap": png, "seconds": time.Since(start).Seconds(),
		"layers": curve.Layers, "kv_heads": curve.KVHeads, "questions": curve.Meta.Questions, "context_tokens": curve.Meta.ContextTokens, "horizon": curve.Meta.Horizon}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(summary)
}

// writeCurveHeatMap draws the fraction of tokens every head keeps at 50%, 80% and 90%
// compression.
func writeCurveHeatMap(path string, c *eviction.BudgetCurve) error {
	var panels []report.HeatPanel
	for _, rho := range []float64{0.5, 0.8, 0.9} {
		row, err := c.Row(rho)
		if err != nil {
			return err
		}
		keep := make([]float64, len(row))
		for i, p := range row {
			keep[i] = 1 - p
		}
		panels = append(panels, report.HeatPanel{Title: fmt.Sprintf("kept at %.0f%% compression", rho*100), Layers: c.Layers, Cols: c.KVHeads, Values: keep})
	}
	return report.HeatMaps(path, fmt.Sprintf("LU-KV budgets: %s, scorer %s", c.Meta.Model, c.Meta.Scorer), panels)
}
