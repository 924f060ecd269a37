package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/eviction"
	"github.com/lukv/lukv/generate"
	"github.com/lukv/lukv/loader"
	"github.com/lukv/lukv/model"
	"github.com/lukv/lukv/models"
)

// Default ceilings of the floors: the H200's measured device-to-device copy rate and
// dense bf16 matrix rate (shared/GPU.md).
const (
	defaultBandwidth = 4.3e12 // bytes/s
	defaultPeakTFLOP = 790.0  // TFLOP/s
	// kvTargetRatio is the compression whose kept KV must be 20% +- 2% of the full.
	kvTargetRatio = 0.8
	kvTargetSlack = 0.02
)

// cudaTensorCores says whether --device cuda runs the prefill matmuls on bf16 tensor
// cores (cuda.Options.TensorCores) for command: LUKV_CUDA_TENSOR_CORES=1 or 0 decides;
// unset, it is on for generate and bench (speed) and off for eval and profile (whose
// numbers then match the float32 CPU reference).
func cudaTensorCores(command string) (bool, error) {
	switch v := os.Getenv("LUKV_CUDA_TENSOR_CORES"); v {
	case "":
		return command == "generate" || command == "bench", nil
	case "1", "on", "true":
		return true, nil
	case "0", "off", "false":
		return false, nil
	default:
		return false, fmt.Errorf("LUKV_CUDA_TENSOR_CORES=%q: want 1 or 0", v)
	}
}

// Optional backend capabilities (the CUDA backend has them; bench.go builds without it).
type (
	memInfoer      interface{ MemInfo() (free, total uint64) }
	deviceNamer    interface{ Device() string }
	matMulPather   interface{ MatMulPath() string }
	synchronizer   interface{ Synchronize() error }
	releaser       interface{ Release() }
	dtypeNamedTens interface{ DType() string }
)

// errBudget aborts a measurement that passed its time budget.
var errBudget = errors.New("time budget exhausted")

// benchReport is bench's --json output.
type benchReport struct {
	Command    string         `json:"command"`
	Date       string         `json:"date"`
	Version    string         `json:"version"`
	Device     string         `json:"device"`
	DeviceName string         `json:"device_name"`
	MatMulPath string         `json:"matmul_path"`
	Model      benchModel     `json:"model"`
	Bandwidth  float64        `json:"bandwidth_bytes_per_sec"`
	PeakTFLOPS float64        `json:"peak_tflops"`
	Settings   benchSettings  `json:"settings"`
	Contexts   []benchContext `json:"contexts"`
	Seconds    float64        `json:"seconds"`
}

type benchModel struct {
	Dir          string `json:"dir"`
	Arch         string `json:"arch"`
	Layers       int    `json:"layers"`
	Hidden       int    `json:"hidden"`
	Heads        int    `json:"heads"`
	KVHeads      int    `json:"kv_heads"`
	HeadDim      int    `json:"head_dim"`
	Intermediate int    `json:"intermediate"`
	Vocab        int    `json:"vocab"`
	MaxContext   int    `json:"max_context"`
	// LayerParams counts the weights of the transformer blocks' matrices.
	LayerParams int64 `json:"layer_params"`
	// WeightBytes is every tensor as stored on the device; DecodeWeightBytes what one
	// decode step reads (all of it but an untied embedding table, of which one row).
	WeightBytes       int64 `json:"weight_bytes"`
	DecodeWeightBytes int64 `json:"decode_weight_bytes"`
	// KVBytesPerToken is one token's keys and values over all layers and KV heads, as the
	// cache stores them (float32, or bf16 where the backend's cache says so), and as bf16
	// (what the transformers peers store).
	KVBytesPerToken     int64 `json:"kv_bytes_per_token"`
	KVBytesPerTokenBF16 int64 `json:"kv_bytes_per_token_bf16"`
}

