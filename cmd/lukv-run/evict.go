package main

import (
	"flag"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/lukv/lukv"
	"github.com/lukv/lukv/eviction"
	"github.com/lukv/lukv/model"
	"github.com/lukv/lukv/models"
)

// evictFlags are generate's KV-cache eviction flags.
type evictFlags struct {
	method      *string
	allocator   *string
	curve       *string
	compression *float64
	at          *string
	sink        *int
	window      *int
	every       *int
	buffer      *int
}

func addEvictFlags(fs *flag.FlagSet) *evictFlags {
	return &evictFlags{
		method:      fs.String("method", "full", "eviction scorer: full (no eviction), "+strings.Join(eviction.ScorerNames(), ", ")),
		allocator:   fs.String("allocator", "uniform", "how the budget is split across heads: "+strings.Join(eviction.AllocatorNames(), ", ")),
		curve:       fs.String("curve", "", "LU-KV budget curve (.npy, from 'lukv-run profile' or kvpress) for --allocator lukv (default model: its own curve for the --method scorer)"),
		compression: fs.Float64("compression", 0.5, "fraction of the KV cache to evict (0 <= c < 1)"),
		at:          fs.String("compress-at", "context", "when to evict: context (after the context, before --question), question (after context and question), decode (after the prompt, then every --every steps)"),
		sink:        fs.Int("sink", 4, "first tokens every head always keeps"),
		window:      fs.Int("window", 1, "last tokens every head always keeps"),
		every:       fs.Int("every", 16, "with --compress-at decode: evict every N generated tokens"),
		buffer:      fs.Int("buffer", 16, "with --compress-at decode: recent tokens whose queries the scorer sees (<= --every)"),
	}
}

// check validates the flags that need no model: it runs before the model loads.
func (f *evictFlags) check() error {
	if *f.method == "full" {
		return nil
	}
	if _, err := eviction.NewScorer(*f.method); err != nil {
		return fmt.Errorf("--method: %w", err)
	}
	if !slices.Contains(eviction.AllocatorNames(), *f.allocator) {
		return fmt.Errorf("--allocator %q: want one of %s", *f.allocator, strings.Join(eviction.AllocatorNames(), ", "))
	}
	switch {
	case math.IsNaN(*f.compression) || *f.compression < 0 || *f.compression >= 1:
		return fmt.Errorf("--compression %v: want 0 <= c < 1", *f.compression)
	case *f.sink < 0 || *f.window < 0:
		return fmt.Errorf("--sink %d and --window %d must be >= 0", *f.sink, *f.window)
	}
	switch lukv.When(*f.at) {
	case lukv.AfterContext, lukv.AfterQuestion:
	case lukv.DuringDecode:
		if *f.every < 1 || *f.buffer < 1 || *f.buffer > *f.every {
			return fmt.Errorf("--every %d and --buffer %d: want 1 <= buffer <= every", *f.every, *f.buffer)
		}
	default:
		return fmt.Errorf("--compress-at %q: want context, question or decode", *f.at)
	}
	return nil
}

// build makes the eviction method the flags describe (check has passed); nil for
// --method full. With the embedded default model (defaultModel) and no --curve,
// --allocator lukv uses that model's curve profiled with the --method scorer.
func (f *evictFlags) build(m *model.Model, defaultModel bool) (*eviction.Method, error) {
	if *f.method == "full" {
		return nil, nil
	}
	scorer, err := eviction.NewScorer(*f.method)
	if err != nil {
		return nil, fmt.Errorf("--method: %w", err)
	}
	var curve *eviction.BudgetCurve
	if *f.curve == "" && *f.allocator == "lukv" && defaultModel {
		if *f.curve, err = models.DefaultCurve(*f.method); err != nil {
			return nil, fmt.Errorf("--allocator lukv: %w", err)
		}
	}
	if *f.curve != "" {
		if curve, err = eviction.ReadNPY(*f.curve); err != nil {
			return nil, fmt.Errorf("--curve: %w", err)
		}
		if err := curve.CheckFits(m.Config.NumLayers, m.Config.NumKVHeads); err != nil {
			return nil, fmt.Errorf("--curve %s: %w", *f.curve, err)
		}
	}
	alloc, err := eviction.NewAllocator(*f.allocator, curve)
	if err != nil {
		return nil, fmt.Errorf("--allocator: %w", err)
	}
	return &eviction.Method{Scorer: scorer, Allocator: alloc, Ratio: *f.compression, Sink: *f.sink, Window: *f.window}, nil
}
