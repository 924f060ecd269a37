package generate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/model"
)

// ChunkEvictor follows a chunked prefill and keeps the cache within budget
// (eviction.ChunkedEvictor is one). For every chunk the driver calls StartChunk, runs the
// chunk's forward pass with the evictor as its observer, then calls EndChunk.
type ChunkEvictor interface {
	model.Observer
	StartChunk(cache backend.KVCache, pos0, n int) error
	EndChunk(cache backend.KVCache, last bool, reserve int) error
}

// ChunkStats describes one chunk of a chunked prefill.
type ChunkStats struct {
	Pos0      int           `json:"pos0"`     // the chunk's first position
	Tokens    int           `json:"tokens"`   // its length
	Time      time.Duration `json:"time_ns"`  // forward pass and eviction
	EvictTime time.Duration `json:"evict_ns"` // EndChunk's share of Time
	// LiveBytesPeak and BytesPeak are the cache's live and held bytes once the chunk was
	// in it (before eviction), LiveBytes and Bytes after eviction.
	LiveBytesPeak int64 `json:"kv_live_bytes_peak"`
	BytesPeak     int64 `json:"kv_bytes_peak"`
	LiveBytes     int64 `json:"kv_live_bytes"`
	Bytes         int64 `json:"kv_bytes"`
	// ForwardTime is the chunk's forward pass (with the evictor's scoring), ScoreTime the
	// evictor's share of it (ObserveLayer, host time including its reads of the device).
	ForwardTime time.Duration `json:"forward_ns"`
	ScoreTime   time.Duration `json:"score_ns"`
	// DeviceUsed is the device memory in use after the chunk (total - free; 0 when the
	// backend does not say).
	DeviceUsed int64 `json:"device_used_bytes,omitempty"`
	// Reallocations counts the cache's layer buffers allocated anew during the chunk
	// (growth or compaction that did not fit the buffers), when the cache says.
	Reallocations int `json:"kv_reallocations,omitempty"`
	// Kernels is the GPU time of the chunk's kernels by kind (KernelKind), in seconds,
	// when the backend times its kernels (backend.KernelTimer, LUKV_CUDA_KERNEL_TIMES=1).
	Kernels map[string]float64 `json:"kernel_seconds,omitempty"`
}

// KernelKind groups a kernel name into the parts of a chunk the bench reports:
// "attention" (the append, the bf16 copy for the tensor cores and the attention
// kernels), "compact" (selection and the gathers that move kept or grown rows),
// "scoring" (device scorers) and "other" (matmuls, norms, elementwise).
func KernelKind(name string) string {
	switch {
	case strings.Contains(name, "attention"), strings.Contains(name, "rope_append"), strings.HasPrefix(name, "kv_to_bf16"), strings.HasPrefix(name, "kv_bf16_to_bf16"):
		return "attention"
	case strings.HasPrefix(name, "kv_gather"), strings.HasPrefix(name, "kv_copy"), strings.HasPrefix(name, "select_topk"), strings.HasPrefix(name, "layer_protect"), strings.HasPrefix(name, "memcpy"):
		return "compact"
	case strings.HasPrefix(name, "score"):
		return "scoring"
	}
	return "other"
}

// timedObserver adds the time its observer takes to *spent.
type timedObserver struct {
	model.Observer
	spent *time.Duration
}

func (o timedObserver) ObserveLayer(layer int, positions []int, x, q, k, v backend.Tensor) {
	t := time.Now()
	o.Observer.ObserveLayer(layer, positions, x, q, k, v)
	*o.spent += time.Since(t)
}

// chunkPlanner is an evictor that wants the prompt's shape before its first chunk
// (eviction.ChunkedEvictor sizes a CUDA cache once from it).
type chunkPlanner interface {
	PlanChunks(total, chunk, reserve int)
}

// reallocCounter is a cache that counts its buffer reallocations (backend/cuda).
type reallocCounter interface {
	Reallocations() int
}

// kernelTimer returns b's kernel timer with its period restarted, or nil when the
// backend has none or timing is off.
func kernelTimer(b backend.Backend) backend.KernelTimer {
	kt, ok := b.(backend.KernelTimer)
	if !ok {
		return nil
	}
	if _, err := kt.KernelTimes(); err != nil {
		return nil
	}
	return kt
}

// ChunkedPrefill prefills a prompt Chunk tokens at a time. Each chunk's keys and values
// are appended to the cache and its queries attend, causally by index, over everything
// each head holds (backend.Backend.Attention): without an evictor that is the whole
// prefix, so the logits are those of a one-shot prefill up to float rounding; with one,
// the kept tokens of earlier chunks plus the chunk. Positions are the tokens' true
// positions, so RoPE is unchanged. The backend needs nothing beyond its Attention and
// KVCache, so every backend runs it.
type ChunkedPrefill struct {
	Chunk   int          // tokens per forward pass (>= 1)
	Evictor ChunkEvictor // nil: no eviction
	// Reserve is the room per head the cache keeps after the last chunk (question and new
	// tokens); each earlier chunk leaves room for the next.
	Reserve int
	// AllLogits returns the logits of every prompt token ([n*V]) instead of the last's.
	AllLogits bool
	// OnChunk, when set, receives every chunk's stats.
	OnChunk func(ChunkStats)
}