type benchSettings struct {
	Contexts         []int     `json:"contexts"`
	Compression      []float64 `json:"compression"`
	DecodeSteps      int       `json:"decode_steps"`
	Warmup           int       `json:"warmup_tokens"`
	Scorer           string    `json:"scorer"`
	OverheadRatio    float64   `json:"overhead_ratio"`
	OverheadContexts []int     `json:"overhead_contexts"`
	Seed             uint64    `json:"seed"`
	MaxSeconds       float64   `json:"max_seconds"`
	ContextSeconds   float64   `json:"context_seconds"`
}

// benchContext is everything measured at one context length. Status is "ok", "oom",
// "time budget" (a phase passed its budget: what finished before is kept), "skipped"
// (no budget left to start) or "error".
type benchContext struct {
	Context  int           `json:"context"`
	Status   string        `json:"status"`
	Error    string        `json:"error,omitempty"`
	Prefill  *benchPrefill `json:"prefill,omitempty"`
	Decode   []benchDecode `json:"decode,omitempty"`
	Overhead *benchOver    `json:"overhead,omitempty"`
	Memory   *benchMemory  `json:"memory,omitempty"`
	// KVTarget checks the kept KV at kvTargetRatio against 20% +- 2% of the full.
	KVTarget *benchKVTarget `json:"kv_target,omitempty"`
	Seconds  float64        `json:"seconds"`
}

type benchPrefill struct {
	Seconds      float64 `json:"seconds"`
	TokensPerSec float64 `json:"tokens_per_sec"`
	// FLOP = linear (2 * layer params * T, plus the LM head of the last row) + attention
	// (causal: 2 * 2 * T^2/2 * head_dim * heads * layers).
	LinearFLOP    float64 `json:"linear_flop"`
	AttentionFLOP float64 `json:"attention_flop"`
	TFLOPS        float64 `json:"tflops"`
	PctPeak       float64 `json:"pct_peak"`
	// Kernels is the GPU time per kernel (LUKV_CUDA_KERNEL_TIMES=1 on cuda; see KernelSteps).
	Kernels []backend.KernelTime `json:"kernels,omitempty"`
}

// benchDecode is one decode row: the full cache (compression 0) or one compressed.
type benchDecode struct {
	Compression float64 `json:"compression"`
	Steps       int     `json:"steps"`
	MsPerToken  float64 `json:"ms_per_token"`
	// LiveKVBytes is the cache's held tokens at the first timed step (the 2 warmup
	// steps' included); KVBytes its allocation then; KVFraction the tokens kept by the
	// compaction / the context's (bytes of live KV, before any decode step).
	LiveKVBytes int64   `json:"live_kv_bytes"`
	KVBytes     int64   `json:"kv_bytes"`
	KVFraction  float64 `json:"kv_fraction"`
	// FloorMs = (decode weight bytes + live KV bytes) / bandwidth; FloorRatio measured /
	// floor. FloorBF16KVMs is the floor with the KV stored as bf16 (the peers' format).
	FloorMs       float64 `json:"floor_ms"`
	FloorRatio    float64 `json:"floor_ratio"`
	FloorBF16KVMs float64 `json:"floor_bf16_kv_ms"`
	// CompactMs is the time of the allocation and compaction that made this row's cache
	// (from the previous row's); MemFree* the device's free memory around it (cuda).
	// CompactedFrom is the compression of the cache that was compacted (0: the full);
	// KVBytesReleased the cache's allocation that the compaction gave back.
	CompactMs        float64 `json:"compact_ms,omitempty"`
	CompactedFrom    float64 `json:"compacted_from"`
	MemFreeBefore    uint64  `json:"mem_free_before,omitempty"`
	MemFreeAfter     uint64  `json:"mem_free_after,omitempty"`
	MemReleasedBytes int64   `json:"mem_released_bytes,omitempty"`
	KVBytesReleased  int64   `json:"kv_bytes_released,omitempty"`
	// Kernels is the GPU time per kernel over KernelSteps decode steps (the timed ones
	// and the 2 warmup steps), with LUKV_CUDA_KERNEL_TIMES=1 on cuda.
	Kernels     []backend.KernelTime `json:"kernels,omitempty"`
	KernelSteps int                  `json:"kernel_steps,omitempty"`
}

