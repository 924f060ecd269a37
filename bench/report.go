// Package bench measures a model's speed against its floors: prefill latency and
// TFLOP/s against the peak matrix rate, decode ms/token with the full and compressed KV
// cache against (weight bytes + live KV bytes) / bandwidth, the eviction overhead and
// the device memory. Report is what a run measured (JSON), WriteTables prints it as
// Markdown.
package bench

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/memplan"
	"github.com/lukv/lukv/model"
)

// Default ceilings of the floors: the H200's measured device-to-device copy rate and
// dense bf16 matrix rate (shared/GPU.md).
const (
	DefaultBandwidth  = 4.3e12 // bytes/s
	DefaultPeakTFLOPS = 790.0  // TFLOP/s
	// KVTargetRatio is the compression whose kept KV must be 20% +- 2% of the full.
	KVTargetRatio = 0.8
	KVTargetSlack = 0.02
)

// Report is everything a run measured (lukv-run bench --json writes it).
type Report struct {
	Command    string    `json:"command"`
	Date       string    `json:"date"`
	Version    string    `json:"version"`
	Device     string    `json:"device"`
	DeviceName string    `json:"device_name"`
	MatMulPath string    `json:"matmul_path"`
	Model      ModelInfo `json:"model"`
	Bandwidth  float64   `json:"bandwidth_bytes_per_sec"`
	PeakTFLOPS float64   `json:"peak_tflops"`
	Settings   Settings  `json:"settings"`
	Contexts   []Context `json:"contexts"`
	Seconds    float64   `json:"seconds"`
}

