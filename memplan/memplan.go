// Package memplan turns the memory budgets a user thinks in (kept KV tokens per head, a
// KV memory size) into an eviction ratio, and checks before anything is allocated that
// the weights, the KV cache at its peak and the working memory of one chunk fit the
// memory there is.
//
// With chunked prefill and eviction (generate.ChunkedPrefill, eviction.ChunkedEvictor)
// every head holds at most its budget plus one chunk during the prefill, and its budget
// plus the tail (question and new tokens) afterwards, so the KV cache's peak is
//
//	PeakKV = (Budget + max(Chunk, Tail)) x KVBytesPerToken
//	KVBytesPerToken = layers x KV heads x 2 (K and V) x head dim x element bytes
//
// where Budget is the average kept tokens per head after the context.
package memplan

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/loader"
	"github.com/lukv/lukv/quant"
)

// ParseSize reads a byte size: a number with an optional unit, binary (KiB, MiB, GiB,
// TiB) or decimal (kB/KB, MB, GB, TB), B or none for bytes; "2GiB", "1.5 GB", "4096".
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return !(r >= '0' && r <= '9' || r == '.') })
	num, unit := t, ""
	if i >= 0 {
		num, unit = t[:i], strings.TrimSpace(t[i:])
	}
	units := map[string]float64{"": 1, "b": 1,
		"k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
		"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
	mult, ok := units[strings.ToLower(unit)]
	v, err := strconv.ParseFloat(num, 64)
	if !ok || err != nil || num == "" {
		return 0, fmt.Errorf("size %q: want a number with an optional unit (B, KiB, MiB, GiB, TiB, kB, MB, GB, TB), e.g. 2GiB", s)
	}
	b := v * mult
	if b < 1 || b > math.MaxInt64/2 {
		return 0, fmt.Errorf("size %q: want at least 1 byte and less than 4 EiB", s)
	}
	return int64(b), nil
}

// FormatSize prints a byte count with a binary unit ("1.5 GiB").
func FormatSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// Available reports the bytes a run may use (host or device memory).
type Available func() (int64, error)

// ErrUnknown is returned by an Available that cannot tell (no /proc/meminfo): Check then
// passes.
var ErrUnknown = errors.New("available memory unknown")

// HostAvailable is the host's MemAvailable from /proc/meminfo (Linux): the memory that can
// be allocated without swapping, page cache included.
func HostAvailable() (int64, error) {
	f, err := os.Open("/proc/meminfo")
	if errors.Is(err, os.ErrNotExist) {
		return 0, ErrUnknown // not Linux
	}
	if err != nil {
		return 0, fmt.Errorf("host memory: %w", err)
	}
	defer f.Close()
	return ParseMemAvailable(f)
}

// ParseMemAvailable reads the MemAvailable line of a /proc/meminfo listing, in bytes.
func ParseMemAvailable(r io.Reader) (int64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "MemAvailable:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil || kb < 0 {
				return 0, fmt.Errorf("/proc/meminfo: MemAvailable %q is not a number of kB", f[1])
			}
			return kb * 1024, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("/proc/meminfo: %w", err)
	}
	return 0, errors.New("/proc/meminfo: no MemAvailable line")
}

// DeviceAvailable returns the free device memory of a backend that reports it (the CUDA
// backend's MemInfo), or host memory for one that does not (the CPU backend).
func DeviceAvailable(b backend.Backend) Available {
	if d, ok := b.(interface{ MemInfo() (free, total uint64) }); ok {
		return func() (int64, error) {
			free, _ := d.MemInfo()
			return int64(min(free, math.MaxInt64)), nil
		}
	}
	return HostAvailable
}

// KVElemBytes is the bytes a backend's KV cache stores per element (4 for float32, 2
// for bf16): the backend's own KVElemBytes where it has one (both of lukv's do), else 4.
// (It used to probe with a tiny cache, which the CUDA backend refuses: its head
// dimension must be a multiple of 4.)
func KVElemBytes(b backend.Backend) int {
	if e, ok := b.(interface{ KVElemBytes() int }); ok {
		return e.KVElemBytes()
	}
	return 4
}

// ParamCount is the number of weights of a Llama-family checkpoint described by cfg.
func ParamCount(cfg *loader.Config) int64 {
	H, D, F, V := int64(cfg.HiddenSize), int64(cfg.HeadDim), int64(cfg.IntermediateSize), int64(cfg.VocabSize)
	q, kv := int64(cfg.NumHeads)*D, int64(cfg.NumKVHeads)*D
	layer := 2*H + q*H + 2*kv*H + H*q + 3*F*H
	if cfg.AttentionBias {
		layer += q + 2*kv
	}
	if cfg.QKNorm {
		layer += 2 * D
	}
	n := V*H + H + int64(cfg.NumLayers)*layer
	if !cfg.TieWordEmbeddings {
		n += V * H
	}
	return n
}