// benchOver is the eviction overhead: scoring (the prefill with the scorer's collector
// minus the plain prefill), allocation and compaction, as a share of the plain prefill.
type benchOver struct {
	Scorer             string  `json:"scorer"`
	Ratio              float64 `json:"ratio"`
	PrefillSeconds     float64 `json:"prefill_seconds"`
	WithScorerSeconds  float64 `json:"prefill_with_scorer_seconds"`
	ScoreSeconds       float64 `json:"score_seconds"`
	AllocCompactSecond float64 `json:"alloc_compact_seconds"`
	SharePct           float64 `json:"share_pct"`
}

// benchMemory is the device memory (cuda): free before the prefill, the least free
// seen during the context's prefills (sampled at every layer), the peak use that means.
type benchMemory struct {
	Total           uint64 `json:"total"`
	FreeBefore      uint64 `json:"free_before"`
	MinFree         uint64 `json:"min_free"`
	PeakUsed        uint64 `json:"peak_used"`
	PeakAboveBefore uint64 `json:"peak_above_before"`
}

type benchKVTarget struct {
	Ratio        float64 `json:"ratio"`
	LiveFraction float64 `json:"live_fraction"`
	BytesFrac    float64 `json:"bytes_fraction"`
	Met          bool    `json:"met"`
}

