package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"time"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/eviction"
	"github.com/lukv/lukv/generate"
	"github.com/lukv/lukv/model"
)

// Bench is one benchmark run on a loaded model: its settings, the floors it compares
// with, and where progress goes.
type Bench struct {
	Model *model.Model
	// Dir is the model's folder, recorded in the report.
	Dir      string
	Settings Settings
	// Scorer is the scorer of the eviction-overhead measurement (Settings.Scorer names it).
	Scorer eviction.Scorer
	// Bandwidth (bytes/s) and PeakTFLOPS are the ceilings of the decode and prefill floors.
	Bandwidth  float64
	PeakTFLOPS float64
	// Threads is the CPU backend's thread count (0: all cores), for the device's name.
	Threads int
	// Command and Version are recorded in the report.
	Command, Version string
	// Progress receives a line per measurement (nil: none).
	Progress io.Writer
	// OnContext, when set, runs after every context with the report so far (the command
	// rewrites its JSON file there, so that a run stopped from outside keeps what it
	// measured).
	OnContext func(*Report) error
}

// DecodePositions is the positions a decode row needs beyond its context: 2 warmup steps
// and steps timed ones.
func DecodePositions(steps int) int { return steps + 2 }

// standardContexts are the context lengths measured by default, those that fit the model.
var standardContexts = []int{8192, 32768, 65536}

// DefaultContexts are the context lengths to measure on a model whose context is
// maxPositions tokens, with steps timed decode steps: those of 8192, 32768 and 65536
// that fit, or, when none does, the largest power of two that does.
func DefaultContexts(maxPositions, steps int) []int {
	var out []int
	for _, T := range standardContexts {
		if T+DecodePositions(steps) <= maxPositions {
			out = append(out, T)
		}
	}
	if len(out) > 0 {
		return out
	}
	T := 1
	for 2*T+DecodePositions(steps) <= maxPositions {
		T *= 2
	}
	return []int{T}
}

// Check reports settings that cannot run: lists empty or out of range, or a context
// that with its decode steps passes the model's maxPositions.
func (s Settings) Check(maxPositions int) error {
	switch {
	case len(s.Contexts) == 0:
		return errors.New("bench: no contexts")
	case s.DecodeSteps < 1 || s.Warmup < 1:
		return fmt.Errorf("bench: %d decode steps and a warmup of %d tokens: want both >= 1", s.DecodeSteps, s.Warmup)
	case !(s.OverheadRatio > 0 && s.OverheadRatio < 1):
		return fmt.Errorf("bench: overhead ratio %v: want 0 < ratio < 1", s.OverheadRatio)
	case s.MaxSeconds < 0 || s.ContextSeconds < 0:
		return errors.New("bench: time budgets must be >= 0")
	}
	for _, r := range s.Compression {
		if !(r > 0 && r < 1) {
			return fmt.Errorf("bench: compression %v: want 0 < ratio < 1", r)
		}
	}
	for _, T := range append(slices.Clone(s.Contexts), s.OverheadContexts...) {
		if T <= 0 {
			return fmt.Errorf("bench: context %d: must be > 0", T)
		}
		if need := T + DecodePositions(s.DecodeSteps); need > maxPositions {
			return fmt.Errorf("a context of %d tokens plus %d decode steps (2 warmup, %d timed) needs %d positions, but the model has a context of %d tokens (max_position_embeddings)",
				T, DecodePositions(s.DecodeSteps), s.DecodeSteps, need, maxPositions)
		}
	}
	return nil
}