// Plan is one run's memory: the weights, the KV cache at its peak and the working memory
// of one chunk's forward pass and scoring.
type Plan struct {
	Config      *loader.Config
	WeightBytes int64 // the weights as the backend holds them
	KVElemBytes int   // bytes per cached element (KVElemBytes)
	Context     int   // tokens prefilled (and evicted) chunk by chunk
	Tail        int   // tokens after the context: question and new tokens
	Chunk       int   // chunk size
	Budget      int   // average kept tokens per head after the context (Context without eviction)
}

// KVBytesPerToken is the cache's bytes per token held in every head of every layer.
func (p Plan) KVBytesPerToken() int64 {
	c := p.Config
	return int64(c.NumLayers) * int64(c.NumKVHeads) * 2 * int64(c.HeadDim) * int64(p.KVElemBytes)
}

// PeakKVBytes is the KV cache at its peak: budget plus one chunk during the prefill,
// budget plus the tail afterwards.
func (p Plan) PeakKVBytes() int64 {
	return int64(p.Budget+max(min(p.Chunk, p.Context), p.Tail)) * p.KVBytesPerToken()
}

// WorkspaceBytes is the float32 working memory of one chunk: the forward pass's
// activations ([chunk, H] x 3, queries and attention output, keys and values, the MLP's
// gate and up, one row of logits) plus eviction's host copies for scoring one layer (the
// chunk's queries twice, keys and values, each head's kept keys and values, and the
// scores laid over every position seen).
func (p Plan) WorkspaceBytes() int64 {
	c := p.Config
	n := int64(min(p.Chunk, p.Context))
	H, F, V := int64(c.HiddenSize), int64(c.IntermediateSize), int64(c.VocabSize)
	q, kv := int64(c.NumHeads*c.HeadDim), int64(c.NumKVHeads*c.HeadDim)
	act := n*(3*H+2*q+2*kv+2*F) + 2*V
	score := n*(3*q+2*kv) + 2*kv*(int64(p.Budget)+n) + 2*int64(c.NumKVHeads)*int64(p.Context)
	return 4 * (act + score)
}

// Total is weights + peak KV + workspace.
func (p Plan) Total() int64 { return p.WeightBytes + p.PeakKVBytes() + p.WorkspaceBytes() }

// Check compares the plan with the available memory and returns an error naming the
// sizes and the flags that lower them when it does not fit.
func (p Plan) Check(available Available) error {
	avail, err := available()
	if errors.Is(err, ErrUnknown) {
		return nil
	}
	if err != nil {
		return err
	}
	if p.WeightBytes > avail {
		return fmt.Errorf("memory: the weights alone need %s, more than the %s available; use a smaller model or a device with more memory",
			FormatSize(p.WeightBytes), FormatSize(avail))
	}
	if t := p.Total(); t > avail {
		return fmt.Errorf("memory: weights %s + KV cache %s (%d kept + %d tokens per head, %s per token) + workspace %s = %s, more than the %s available; lower --kv-budget or --max-kv-memory (or raise --compression), or lower --chunk",
			FormatSize(p.WeightBytes), FormatSize(p.PeakKVBytes()), p.Budget, max(min(p.Chunk, p.Context), p.Tail), FormatSize(p.KVBytesPerToken()),
			FormatSize(p.WorkspaceBytes()), FormatSize(t), FormatSize(avail))
	}
	return nil
}

// RatioForBudget is the compression ratio that leaves budget tokens per head on average
// out of a context of contextTokens: 1 - budget/contextTokens, or 0 (no eviction) when the
// budget holds the whole context. A budget below sink + window (what every head keeps
// anyway) or above the model's context length is an error naming flag.
func RatioForBudget(flag string, budget, contextTokens, sink, window, modelContext int) (float64, error) {
	if budget < sink+window || budget < 1 {
		return 0, fmt.Errorf("%s: a budget of %d tokens per head is below what every head keeps anyway (--sink %d + --window %d)", flag, budget, sink, window)
	}
	if budget > modelContext {
		return 0, fmt.Errorf("%s: a budget of %d tokens per head is above the model's context of %d tokens", flag, budget, modelContext)
	}
	if contextTokens <= budget {
		return 0, nil
	}
	return 1 - float64(budget)/float64(contextTokens), nil
}

// BudgetForMemory is the average kept tokens per head that a KV memory limit of maxKV
// bytes leaves, once every head also holds one chunk (or the tail, if longer) at the peak:
// floor(maxKV / bytesPerToken) - max(chunk, tail).
func BudgetForMemory(maxKV, bytesPerToken int64, chunk, tail int) (int, error) {
	if bytesPerToken < 1 {
		return 0, fmt.Errorf("--max-kv-memory: %d bytes per token", bytesPerToken)
	}
	held := maxKV / bytesPerToken
	extra := int64(max(chunk, tail))
	if held <= extra {
		return 0, fmt.Errorf("--max-kv-memory %s holds %d tokens per head (%s per token), not more than one chunk or tail of %d tokens; raise it or lower --chunk",
			FormatSize(maxKV), held, FormatSize(bytesPerToken), extra)
	}
	return int(min(held-extra, math.MaxInt32)), nil
}

