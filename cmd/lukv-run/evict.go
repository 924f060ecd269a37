package main

import (
	"flag"
	"fmt"
	"strings"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/eviction"
	"github.com/lukv/lukv/generate"
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

// method builds the eviction method the flags describe; nil for --method full. With the
// embedded default model (defaultModel) and no --curve, --allocator lukv uses that
// model's curve profiled with the --method scorer.
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
	if *f.compression < 0 || *f.compression >= 1 {
		return nil, fmt.Errorf("--compression %v: want 0 <= c < 1", *f.compression)
	}
	if *f.sink < 0 || *f.window < 0 {
		return nil, fmt.Errorf("--sink and --window must be >= 0")
	}
	return &eviction.Method{Scorer: scorer, Allocator: alloc, Ratio: *f.compression, Sink: *f.sink, Window: *f.window}, nil
}

// apply sets the generation hooks for the method. prompt is the full prompt (context and
// question); contextTokens is the context's length.
func (f *evictFlags) apply(opt *generate.Options, m *model.Model, method *eviction.Method, contextTokens, promptTokens, maxNew int) error {
	if method == nil {
		return nil
	}
	collector := eviction.NewCollector(m, method.Scorer)
	opt.Observer = collector
	// compress evicts after the first prefill, leaving room for reserve more tokens.
	compressFor := func(reserve int) func(backend.KVCache, int) error {
		return func(cache backend.KVCache, _ int) error { return method.Compress(cache, collector.Scores, reserve) }
	}
	switch *f.at {
	case "context":
		opt.ContextTokens = contextTokens
		opt.AfterPrefill = compressFor(promptTokens - contextTokens + maxNew)
	case "question":
		// The question is protected like the window: eviction may read it, not drop it.
		method.Window = max(method.Window, promptTokens-contextTokens)
		opt.AfterPrefill = compressFor(maxNew)
	case "decode":
		compress := compressFor(*f.every)
		ev, err := eviction.NewDecodeEvictor(m, *method, *f.every, *f.buffer)
		if err != nil {
			return err
		}
		opt.AfterPrefill = func(cache backend.KVCache, n int) error {
			if err := compress(cache, n); err != nil {
				return err
			}
			ev.SetBudgets(cache)
			return nil
		}
		opt.DecodeObserver = ev
		opt.AfterStep = ev.AfterStep
	default:
		return fmt.Errorf("--compress-at %q: want context, question or decode", *f.at)
	}
	return nil
}