// DefaultChunk is the chunk size used when none is given: 2048 tokens, or the model's
// context if it is shorter. 2048 rows keep a chunk's activations small next to the
// weights (lukv-tiny: 14 MiB; an 8B Llama: 0.5 GiB of float32 activations on the CPU)
// while the matmuls still see enough rows to run at full speed.
func DefaultChunk(contextLength int) int { return max(1, min(contextLength, 2048)) }

// Run prefills ids into cache (which must be empty) and returns the logits (see
// AllLogits). A cancelled ctx stops it within one layer's time.
func (p ChunkedPrefill) Run(ctx context.Context, m *model.Model, ids []int, cache backend.KVCache) ([]float32, error) {
	if p.Chunk < 1 {
		return nil, fmt.Errorf("chunked prefill: chunk of %d tokens, want >= 1", p.Chunk)
	}
	if len(ids) == 0 {
		return nil, errors.New("chunked prefill: no tokens")
	}
	if p.Reserve < 0 {
		return nil, fmt.Errorf("chunked prefill: negative reserve %d", p.Reserve)
	}
	if cp, ok := p.Evictor.(chunkPlanner); ok {
		cp.PlanChunks(len(ids), p.Chunk, p.Reserve)
	}
	kt := kernelTimer(m.Backend)
	var logits []float32
	for pos := 0; pos < len(ids); pos += p.Chunk {
		start := time.Now()
		n := min(p.Chunk, len(ids)-pos)
		last := pos+n == len(ids)
		opt := model.ForwardOptions{AllLogits: p.AllLogits}
		var scoring time.Duration
		reallocs := 0
		if rc, ok := cache.(reallocCounter); ok {
			reallocs = rc.Reallocations()
		}
		if p.Evictor != nil {
			if err := p.Evictor.StartChunk(cache, pos, n); err != nil {
				return nil, err
			}
			opt.Observer = timedObserver{p.Evictor, &scoring}
		}
		out, err := m.Forward(ctx, ids[pos:pos+n], pos, cache, opt)
		if err != nil {
			return nil, err
		}
		forward := time.Since(start)
		if p.AllLogits {
			logits = append(logits, out...)
		} else {
			logits = out
		}
		st := ChunkStats{Pos0: pos, Tokens: n, LiveBytesPeak: cache.LiveBytes(), BytesPeak: cache.Bytes(),
			ForwardTime: forward, ScoreTime: scoring}
		if p.Evictor != nil {
			reserve := min(p.Chunk, len(ids)-pos-n)
			if last {
				reserve = p.Reserve
			}
			t := time.Now()
			if err := p.Evictor.EndChunk(cache, last, reserve); err != nil {
				return nil, err
			}
			st.EvictTime = time.Since(t)
		}
		st.Time = time.Since(start)
		st.LiveBytes, st.Bytes = cache.LiveBytes(), cache.Bytes()
		if rc, ok := cache.(reallocCounter); ok {
			st.Reallocations = rc.Reallocations() - reallocs
		}
		if d, ok := m.Backend.(interface{ MemInfo() (free, total uint64) }); ok {
			free, total := d.MemInfo()
			st.DeviceUsed = int64(total - free)
		}
		if kt != nil {
			if times, err := kt.KernelTimes(); err == nil {
				st.Kernels = map[string]float64{}
				for _, k := range times {
					st.Kernels[KernelKind(k.Name)] += k.Seconds
				}
			}
		}
		if p.OnChunk != nil {
			p.OnChunk(st)
		}
	}
	return logits, nil
}

// prefillChunked is Generate's chunked first prefill of prompt[:first]: it records every
// chunk in res and the peaks in res.KVBytesPrefill and res.KVLivePrefill.
func (g *Generator) prefillChunked(ctx context.Context, prompt []int, first int, opt Options, res *Result) ([]float32, backend.KVCache, error) {
	p := *opt.Chunked
	if p.Chunk < 1 {
		return nil, nil, fmt.Errorf("generate: chunked prefill with a chunk of %d tokens, want >= 1", p.Chunk)
	}
	p.Reserve = len(prompt) - first + opt.MaxNewTokens
	p.AllLogits = false
	onChunk := p.OnChunk
	p.OnChunk = func(st ChunkStats) {
		res.Chunks = append(res.Chunks, st)
		res.KVBytesPrefill = max(res.KVBytesPrefill, st.BytesPeak)
		res.KVLivePrefill = max(res.KVLivePrefill, st.LiveBytesPeak)
		if onChunk != nil {
			onChunk(st)
		}
	}
	cache := g.Model.NewCache(min(p.Chunk, first))
	logits, err := p.Run(ctx, g.Model, prompt[:first], cache)
	return logits, cache, err
}