// Run warms the model up and measures every context. A context that runs out of memory,
// of its time budget or into an error is reported so (its Status) and the run goes on;
// cancelling ctx stops the run, returning the report so far with ctx's error.
func (b *Bench) Run(ctx context.Context) (*Report, error) {
	s := b.Settings
	if err := s.Check(b.Model.Config.MaxPositionEmbeddings); err != nil {
		return nil, err
	}
	if b.Scorer == nil {
		return nil, errors.New("bench: no scorer for the eviction overhead")
	}
	if b.Bandwidth <= 0 || b.PeakTFLOPS <= 0 {
		return nil, fmt.Errorf("bench: bandwidth %g and peak %g TFLOP/s must be > 0", b.Bandwidth, b.PeakTFLOPS)
	}
	start := time.Now()
	m := b.Model
	progress := b.Progress
	if progress == nil {
		progress = io.Discard
	}
	rep := &Report{
		Command: b.Command, Date: time.Now().UTC().Format(time.RFC3339), Version: b.Version,
		Device: m.Backend.Name(), DeviceName: deviceName(m.Backend, b.Threads), MatMulPath: "cpu float32 (gonum)",
		Model: DescribeModel(b.Dir, m), Bandwidth: b.Bandwidth, PeakTFLOPS: b.PeakTFLOPS, Settings: s,
	}
	rep.Settings.Scorer = b.Scorer.Name()
	ratios := slices.Clone(s.Compression)
	slices.Sort(ratios)
	rep.Settings.Compression = slices.Compact(ratios)
	bn := &bencher{m: m, model: &rep.Model, stderr: progress, steps: s.DecodeSteps, seed: s.Seed, scorer: b.Scorer, overRatio: s.OverheadRatio,
		bandwidth: b.Bandwidth, peak: b.PeakTFLOPS, ctxBudget: time.Duration(s.ContextSeconds * float64(time.Second))}
	bn.mem, _ = m.Backend.(memInfoer)
	warm := min(s.Warmup, slices.Min(s.Contexts))
	fmt.Fprintf(progress, "bench: warmup prefill of %d tokens\n", warm)
	if err := bn.warmup(ctx, warm); err != nil {
		return nil, fmt.Errorf("bench: warmup: %w", err)
	}
	if p, ok := m.Backend.(matMulPather); ok {
		rep.MatMulPath = p.MatMulPath()
	}
	if s.MaxSeconds > 0 {
		bn.deadline = time.Now().Add(time.Duration(s.MaxSeconds * float64(time.Second)))
	}
	for _, T := range s.Contexts {
		row := bn.context(ctx, T, slices.Contains(s.OverheadContexts, T), rep.Settings.Compression)
		rep.Contexts = append(rep.Contexts, row)
		rep.Seconds = time.Since(start).Seconds()
		if b.OnContext != nil {
			if err := b.OnContext(rep); err != nil {
				return rep, err
			}
		}
		if err := ctx.Err(); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// Optional backend capabilities (the CUDA backend has them).
type (
	memInfoer      interface{ MemInfo() (free, total uint64) }
	deviceNamer    interface{ Device() string }
	matMulPather   interface{ MatMulPath() string }
	synchronizer   interface{ Synchronize() error }
	releaser       interface{ Release() }
	dtypeNamedTens interface{ DType() string }
)

// errBudget is the cause of a measurement's context that passed its time budget.
var errBudget = errors.New("time budget exhausted")

// deviceName describes the backend's hardware.
func deviceName(b backend.Backend, threads int) string {
	if d, ok := b.(deviceNamer); ok {
		return d.Device()
	}
	if threads <= 0 {
		threads = runtime.NumCPU()
	}
	return fmt.Sprintf("%s/%s, %d threads", runtime.GOOS, runtime.GOARCH, threads)
}

// kernelTimes reads the backend's kernel times and starts a new period: nil unless the
// backend times its kernels (LUKV_CUDA_KERNEL_TIMES=1 with --device cuda).
func kernelTimes(b backend.Backend) []backend.KernelTime {
	kp, ok := b.(backend.KernelTimer)
	if !ok {
		return nil
	}
	st, err := kp.KernelTimes()
	if err != nil {
		return nil
	}
	return st
}

// bencher runs the measurements on one loaded model.
type bencher struct {
	m         *model.Model
	model     *ModelInfo // rep.Model: the per-token KV size it learns goes into the report
	mem       memInfoer
	stderr    io.Writer
	steps     int
	seed      uint64
	scorer    eviction.Scorer
	overRatio float64
	bandwidth float64
	peak      float64
	deadline  time.Time     // of the whole run; zero: none
	ctxBudget time.Duration // of each context; zero: none
	minFree   uint64        // least free device memory seen in this context
}

// benchObserver runs between the layers of a prefill: it samples the device's free
// memory and passes the layer on to inner (a scorer's collector) when set.
type benchObserver struct {
	bn    *bencher
	inner model.Observer
}

func (o *benchObserver) ObserveLayer(layer int, positions []int, x, q, k, v backend.Tensor) {
	o.bn.sample()
	if o.inner != nil {
		o.inner.ObserveLayer(layer, positions, x, q, k, v)
	}
}

// memFree returns the device's free and total memory, if the backend says.
func (bn *bencher) memFree() (free, total uint64, ok bool) {
	if bn.mem == nil {
		return 0, 0, false
	}
	defer func() {
		if r := recover(); r != nil {
			ok = false
		}
	}()
	free, total = bn.mem.MemInfo()
	return free, total, true
}

func (bn *bencher) sample() {
	if free, _, ok := bn.memFree(); ok && free < bn.minFree {
		bn.minFree = free
	}
}

// guard runs f, turning a panic with an error that wraps backend.ErrOutOfMemory into an
// error (backend calls without an error result panic that way).
func guard(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if e, ok := r.(error); ok && errors.Is(e, backend.ErrOutOfMemory) {
				err = e
				return
			}
			panic(r)
		}
	}()
	return f()
}

