package main

import (
	"flag"
	"fmt"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/eviction"
	"github.com/lukv/lukv/generate"
	"github.com/lukv/lukv/loader"
	"github.com/lukv/lukv/memplan"
	"github.com/lukv/lukv/model"
)

// chunkFlags are generate's chunked-prefill and memory-budget flags (the logic is in
// memplan, generate and eviction).
type chunkFlags struct {
	fs       *flag.FlagSet
	chunk    *int
	kvBudget *int
	maxKV    *string
}

func addChunkFlags(fs *flag.FlagSet) *chunkFlags {
	return &chunkFlags{fs: fs,
		chunk:    fs.Int("chunk", 0, "prefill the context this many tokens at a time, evicting after each chunk (default: the model's context, at most 2048)"),
		kvBudget: fs.Int("kv-budget", 0, "kept KV tokens per head on average after the context; sets --compression"),
		maxKV:    fs.String("max-kv-memory", "", "most memory the KV cache may hold at its peak (e.g. 2GiB); sets --compression"),
	}
}

func (f *chunkFlags) set(name string) bool {
	set := false
	f.fs.Visit(func(fl *flag.Flag) { set = set || fl.Name == name })
	return set
}

// plan checks the flags and the memory (weights held as weights) for a context of contextTokens followed by tail
// tokens, before the weights are loaded; it returns the chunk and the compression ratio.
func (f *chunkFlags) plan(b backend.Backend, weights loader.WeightFormat, cfg *loader.Config, ev *evictFlags, contextTokens, tail int) (int, float64, error) {
	chunk := *f.chunk
	if !f.set("chunk") {
		chunk = generate.DefaultChunk(cfg.MaxPositionEmbeddings)
	}
	req := memplan.Request{Chunk: chunk, KVBudget: *f.kvBudget, Evict: *ev.method != "full", Ratio: *ev.compression,
		RatioSet: f.set("compression"), Sink: *ev.sink, Window: *ev.window, Context: contextTokens, Tail: tail}
	if f.set("kv-budget") && *f.kvBudget <= 0 {
		return 0, 0, fmt.Errorf("--kv-budget %d: want a number of tokens per head >= 1", *f.kvBudget)
	}
	if *f.maxKV != "" {
		n, err := memplan.ParseSize(*f.maxKV)
		if err != nil {
			return 0, 0, fmt.Errorf("--max-kv-memory: %w", err)
		}
		req.MaxKVMemory = n
	}
	if (req.KVBudget > 0 || req.MaxKVMemory > 0 || f.set("chunk")) && req.Evict && *ev.at != "context" {
		return 0, 0, fmt.Errorf("--chunk, --kv-budget and --max-kv-memory evict during the prefill: they need --compress-at context, not %s", *ev.at)
	}
	p, ratio, err := memplan.Resolve(cfg, memplan.WeightBytes(cfg, b, weights), memplan.KVElemBytes(b), req)
	if err != nil {
		return 0, 0, err
	}
	if err := p.Check(memplan.DeviceAvailable(b)); err != nil {
		return 0, 0, err
	}
	return chunk, ratio, nil
}

// apply makes the context's prefill chunked, evicting with method (nil: no eviction)
// after each chunk instead of once after the prefill (--compress-at context only).
func (f *chunkFlags) apply(opt *generate.Options, m *model.Model, method *eviction.Method, at string, chunk int) error {
	if method == nil {
		opt.Chunked = &generate.ChunkedPrefill{Chunk: chunk}
		return nil
	}
	if at != "context" {
		return nil // one-shot eviction after the prefill (checked in plan)
	}
	ev, err := eviction.NewChunkedEvictor(m, *method)
	if err != nil {
		return err
	}
	opt.Observer, opt.AfterPrefill = nil, nil
	opt.Chunked = &generate.ChunkedPrefill{Chunk: chunk, Evictor: ev}
	return nil
}
