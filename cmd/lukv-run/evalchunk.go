package main

import (
	"errors"
	"flag"
	"fmt"

	"github.com/lukv/lukv/eval"
	"github.com/lukv/lukv/loader"
	"github.com/lukv/lukv/memplan"
)

// evalChunkFlags are eval's chunked-prefill and memory-budget flags: --chunk makes every
// evicting cell prefill its context chunk by chunk, evicting after each chunk
// (eval.Runner.Chunk); --kv-budget and --max-kv-memory set the compression from a budget
// (memplan.Resolve, as generate does) for the one sample length they need.
type evalChunkFlags struct {
	fs       *flag.FlagSet
	chunk    *int
	kvBudget *int
	maxKV    *string
}

func addEvalChunkFlags(fs *flag.FlagSet) *evalChunkFlags {
	return &evalChunkFlags{fs: fs,
		chunk:    fs.Int("chunk", 0, "prefill each sample's context this many tokens at a time, evicting after every chunk (0: one prefill, then one eviction)"),
		kvBudget: fs.Int("kv-budget", 0, "kept KV tokens per head on average after the context; sets --compression (needs one --lengths value)"),
		maxKV:    fs.String("max-kv-memory", "", "most memory the KV cache may hold at its peak (e.g. 2GiB, float32 cache); sets --compression (needs one --lengths value)"),
	}
}

func (f *evalChunkFlags) set(name string) bool {
	set := false
	f.fs.Visit(func(fl *flag.Flag) { set = set || fl.Name == name })
	return set
}

// resolve checks the flags before anything heavy runs and returns the chunk (0: one-shot
// eviction) and, when a budget flag is given, the compression ratio it sets (nil: keep
// --compression). modelFlag is read (its config only) for --max-kv-memory.
func (f *evalChunkFlags) resolve(modelFlag string, lengths []int, methods []eval.MethodSpec, sink, window int) (int, []float64, error) {
	chunk := *f.chunk
	if chunk < 0 {
		return 0, nil, fmt.Errorf("--chunk %d: want a positive number of tokens, or 0 for one prefill then one eviction", chunk)
	}
	if f.set("kv-budget") && *f.kvBudget <= 0 {
		return 0, nil, fmt.Errorf("--kv-budget %d: want a number of tokens per head >= 1", *f.kvBudget)
	}
	evict := false
	for _, m := range methods {
		evict = evict || m.Scorer != nil
	}
	if chunk > 0 && !evict {
		return 0, nil, errors.New("--chunk evicts during the prefill: give an evicting method in --methods (full alone never evicts)")
	}
	budgetFlag := ""
	switch {
	case f.set("kv-budget") && *f.maxKV != "":
		return 0, nil, errors.New("give --kv-budget or --max-kv-memory, not both")
	case f.set("kv-budget"):
		budgetFlag = "--kv-budget"
	case *f.maxKV != "":
		budgetFlag = "--max-kv-memory"
	}
	if budgetFlag == "" {
		return chunk, nil, nil
	}
	if len(lengths) != 1 {
		return 0, nil, fmt.Errorf("%s sets one compression for one context length: give one --lengths value, not %d", budgetFlag, len(lengths))
	}
	var maxKV int64
	if *f.maxKV != "" {
		n, err := memplan.ParseSize(*f.maxKV)
		if err != nil {
			return 0, nil, fmt.Errorf("--max-kv-memory: %w", err)
		}
		maxKV = n
	}
	dir, err := modelDir(modelFlag)
	if err != nil {
		return 0, nil, err
	}
	cfg, err := loader.ModelConfig(dir)
	if err != nil {
		return 0, nil, err
	}
	n := lengths[0]
	planChunk := chunk
	if planChunk == 0 {
		planChunk = n // one prefill: the whole context is the chunk
	}
	// eval runs at exact precision: a float32 cache (4 bytes an element).
	_, ratio, err := memplan.Resolve(cfg, 0, 4, memplan.Request{Chunk: planChunk, KVBudget: *f.kvBudget, MaxKVMemory: maxKV, Evict: evict,
		RatioSet: f.set("compression"), Sink: sink, Window: window, Context: n})
	if err != nil {
		return 0, nil, err
	}
	if err := eval.CheckRatio(ratio); err != nil {
		return 0, nil, fmt.Errorf("%s: %w", budgetFlag, err)
	}
	return chunk, []float64{ratio}, nil
}