// sync waits for the device's queued work, where the backend queues.
func (bn *bencher) sync() error {
	if s, ok := bn.m.Backend.(synchronizer); ok {
		return s.Synchronize()
	}
	return nil
}

// release frees a cache's memory now where the backend can, else leaves it to the GC.
func release(c backend.KVCache) {
	if c == nil {
		return
	}
	if r, ok := c.(releaser); ok {
		r.Release()
	}
	runtime.GC()
}

// randomIDs are n token ids drawn uniformly from the vocabulary, seeded by (seed, n).
func (bn *bencher) randomIDs(n int) []int {
	r := rand.New(rand.NewPCG(bn.seed, uint64(n)))
	ids := make([]int, n)
	for i := range ids {
		ids[i] = r.IntN(bn.m.Config.VocabSize)
	}
	return ids
}

// warmup prefills n tokens and decodes 4 (loading kernels, libraries and pools).
func (bn *bencher) warmup(ctx context.Context, n int) error {
	return guard(func() error {
		cache := bn.m.NewCache(n + 4)
		defer release(cache)
		logits, err := bn.m.Forward(ctx, bn.randomIDs(n), 0, cache, model.ForwardOptions{})
		if err != nil {
			return err
		}
		_, err = bn.decode(ctx, cache, n, generate.Argmax(logits), 2, nil)
		return err
	})
}

// decode runs 2 warmup steps and then steps timed ones from position pos, the first
// token being first; it returns the time per timed step. Before the first timed step it
// calls atStart (nil: nothing).
func (bn *bencher) decode(ctx context.Context, cache backend.KVCache, pos, first, steps int, atStart func()) (time.Duration, error) {
	tok := first
	var t0 time.Time
	for i := 0; i < 2+steps; i++ {
		if i == 2 {
			if atStart != nil {
				atStart()
			}
			t0 = time.Now()
		}
		logits, err := bn.m.Forward(ctx, []int{tok}, pos+i, cache, model.ForwardOptions{})
		if err != nil {
			return 0, err
		}
		tok = generate.Argmax(logits)
	}
	if t0.IsZero() {
		return 0, nil
	}
	return time.Since(t0) / time.Duration(steps), nil
}

// floorMs is the decode floor for the given live KV bytes.
func (bn *bencher) floorMs(liveKV int64) float64 {
	return float64(bn.model.DecodeWeightBytes+liveKV) / bn.bandwidth * 1e3
}