// ModelInfo is the measured model: its shape and its sizes on the device.
type ModelInfo struct {
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

// Settings are what a run measures.
type Settings struct {
	Contexts    []int     `json:"contexts"`      // context lengths, in tokens
	Compression []float64 `json:"compression"`   // ratios of the compressed decode rows
	DecodeSteps int       `json:"decode_steps"`  // timed steps per decode row (after 2 warmup steps)
	Warmup      int       `json:"warmup_tokens"` // tokens of the warmup prefill
	Scorer      string    `json:"scorer"`        // of the eviction overhead (Run records Bench.Scorer's name)
	// OverheadRatio is the compression of the eviction-overhead measurement, made at the
	// contexts of OverheadContexts.
	OverheadRatio    float64 `json:"overhead_ratio"`
	OverheadContexts []int   `json:"overhead_contexts"`
	Seed             uint64  `json:"seed"` // of the random token ids and scores
	// MaxSeconds and ContextSeconds are time budgets of the whole run (after the warmup)
	// and of each context; 0: none.
	MaxSeconds     float64 `json:"max_seconds"`
	ContextSeconds float64 `json:"context_seconds"`
}

// Context is everything measured at one context length. Status is "ok", "oom",
// "time budget" (a phase passed its budget: what finished before is kept), "skipped"
// (no budget left to start), "interrupted" (the run was cancelled) or "error".
type Context struct {
	Context  int       `json:"context"`
	Status   string    `json:"status"`
	Error    string    `json:"error,omitempty"`
	Prefill  *Prefill  `json:"prefill,omitempty"`
	Decode   []Decode  `json:"decode,omitempty"`
	Overhead *Overhead `json:"overhead,omitempty"`
	Memory   *Memory   `json:"memory,omitempty"`
	// KVTarget checks the kept KV at KVTargetRatio against 20% +- 2% of the full.
	KVTarget *KVTarget `json:"kv_target,omitempty"`
	Seconds  float64   `json:"seconds"`
}

// Prefill is a context's prefill: its time and FLOP rate.
type Prefill struct {
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

// Decode is one decode row: the full cache (compression 0) or one compressed.
type Decode struct {
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

// Overhead is the eviction overhead: scoring (the prefill with the scorer's collector
// minus the plain prefill), allocation and compaction, as a share of the plain prefill.
type Overhead struct {
	Scorer             string  `json:"scorer"`
	Ratio              float64 `json:"ratio"`
	PrefillSeconds     float64 `json:"prefill_seconds"`
	WithScorerSeconds  float64 `json:"prefill_with_scorer_seconds"`
	ScoreSeconds       float64 `json:"score_seconds"`
	AllocCompactSecond float64 `json:"alloc_compact_seconds"`
	SharePct           float64 `json:"share_pct"`
}

// Memory is the device memory (cuda): free before the prefill, the least free
// seen during the context's prefills (sampled at every layer), the peak use that means.
type Memory struct {
	Total           uint64 `json:"total"`
	FreeBefore      uint64 `json:"free_before"`
	MinFree         uint64 `json:"min_free"`
	PeakUsed        uint64 `json:"peak_used"`
	PeakAboveBefore uint64 `json:"peak_above_before"`
}

// KVTarget checks the KV kept at KVTargetRatio against 1-KVTargetRatio of the full.
type KVTarget struct {
	Ratio        float64 `json:"ratio"`
	LiveFraction float64 `json:"live_fraction"`
	BytesFrac    float64 `json:"bytes_fraction"`
	Met          bool    `json:"met"`
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

// DescribeModel summarises the configuration and the weights' sizes on the device.
func DescribeModel(dir string, m *model.Model) ModelInfo {
	c := m.Config
	d := ModelInfo{Dir: dir, Arch: c.Arch.String(), Layers: c.NumLayers, Hidden: c.HiddenSize, Heads: c.NumHeads, KVHeads: c.NumKVHeads,
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

// WriteTables prints the report as Markdown tables.
func WriteTables(w io.Writer, r *Report) {
	md := r.Model
	fmt.Fprintf(w, "# lukv bench: %s\n\n", filepath.Base(md.Dir))
	fmt.Fprintf(w, "%s, %d layers, hidden %d, %d/%d heads of %d, MLP %d, vocab %d. Device %s (%s).\n", md.Arch, md.Layers, md.Hidden, md.Heads, md.KVHeads, md.HeadDim, md.Intermediate, md.Vocab, r.Device, r.DeviceName)
	fmt.Fprintf(w, "Prefill matmul: %s.\n", r.MatMulPath)
	fmt.Fprintf(w, "Weights %s as stored (a decode step reads %s); KV %s per token (as the cache stores it). Floors: %.2g B/s, %.0f TFLOP/s. %s.\n\n",
		memplan.FormatSize(md.WeightBytes), memplan.FormatSize(md.DecodeWeightBytes), memplan.FormatSize(md.KVBytesPerToken), r.Bandwidth, r.PeakTFLOPS, r.Date)

	fmt.Fprintf(w, "## Prefill\n\n| context | status | seconds | tokens/s | TFLOP/s | %% of %.0f | peak device memory |\n|---|---|---|---|---|---|---|\n", r.PeakTFLOPS)
	for _, c := range r.Contexts {
		p, mem := " |  |  | ", ""
		if c.Prefill != nil {
			p = fmt.Sprintf("%.3f | %.0f | %.3g | %.3g%%", c.Prefill.Seconds, c.Prefill.TokensPerSec, c.Prefill.TFLOPS, c.Prefill.PctPeak)
		}
		if c.Memory != nil && c.Memory.Total > 0 {
			mem = fmt.Sprintf("%s of %s", memplan.FormatSize(int64(c.Memory.PeakUsed)), memplan.FormatSize(int64(c.Memory.Total)))
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
					freed = memplan.FormatSize(d.MemReleasedBytes)
				}
			}
			compact := ""
			if d.CompactMs > 0 {
				compact = fmt.Sprintf("%.1f", d.CompactMs)
			}
			fmt.Fprintf(w, "| %d | %s | %s | %.1f%% | %.3f | %.3f | %.2f | %s | %s |\n", c.Context, comp, memplan.FormatSize(d.LiveKVBytes), 100*d.KVFraction,
				d.MsPerToken, d.FloorMs, d.FloorRatio, compact, freed)
		}
		if len(c.Decode) == 0 {
			fmt.Fprintf(w, "| %d | %s | | | | | | | |\n", c.Context, statusCell(c))
		}
	}
	WriteKernelTimes(w, r)
	fmt.Fprintf(w, "\n## Eviction overhead\n\n| context | scorer | prefill s | with scorer s | scoring s | allocation+compaction s | share of prefill |\n|---|---|---|---|---|---|---|\n")
	for _, c := range r.Contexts {
		if o := c.Overhead; o != nil {
			fmt.Fprintf(w, "| %d | %s at %.0f%% | %.3f | %.3f | %.3f | %.3f | %.1f%% |\n", c.Context, o.Scorer, 100*o.Ratio, o.PrefillSeconds, o.WithScorerSeconds, o.ScoreSeconds, o.AllocCompactSecond, o.SharePct)
		}
	}
	fmt.Fprintf(w, "\n## KV kept at %.0f%% compression (target %.0f%% +- %.0f%%)\n\n", 100*KVTargetRatio, 100*(1-KVTargetRatio), 100*KVTargetSlack)
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

// WriteKernelTimes writes, for each timed decode row and prefill, the GPU time
// per kernel (per token for decode) and what the kernels add up to against the wall
// time: the rest is launch gaps and host time. Only runs with LUKV_CUDA_KERNEL_TIMES=1 have
// kernel times (and their wall times include the timing's own cost).
func WriteKernelTimes(w io.Writer, r *Report) {
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

func statusCell(c Context) string {
	if c.Status == "ok" {
		return "ok"
	}
	return c.Status + ": " + strings.ReplaceAll(c.Error, "|", "/")
}