func runBench(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	modelFlag := fs.String("model", "", "Hugging Face checkpoint folder; empty: the embedded default model, "+models.DefaultName)
	device := fs.String("device", "cpu", "cpu or cuda")
	threads := fs.Int("threads", 0, "CPU threads (0: all cores)")
	contextsFlag := fs.String("contexts", "8192,32768,65536", "context lengths to measure, in tokens")
	ratiosFlag := fs.String("compression", "0.5,0.8,0.9", "compression ratios of the decode rows (each also decoded with the full cache)")
	steps := fs.Int("decode-steps", 32, "timed decode steps per row (after 2 warmup steps)")
	warmup := fs.Int("warmup", 256, "tokens of the warmup prefill (capped at the smallest context)")
	scorerName := fs.String("scorer", "expected-attention", "scorer of the eviction-overhead measurement: "+strings.Join(eviction.ScorerNames(), ", "))
	overRatio := fs.Float64("overhead-ratio", kvTargetRatio, "compression of the eviction-overhead measurement")
	overFlag := fs.String("overhead-contexts", "", "contexts of the eviction-overhead measurement (a second prefill with the scorer); empty: all, none: skip")
	seed := fs.Uint64("seed", 1, "seed of the random token ids and eviction scores")
	jsonOut := fs.String("json", "", "also write everything measured to this JSON file")
	cpuProfile := fs.String("cpuprofile", "", "write a Go CPU profile of the measurements to this file (where the host's time goes)")
	maxSeconds := fs.Float64("max-seconds", 0, "time budget of all measurements after the warmup (0: none); what does not fit is skipped or cut, and says so")
	ctxSeconds := fs.Float64("context-seconds", 0, "time budget of each context (0: none)")
	bandwidth := fs.Float64("bandwidth", defaultBandwidth, "memory bandwidth of the decode floor, bytes/s")
	peak := fs.Float64("peak-tflops", defaultPeakTFLOP, "dense matrix rate the prefill is compared with, TFLOP/s")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: lukv-run bench [flags]\n\nMeasures prefill latency, decode ms/token with the full and the compressed KV cache, the\neviction overhead and the memory, at each context, against the floors: decode at\n(weight bytes + live KV bytes) / bandwidth, prefill at the peak matrix rate. Random token ids\n(seeded) and random eviction scores: speed does not depend on which tokens are kept.\nOn --device cuda the prefill matmuls use the bf16 tensor cores (LUKV_CUDA_TENSOR_CORES=0: off);\nwith LUKV_CUDA_KERNEL_TIMES=1 every prefill and decode row also gets the GPU time of each kernel\n(a table per row; timing kernels costs host time, so such a run's timings are not the speed).\n\nFlags:\n")
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
	positive := func(s string) (int, error) {
		v, err := strconv.Atoi(s)
		if err == nil && v <= 0 {
			err = errors.New("must be > 0")
		}
		return v, err
	}
	contexts, err := splitList("contexts", *contextsFlag, positive)
	if err != nil {
		return err
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
	slices.Sort(ratios)
	ratios = slices.Compact(ratios)
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
	if *steps < 1 || *warmup < 1 {
		return fmt.Errorf("--decode-steps %d and --warmup %d must be >= 1", *steps, *warmup)
	}
	if !(*overRatio > 0 && *overRatio < 1) {
		return fmt.Errorf("--overhead-ratio %v: want 0 < ratio < 1", *overRatio)
	}
	if *bandwidth <= 0 || *peak <= 0 || *maxSeconds < 0 || *ctxSeconds < 0 {
		return errors.New("--bandwidth and --peak-tflops must be > 0, --max-seconds and --context-seconds >= 0")
	}
	scorer, err := eviction.NewScorer(*scorerName)
	if err != nil {
		return fmt.Errorf("--scorer: %w", err)
	}
	// Check the lengths against the model before loading its weights.
	dir, err := modelDir(*modelFlag)
	if err != nil {
		return err
	}
	cfg, err := loader.LoadConfig(filepath.Join(dir, "config.json"))
	if err != nil {
		return err
	}
	for _, T := range append(slices.Clone(contexts), overContexts...) {
		if need := T + *steps + 2; need > cfg.MaxPositionEmbeddings {
			return fmt.Errorf("--contexts: a context of %d tokens plus %d decode steps (2 warmup, %d timed) needs %d positions, but the model (%s) has a context of %d tokens (max_position_embeddings)",
				T, *steps+2, *steps, need, dir, cfg.MaxPositionEmbeddings)
		}
	}
	start := time.Now()
	fmt.Fprintf(stderr, "bench: loading %s on %s\n", dir, *device)
	_, m, _, err := openModel(*modelFlag, *device, *threads)
	if err != nil {
		return err
	}
	bn := &bencher{m: m, stderr: stderr, steps: *steps, seed: *seed, scorer: scorer, overRatio: *overRatio,
		bandwidth: *bandwidth, peak: *peak, ctxBudget: time.Duration(*ctxSeconds * float64(time.Second))}
	bn.mem, _ = m.Backend.(memInfoer)
	rep := &benchReport{
		Command: "lukv-run bench " + strings.Join(args, " "), Date: time.Now().UTC().Format(time.RFC3339), Version: version,
		Device: m.Backend.Name(), DeviceName: deviceName(m.Backend, *threads), MatMulPath: "cpu float32 (gonum)",
		Model: describeModel(dir, m), Bandwidth: *bandwidth, PeakTFLOPS: *peak,
		Settings: benchSettings{Contexts: contexts, Compression: ratios, DecodeSteps: *steps, Warmup: *warmup, Scorer: scorer.Name(),
			OverheadRatio: *overRatio, OverheadContexts: overContexts, Seed: *seed, MaxSeconds: *maxSeconds, ContextSeconds: *ctxSeconds},
	}
	bn.model = &rep.Model
	stopProfile, err := startCPUProfile(*cpuProfile)
	if err != nil {
		return err
	}
	defer stopProfile()
	fmt.Fprintf(stderr, "bench: loaded in %.1f s; warmup prefill of %d tokens\n", time.Since(start).Seconds(), min(*warmup, slices.Min(contexts)))
	if err := bn.warmup(min(*warmup, slices.Min(contexts))); err != nil {
		return fmt.Errorf("bench: warmup: %w", err)
	}
	if p, ok := m.Backend.(matMulPather); ok {
		rep.MatMulPath = p.MatMulPath()
	}
	if *maxSeconds > 0 {
		bn.deadline = time.Now().Add(time.Duration(*maxSeconds * float64(time.Second)))
	}
	// The JSON file is rewritten after every context, so a run stopped from outside
	// keeps what it measured.
	save := func() error {
		rep.Seconds = time.Since(start).Seconds()
		if *jsonOut == "" {
			return nil
		}
		js, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		tmp := *jsonOut + ".tmp"
		if err := os.WriteFile(tmp, append(js, '\n'), 0o644); err != nil {
			return fmt.Errorf("--json: %w", err)
		}
		return os.Rename(tmp, *jsonOut)
	}
	for _, T := range contexts {
		row := bn.context(T, slices.Contains(overContexts, T), ratios)
		rep.Contexts = append(rep.Contexts, row)
		if err := save(); err != nil {
			return err
		}
	}
	writeBenchTables(stdout, rep)
	return save()
}

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

// tensorBytes is t's size as stored: 2 bytes per element for bfloat16/float16 tensors
// of backends that say so, else 4 (float32).
func tensorBytes(t backend.Tensor) int64 {
	if t == nil {
		return 0
	}
	size := int64(4)
	if d, ok := t.(dtypeNamedTens); ok && (d.DType() == "bfloat16" || d.DType() == "float16") {
		size = 2
	}
	return int64(t.Rows()) * int64(t.Cols()) * size
}

// describeModel summarises the configuration and the weights' sizes on the device.
func describeModel(dir string, m *model.Model) benchModel {
	c := m.Config
	d := benchModel{Dir: dir, Arch: c.Arch.String(), Layers: c.NumLayers, Hidden: c.HiddenSize, Heads: c.NumHeads, KVHeads: c.NumKVHeads,
		HeadDim: c.HeadDim, Intermediate: c.IntermediateSize, Vocab: c.VocabSize, MaxContext: c.MaxPositionEmbeddings}
	H, nq, nkv, F := int64(c.HiddenSize), int64(c.NumHeads*c.HeadDim), int64(c.NumKVHeads*c.HeadDim), int64(c.IntermediateSize)
	d.LayerParams = int64(c.NumLayers) * (H*nq + 2*H*nkv + nq*H + 3*H*F)
	var layers int64
	for _, l := range m.Layers {
		for _, t := range []backend.Tensor{l.AttnNorm, l.Wq, l.Wk, l.Wv, l.Wo, l.Bq, l.Bk, l.Bv, l.QNorm, l.KNorm, l.MLPNorm, l.Wgate, l.Wup, l.Wdown} {
			layers += tensorBytes(t)
		}
	}
	embed, head := tensorBytes(m.Embed), tensorBytes(m.LMHead)
	d.WeightBytes = layers + tensorBytes(m.Norm) + embed
	d.DecodeWeightBytes = layers + tensorBytes(m.Norm) + head
	if m.LMHead != m.Embed {
		d.WeightBytes += head
	}
	d.KVBytesPerToken = int64(c.NumLayers) * nkv * 2 * 4
	d.KVBytesPerTokenBF16 = int64(c.NumLayers) * nkv * 2 * 2
	return d
}

// bencher runs the measurements on one loaded model.
type bencher struct {
	m         *model.Model
	model     *benchModel // rep.Model: the per-token KV size it learns goes into the report
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
	ctxEnd    time.Time     // deadline of the context being measured
	minFree   uint64        // least free device memory seen in this context
}

// benchObserver runs between the layers of a prefill: it aborts past the deadline,
// samples the device's free memory, and passes the layer on to inner (a scorer's
// collector) when set.
type benchObserver struct {
	bn    *bencher
	inner model.Observer
}

func (o *benchObserver) ObserveLayer(layer int, positions []int, x, q, k, v backend.Tensor) {
	o.bn.check()
	o.bn.sample()
	if o.inner != nil {
		o.inner.ObserveLayer(layer, positions, x, q, k, v)
	}
}

// check panics with errBudget past the context's deadline (recovered by guard).
func (bn *bencher) check() {
	if !bn.ctxEnd.IsZero() && time.Now().After(bn.ctxEnd) {
		panic(errBudget)
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

// guard runs f, turning a panic with an error that wraps backend.ErrOutOfMemory or is
// errBudget into an error (backend calls without an error result panic that way).
func guard(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if e, ok := r.(error); ok && (errors.Is(e, backend.ErrOutOfMemory) || errors.Is(e, errBudget)) {
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
func (bn *bencher) warmup(n int) error {
	return guard(func() error {
		cache := bn.m.NewCache(n + 4)
		defer release(cache)
		logits, err := bn.m.Forward(context.Background(), bn.randomIDs(n), 0, cache, model.ForwardOptions{})
		if err != nil {
			return err
		}
		_, err = bn.decode(cache, n, generate.Argmax(logits), 2, nil)
		return err
	})
}

// decode runs 2 warmup steps and then steps timed ones from position pos, the first
// token being first; it returns the time per timed step. Before the first timed step it
// calls atStart (nil: nothing).
func (bn *bencher) decode(cache backend.KVCache, pos, first, steps int, atStart func()) (time.Duration, error) {
	tok := first
	var t0 time.Time
	for i := 0; i < 2+steps; i++ {
		if i == 2 {
			if atStart != nil {
				atStart()
			}
			t0 = time.Now()
		}
		bn.check()
		logits, err := bn.m.Forward(context.Background(), []int{tok}, pos+i, cache, model.ForwardOptions{})
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

// kernels reads the backend's kernel times and starts a new period: nil unless the
// backend times its kernels (LUKV_CUDA_KERNEL_TIMES=1 with --device cuda).
func (bn *bencher) kernels() []backend.KernelTime {
	kp, ok := bn.m.Backend.(backend.KernelTimer)
	if !ok {
		return nil
	}
	st, err := kp.KernelTimes()
	if err != nil {
		return nil
	}
	return st
}

// floorMs is the decode floor for the given live KV bytes.
func (bn *bencher) floorMs(liveKV int64) float64 {
	return float64(bn.model.DecodeWeightBytes+liveKV) / bn.bandwidth * 1e3
}

// context measures one context length T: prefill, decode with the full cache and after
// each compression (ascending, each compacting the previous row's cache), the memory,
// and, when over, the eviction overhead.
func (bn *bencher) context(T int, over bool, ratios []float64) (row benchContext) {
	row = benchContext{Context: T, Status: "ok"}
	start := time.Now()
	defer func() { row.Seconds = time.Since(start).Seconds() }()
	if !bn.deadline.IsZero() && !start.Before(bn.deadline) {
		row.Status = "skipped"
		row.Error = "no time left in --max-seconds"
		fmt.Fprintf(bn.stderr, "bench: context %d: skipped (time budget)\n", T)
		return row
	}
	bn.ctxEnd = bn.deadline
	if bn.ctxBudget > 0 {
		if end := start.Add(bn.ctxBudget); bn.ctxEnd.IsZero() || end.Before(bn.ctxEnd) {
			bn.ctxEnd = end
		}
	}
	m, c := bn.m, bn.m.Config
	var cache backend.KVCache
	defer func() { release(cache) }()
	mem := &benchMemory{}
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
		bn.kernels() // a new kernel-time period
		t0 := time.Now()
		logits, err := m.Forward(context.Background(), ids, 0, cache, model.ForwardOptions{Observer: obs})
		if err != nil {
			return err
		}
		secs := time.Since(t0).Seconds()
		p := &benchPrefill{Seconds: secs, TokensPerSec: float64(T) / secs, Kernels: bn.kernels()}
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
		rowFor := func(ratio float64) (benchDecode, error) {
			d := benchDecode{Compression: ratio, Steps: bn.steps}
			held := cache.Len(0, 0)
			bn.kernels()
			per, err := bn.decode(cache, T, first, bn.steps, func() {
				d.LiveKVBytes, d.KVBytes = cache.LiveBytes(), cache.Bytes()
			})
			if err != nil {
				return d, err
			}
			if d.Kernels = bn.kernels(); d.Kernels != nil {
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
			if math.Abs(ratio-kvTargetRatio) < 1e-9 {
				row.KVTarget = &benchKVTarget{Ratio: ratio, LiveFraction: d.KVFraction, BytesFrac: float64(d.KVBytes) / float64(row.Decode[0].KVBytes)}
				row.KVTarget.Met = math.Abs(d.KVFraction-(1-ratio)) <= kvTargetSlack
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
		col := eviction.NewCollector(m, bn.scorer)
		obs.inner = col
		t0 = time.Now()
		_, err = m.Forward(context.Background(), ids, 0, cache, model.ForwardOptions{Observer: obs})
		obs.inner = nil
		if err != nil {
			return err
		}
		with := time.Since(t0).Seconds()
		phase = "allocation and compaction"
		method := eviction.Method{Scorer: bn.scorer, Allocator: eviction.UniformAllocator{}, Ratio: bn.overRatio, Sink: 4, Window: 1}
		t0 = time.Now()
		if err := method.Compress(cache, col.Scores, bn.steps+2); err != nil {
			return err
		}
		if err := bn.sync(); err != nil {
			return err
		}
		ac := time.Since(t0).Seconds()
		o := &benchOver{Scorer: bn.scorer.Name(), Ratio: bn.overRatio, PrefillSeconds: secs, WithScorerSeconds: with,
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
	case errors.Is(err, errBudget):
		row.Status, row.Error = "time budget", phase+": stopped by --max-seconds/--context-seconds"
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

// writeBenchTables prints the report as Markdown tables.
func writeBenchTables(w io.Writer, r *benchReport) {
	md := r.Model
	fmt.Fprintf(w, "# lukv bench: %s\n\n", filepath.Base(md.Dir))
	fmt.Fprintf(w, "%s, %d layers, hidden %d, %d/%d heads of %d, MLP %d, vocab %d. Device %s (%s).\n", md.Arch, md.Layers, md.Hidden, md.Heads, md.KVHeads, md.HeadDim, md.Intermediate, md.Vocab, r.Device, r.DeviceName)
	fmt.Fprintf(w, "Prefill matmul: %s.\n", r.MatMulPath)
	fmt.Fprintf(w, "Weights %s as stored (a decode step reads %s); KV %s per token (as the cache stores it). Floors: %.2g B/s, %.0f TFLOP/s. %s.\n\n",
		humanBytes(md.WeightBytes), humanBytes(md.DecodeWeightBytes), humanBytes(md.KVBytesPerToken), r.Bandwidth, r.PeakTFLOPS, r.Date)

	fmt.Fprintf(w, "## Prefill\n\n| context | status | seconds | tokens/s | TFLOP/s | %% of %.0f | peak device memory |\n|---|---|---|---|---|---|---|\n", r.PeakTFLOPS)
	for _, c := range r.Contexts {
		p, mem := " |  |  | ", ""
		if c.Prefill != nil {
			p = fmt.Sprintf("%.3f | %.0f | %.3g | %.3g%%", c.Prefill.Seconds, c.Prefill.TokensPerSec, c.Prefill.TFLOPS, c.Prefill.PctPeak)
		}
		if c.Memory != nil && c.Memory.Total > 0 {
			mem = fmt.Sprintf("%s of %s", humanBytes(int64(c.Memory.PeakUsed)), humanBytes(int64(c.Memory.Total)))
		}
		fmt.Fprintf(w, "| %d | %s | %s | %s |\n", c.Context, statusCell(c), p, mem)
	}
	fmt.Fprintf(w, "\n## Decode\n\n| context | compression | live KV | KV kept | ms/token | floor ms | x floor | compaction ms | device memory freed |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, c := range r.Contexts {
		for _, d := range c.Decode {
			comp, freed := "full", ""
			if d.Compression > 0 {
				comp = fmt.Sprintf("%.0f%%", 100*d.Compression)
				if d.MemFreeAfter > 0 {
					freed = humanBytes(d.MemReleasedBytes)
				}
			}
			compact := ""
			if d.CompactMs > 0 {
				compact = fmt.Sprintf("%.1f", d.CompactMs)
			}
			fmt.Fprintf(w, "| %d | %s | %s | %.1f%% | %.3f | %.3f | %.2f | %s | %s |\n", c.Context, comp, humanBytes(d.LiveKVBytes), 100*d.KVFraction,
				d.MsPerToken, d.FloorMs, d.FloorRatio, compact, freed)
		}
		if len(c.Decode) == 0 {
			fmt.Fprintf(w, "| %d | %s | | | | | | | |\n", c.Context, statusCell(c))
		}
	}
	writeKernelTimes(w, r)
	fmt.Fprintf(w, "\n## Eviction overhead\n\n| context | scorer | prefill s | with scorer s | scoring s | allocation+compaction s | share of prefill |\n|---|---|---|---|---|---|---|\n")
	for _, c := range r.Contexts {
		if o := c.Overhead; o != nil {
			fmt.Fprintf(w, "| %d | %s at %.0f%% | %.3f | %.3f | %.3f | %.3f | %.1f%% |\n", c.Context, o.Scorer, 100*o.Ratio, o.PrefillSeconds, o.WithScorerSeconds, o.ScoreSeconds, o.AllocCompactSecond, o.SharePct)
		}
	}
	fmt.Fprintf(w, "\n## KV kept at %.0f%% compression (target %.0f%% +- %.0f%%)\n\n", 100*kvTargetRatio, 100*(1-kvTargetRatio), 100*kvTargetSlack)
	for _, c := range r.Contexts {
		if k := c.KVTarget; k != nil {
			met := "met"
			if !k.Met {
				met = "MISSED"
			}
			fmt.Fprintf(w, "- context %d: live KV %.2f%% of the full cache (allocated %.2f%%): %s\n", c.Context, 100*k.LiveFraction, 100*k.BytesFrac, met)
		}
	}
}

// writeKernelTimes writes, for each timed decode row and prefill, the GPU time per
// kernel (per token for decode) and what the kernels add up to against the wall time:
// the rest is launch gaps and host time. Only runs with LUKV_CUDA_KERNEL_TIMES=1 have
// kernel times (and their wall times include the timing's own cost).
func writeKernelTimes(w io.Writer, r *benchReport) {
	table := func(title string, stats []backend.KernelTime, per float64, wallMs float64, unit string) {
		total := 0.0
		for _, s := range stats {
			total += s.Seconds
		}
		fmt.Fprintf(w, "\n### %s\n\nKernels: %.3f ms%s of GPU time against %.3f ms%s of wall time (with kernel timing).\n\n", title, 1e3*total/per, unit, wallMs, unit)
		fmt.Fprintf(w, "| kernel | calls%s | us%s | share |\n|---|---|---|---|\n", unit, unit)
		for _, s := range stats {
			fmt.Fprintf(w, "| %s | %.1f | %.1f | %.1f%% |\n", s.Name, float64(s.Calls)/per, 1e6*s.Seconds/per, 100*s.Seconds/max(total, 1e-12))
		}
	}
	header := false
	for _, c := range r.Contexts {
		if c.Prefill != nil && len(c.Prefill.Kernels) > 0 {
			if !header {
				fmt.Fprintf(w, "\n## Kernel times (GPU time per kernel, LUKV_CUDA_KERNEL_TIMES=1)\n")
				header = true
			}
			table(fmt.Sprintf("context %d: prefill", c.Context), c.Prefill.Kernels, 1, 1e3*c.Prefill.Seconds, "")
		}
		for _, d := range c.Decode {
			if len(d.Kernels) == 0 || d.KernelSteps == 0 {
				continue
			}
			if !header {
				fmt.Fprintf(w, "\n## Kernel times (GPU time per kernel, LUKV_CUDA_KERNEL_TIMES=1)\n")
				header = true
			}
			comp := "full cache"
			if d.Compression > 0 {
				comp = fmt.Sprintf("%.0f%% evicted", 100*d.Compression)
			}
			table(fmt.Sprintf("context %d: decode, %s", c.Context, comp), d.Kernels, float64(d.KernelSteps), d.MsPerToken, "/token")
		}
	}
}

func statusCell(c benchContext) string {
	if c.Status == "ok" {
		return "ok"
	}
	return c.Status + ": " + strings.ReplaceAll(c.Error, "|", "/")
}