// WeightBytes is the memory backend b holds the weights of cfg in when loaded as format
// (model.LoadOptions.Weights): float32 on the CPU unless bf16 matrices are kept as bf16;
// on a device, the checkpoint's own width for bf16/f16 checkpoints (the CUDA backend keeps
// weights that are exact in 16 bits in 16 bits) and float32 otherwise; with int8, the
// seven linear projections at one byte per weight plus a float32 scale per
// quant.GroupSize (on a backend with int8 kernels).
func WeightBytes(cfg *loader.Config, b backend.Backend, format loader.WeightFormat) int64 {
	n := ParamCount(cfg)
	stored16 := false
	switch strings.ToLower(cfg.TorchDType) {
	case "bfloat16", "float16", "bf16", "f16":
		stored16 = true
	}
	keep, canKeep := b.(backend.BF16Weights)
	per := int64(4) // bytes per float weight
	switch {
	case b.Name() != "cpu" && stored16, format == loader.WeightsBF16 && canKeep:
		per = 2
	case canKeep && keep.KeepsBF16() && stored16 && format != loader.WeightsF32:
		per = 2
	}
	if _, ok := b.(backend.Int8Weights); ok && format == loader.WeightsInt8 {
		proj := ProjectionParams(cfg)
		return (n-proj)*per + proj + proj/quant.GroupSize*4
	}
	return n * per
}

// ProjectionParams is the number of weights in the linear projections (q, k, v, o, gate,
// up, down) of every layer: what int8 weights quantize.
func ProjectionParams(cfg *loader.Config) int64 {
	H, D, F := int64(cfg.HiddenSize), int64(cfg.HeadDim), int64(cfg.IntermediateSize)
	q, kv := int64(cfg.NumHeads)*D, int64(cfg.NumKVHeads)*D
	return int64(cfg.NumLayers) * (2*q*H + 2*kv*H + 3*F*H)
}

// Request is what a user asked for on the command line.
type Request struct {
	Chunk       int     // --chunk (>= 1)
	KVBudget    int     // --kv-budget; 0: not given
	MaxKVMemory int64   // --max-kv-memory in bytes; 0: not given
	Evict       bool    // an eviction method is set
	Ratio       float64 // --compression, used when neither budget is given
	RatioSet    bool    // --compression was given explicitly
	Sink        int
	Window      int
	Context     int // tokens prefilled chunk by chunk
	Tail        int // question and new tokens
}

// Resolve validates a request for the model cfg (weights of weightBytes, a cache of
// kvElem bytes per element) and returns the run's plan and the compression ratio to
// evict at. It does not check the plan against memory (Plan.Check does).
func Resolve(cfg *loader.Config, weightBytes int64, kvElem int, r Request) (Plan, float64, error) {
	p := Plan{Config: cfg, WeightBytes: weightBytes, KVElemBytes: kvElem, Context: r.Context, Tail: r.Tail, Chunk: r.Chunk, Budget: r.Context}
	if r.Chunk < 1 {
		return p, 0, fmt.Errorf("--chunk %d: want at least 1 token", r.Chunk)
	}
	if r.KVBudget < 0 {
		return p, 0, fmt.Errorf("--kv-budget %d: want a number of tokens per head >= 1", r.KVBudget)
	}
	if r.MaxKVMemory < 0 {
		return p, 0, fmt.Errorf("--max-kv-memory: negative size")
	}
	if r.KVBudget > 0 && r.MaxKVMemory > 0 {
		return p, 0, errors.New("give --kv-budget or --max-kv-memory, not both")
	}
	budgetFlag := ""
	switch {
	case r.KVBudget > 0:
		budgetFlag = "--kv-budget"
	case r.MaxKVMemory > 0:
		budgetFlag = "--max-kv-memory"
	}
	if budgetFlag == "" {
		if r.Evict {
			p.Budget = r.Context - int(math.Floor(float64(r.Context)*r.Ratio+1e-9))
		}
		return p, r.Ratio, nil
	}
	if !r.Evict {
		return p, 0, fmt.Errorf("%s needs an eviction --method (it sets the compression of one)", budgetFlag)
	}
	if r.RatioSet {
		return p, 0, fmt.Errorf("give %s or --compression, not both (%s sets the compression)", budgetFlag, budgetFlag)
	}
	budget := r.KVBudget
	if r.MaxKVMemory > 0 {
		var err error
		if budget, err = BudgetForMemory(r.MaxKVMemory, p.KVBytesPerToken(), min(r.Chunk, r.Context), r.Tail); err != nil {
			return p, 0, err
		}
		budget = min(budget, cfg.MaxPositionEmbeddings)
	}
	ratio, err := RatioForBudget(budgetFlag, budget, r.Context, r.Sink, r.Window, cfg.MaxPositionEmbeddings)
	if err != nil {
		return p, 0, err
	}
	p.Budget = min(budget, r.Context)
	return p, ratio, nil
}