// context measures one context length T: prefill, decode with the full cache and after
// each compression (ascending, each compacting the previous row's cache), the memory,
// and, when over, the eviction overhead.
func (bn *bencher) context(parent context.Context, T int, over bool, ratios []float64) (row Context) {
	row = Context{Context: T, Status: "ok"}
	start := time.Now()
	defer func() { row.Seconds = time.Since(start).Seconds() }()
	if !bn.deadline.IsZero() && !start.Before(bn.deadline) {
		row.Status = "skipped"
		row.Error = "no time left in the run's time budget (max seconds)"
		fmt.Fprintf(bn.stderr, "bench: context %d: skipped (time budget)\n", T)
		return row
	}
	// The time budget is a deadline on the context's passes (checked before every layer
	// and step), its cause errBudget.
	end := bn.deadline
	if bn.ctxBudget > 0 {
		if e := start.Add(bn.ctxBudget); end.IsZero() || e.Before(end) {
			end = e
		}
	}
	ctx, cancel := parent, context.CancelFunc(func() {})
	if !end.IsZero() {
		ctx, cancel = context.WithDeadlineCause(parent, end, errBudget)
	}
	defer cancel()
	m, c := bn.m, bn.m.Config
	var cache backend.KVCache
	defer func() { release(cache) }()
	mem := &Memory{}
	free0, total, haveMem := bn.memFree()
	if haveMem {
		mem.Total, mem.FreeBefore = total, free0
		bn.minFree = free0
		row.Memory = mem
	}
	// The observer watches prefills only: a decode step must not pay for its memory
	// samples.
	obs := &benchObserver{bn: bn}
	phase := "prefill"
	err := guard(func() error {
		ids := bn.randomIDs(T)
		cache = m.NewCache(T + bn.steps + 4)
		kernelTimes(bn.m.Backend) // a new profiling period
		t0 := time.Now()
		logits, err := m.Forward(ctx, ids, 0, cache, model.ForwardOptions{Observer: obs})
		if err != nil {
			return err
		}
		secs := time.Since(t0).Seconds()
		p := &Prefill{Seconds: secs, TokensPerSec: float64(T) / secs, Kernels: kernelTimes(bn.m.Backend)}
		p.LinearFLOP = 2*float64(bn.model.LayerParams)*float64(T) + 2*float64(c.HiddenSize)*float64(c.VocabSize)
		p.AttentionFLOP = 2 * float64(T) * float64(T) * float64(c.HeadDim*c.NumHeads*c.NumLayers)
		p.TFLOPS = (p.LinearFLOP + p.AttentionFLOP) / secs / 1e12
		p.PctPeak = 100 * p.TFLOPS / bn.peak
		row.Prefill = p
		fmt.Fprintf(bn.stderr, "bench: context %d: prefill %.3f s (%.0f tok/s, %.1f TFLOP/s)\n", T, secs, p.TokensPerSec, p.TFLOPS)
		first := generate.Argmax(logits)
		fullLive := cache.LiveBytes()
		// The cache's own element size (the CUDA cache may hold bf16).
		bn.model.KVBytesPerToken = fullLive / int64(T)

		// Decode rows: the full cache, then each compression.
		rowFor := func(ratio float64) (Decode, error) {
			d := Decode{Compression: ratio, Steps: bn.steps}
			held := cache.Len(0, 0)
			kernelTimes(bn.m.Backend)
			per, err := bn.decode(ctx, cache, T, first, bn.steps, func() {
				d.LiveKVBytes, d.KVBytes = cache.LiveBytes(), cache.Bytes()
			})
			if err != nil {
				return d, err
			}
			if d.Kernels = kernelTimes(bn.m.Backend); d.Kernels != nil {
				d.KernelSteps = bn.steps + 2
			}
			d.MsPerToken = per.Seconds() * 1e3
			d.FloorMs = bn.floorMs(d.LiveKVBytes)
			d.FloorRatio = d.MsPerToken / d.FloorMs
			liveTokens := d.LiveKVBytes / bn.model.KVBytesPerToken
			d.FloorBF16KVMs = float64(bn.model.DecodeWeightBytes+liveTokens*bn.model.KVBytesPerTokenBF16) / bn.bandwidth * 1e3
			// Back to the prompt's tokens (every head holds the same count here).
			return d, cache.Truncate(held)
		}
		phase = "decode (full cache)"
		d, err := rowFor(0)
		if err != nil {
			return err
		}
		d.KVFraction = 1 // the full cache
		row.Decode = append(row.Decode, d)
		fmt.Fprintf(bn.stderr, "bench: context %d: decode full %.2f ms/token (floor %.2f ms, x%.2f)\n", T, d.MsPerToken, d.FloorMs, d.FloorRatio)
		prev := 0.0
		for _, ratio := range ratios {
			phase = fmt.Sprintf("compaction to %.2f", ratio)
			before, _, _ := bn.memFree()
			bytesBefore := cache.Bytes()
			dur, err := bn.compressTo(cache, T, ratio)
			if err != nil {
				return err
			}
			after, _, _ := bn.memFree()
			bn.sample()
			kept := cache.LiveBytes()
			phase = fmt.Sprintf("decode at %.2f", ratio)
			d, err := rowFor(ratio)
			if err != nil {
				return err
			}
			d.CompactMs, d.CompactedFrom = dur.Seconds()*1e3, prev
			d.KVFraction = float64(kept) / float64(fullLive)
			d.KVBytesReleased = bytesBefore - d.KVBytes
			if haveMem {
				d.MemFreeBefore, d.MemFreeAfter = before, after
				d.MemReleasedBytes = int64(after) - int64(before)
			}
			row.Decode = append(row.Decode, d)
			fmt.Fprintf(bn.stderr, "bench: context %d: decode at %.2f: %.2f ms/token (floor %.2f ms, x%.2f), KV %.1f%% of full, compaction %.1f ms\n",
				T, ratio, d.MsPerToken, d.FloorMs, d.FloorRatio, 100*d.KVFraction, d.CompactMs)
			if math.Abs(ratio-KVTargetRatio) < 1e-9 {
				row.KVTarget = &KVTarget{Ratio: ratio, LiveFraction: d.KVFraction, BytesFrac: float64(d.KVBytes) / float64(row.Decode[0].KVBytes)}
				row.KVTarget.Met = math.Abs(d.KVFraction-(1-ratio)) <= KVTargetSlack
			}
			prev = ratio
		}
		if !over {
			return nil
		}
		// Eviction overhead: the same prefill with the scorer's collector, then the
		// allocation and compaction of its scores.
		phase = "prefill with " + bn.scorer.Name()
		cache.Reset()
		method := eviction.Method{Scorer: bn.scorer, Allocator: eviction.UniformAllocator{}, Ratio: bn.overRatio, Sink: 4, Window: 1}
		col := method.NewCollector(m)
		obs.inner = col
		t0 = time.Now()
		_, err = m.Forward(ctx, ids, 0, cache, model.ForwardOptions{Observer: obs})
		obs.inner = nil
		if err != nil {
			return err
		}
		with := time.Since(t0).Seconds()
		phase = "allocation and compaction"
		t0 = time.Now()
		if err := method.CompressCollected(cache, col, bn.steps+2); err != nil {
			return err
		}
		if err := bn.sync(); err != nil {
			return err
		}
		ac := time.Since(t0).Seconds()
		o := &Overhead{Scorer: bn.scorer.Name(), Ratio: bn.overRatio, PrefillSeconds: secs, WithScorerSeconds: with,
			ScoreSeconds: with - secs, AllocCompactSecond: ac}
		o.SharePct = 100 * (o.ScoreSeconds + ac) / secs
		row.Overhead = o
		fmt.Fprintf(bn.stderr, "bench: context %d: eviction overhead %.1f%% of prefill (score %.3f s, allocation+compaction %.3f s)\n", T, o.SharePct, o.ScoreSeconds, ac)
		return nil
	})
	if haveMem {
		mem.MinFree = bn.minFree
		mem.PeakUsed = mem.Total - bn.minFree
		if mem.FreeBefore > bn.minFree {
			mem.PeakAboveBefore = mem.FreeBefore - bn.minFree
		}
	}
	switch {
	case err == nil:
	case errors.Is(err, backend.ErrOutOfMemory):
		row.Status, row.Error = "oom", fmt.Sprintf("%s: %v", phase, err)
	case parent.Err() != nil:
		row.Status, row.Error = "interrupted", phase+": interrupted"
	case errors.Is(context.Cause(ctx), errBudget):
		row.Status, row.Error = "time budget", phase+": stopped by the time budget (max/context seconds)"
	default:
		row.Status, row.Error = "error", fmt.Sprintf("%s: %v", phase, err)
	}
	if err != nil {
		fmt.Fprintf(bn.stderr, "bench: context %d: %s: %s\n", T, row.Status, row.Error)
	}
	return row
}

// compressTo compacts every head of cache (which holds the same count in every head)
// to the uniform budget of T tokens at ratio, floor(T*(1-ratio)), with random scores
// (sink 4 and window 1 protected, as generation does), leaving room for the decode
// rows. It returns the allocation and compaction time, the device included.
func (bn *bencher) compressTo(cache backend.KVCache, T int, ratio float64) (time.Duration, error) {
	target := max(1, int(math.Floor(float64(T)*(1-ratio)+1e-9)))
	held := cache.Len(0, 0)
	r := rand.New(rand.NewPCG(bn.seed, uint64(T)^math.Float64bits(ratio)))
	scores := make([][][]float32, cache.Layers())
	for l := range scores {
		scores[l] = make([][]float32, cache.KVHeads())
		for h := range scores[l] {
			s := make([]float32, cache.Len(l, h))
			for j := range s {
				s[j] = r.Float32()
			}
			scores[l][h] = s
		}
	}
	random, _ := eviction.NewScorer("random")
	method := eviction.Method{Scorer: random, Allocator: eviction.UniformAllocator{}, Ratio: 1 - float64(target)/float64(held), Sink: 4, Window: 1}
	t0 := time.Now()
	if err := method.Compress(cache, scores, bn.steps+2); err != nil {
		return 0, err
	}
	if err := bn.sync(); err != nil {
		return 0, err
	}
	return time.Since(t0), nil
}
