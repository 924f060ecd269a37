package main

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/bench"
)

// readBench parses a --json report.
func readBench(t *testing.T, path string) bench.Report {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rep bench.Report
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatalf("--json output is not a report: %v", err)
	}
	return rep
}

// TestBenchCPU runs bench on the CPU with the embedded model at tiny sizes and checks
// the report: every row measured, the floors and FLOP counts from their formulas (the
// weight bytes counted here from the configuration alone), the kept KV at each
// compression, and the Markdown tables.
func TestBenchCPU(t *testing.T) {
	js := filepath.Join(t.TempDir(), "bench.json")
	prof := filepath.Join(t.TempDir(), "cpu.pprof")
	out, progress, err := runCLI(t, "bench", "--contexts", "64,160", "--compression", "0.8,0.5", "--decode-steps", "3",
		"--warmup", "16", "--overhead-contexts", "160", "--json", js, "--cpuprofile", prof)
	if err != nil {
		t.Fatal(err)
	}
	// A pprof profile is gzip-compressed protobuf.
	if data, err := os.ReadFile(prof); err != nil || len(data) < 2 || data[0] != 0x1f || data[1] != 0x8b {
		t.Errorf("--cpuprofile %s: %d bytes, error %v; want a gzip-compressed profile", prof, len(data), err)
	}
	rep := readBench(t, js)
	md := rep.Model
	// lukv-tiny on the CPU with --weights auto: the matrices bf16 as stored, the norm
	// vectors float32; tied embeddings, so the LM head is the table and a decode step
	// reads all of it.
	H, nq, nkv, F, V, L := md.Hidden, md.Heads*md.HeadDim, md.KVHeads*md.HeadDim, md.Intermediate, md.Vocab, md.Layers
	layerParams := int64(L * (H*nq + 2*H*nkv + nq*H + 3*H*F))
	wantBytes := 2*(layerParams+int64(V*H)) + 4*(int64(L*2*H)+int64(H))
	if md.LayerParams != layerParams || md.WeightBytes != wantBytes || md.DecodeWeightBytes != wantBytes {
		t.Errorf("model sizes %+v, want %d layer params and %d weight bytes", md, layerParams, wantBytes)
	}
	if md.KVBytesPerToken != int64(L*nkv*2*4) {
		t.Errorf("KV bytes per token %d, want %d", md.KVBytesPerToken, L*nkv*2*4)
	}
	if rep.Device != "cpu" || len(rep.Contexts) != 2 || rep.Settings.Compression[0] != 0.5 {
		t.Fatalf("report: device %q, %d contexts, compression %v (want cpu, 2, sorted)", rep.Device, len(rep.Contexts), rep.Settings.Compression)
	}
	for _, c := range rep.Contexts {
		T := c.Context
		if c.Status != "ok" || c.Prefill == nil || len(c.Decode) != 3 {
			t.Fatalf("context %d: status %q (%s), %d decode rows", T, c.Status, c.Error, len(c.Decode))
		}
		p := c.Prefill
		if p.Seconds <= 0 || math.Abs(p.TokensPerSec-float64(T)/p.Seconds) > 1e-6*p.TokensPerSec {
			t.Errorf("context %d: prefill %+v", T, p)
		}
		if want := 2*float64(layerParams)*float64(T) + 2*float64(H*V); p.LinearFLOP != want {
			t.Errorf("context %d: linear FLOP %g, want %g", T, p.LinearFLOP, want)
		}
		if want := 2 * float64(T*T) * float64(md.HeadDim*md.Heads*L); p.AttentionFLOP != want {
			t.Errorf("context %d: attention FLOP %g, want %g", T, p.AttentionFLOP, want)
		}
		for i, d := range c.Decode {
			wantRatio := []float64{0, 0.5, 0.8}[i]
			kept := int(math.Floor(float64(T)*(1-wantRatio) + 1e-9))
			if d.Compression != wantRatio || d.Steps != 3 || d.MsPerToken <= 0 {
				t.Errorf("context %d row %d: %+v", T, i, d)
				continue
			}
			if want := float64(kept) / float64(T); math.Abs(d.KVFraction-want) > 1e-12 {
				t.Errorf("context %d at %.1f: KV fraction %g, want %d/%d", T, wantRatio, d.KVFraction, kept, T)
			}
			// Live KV at the first timed step: the kept tokens and the 2 warmup steps'.
			if want := int64(kept+2) * md.KVBytesPerToken; d.LiveKVBytes != want {
				t.Errorf("context %d at %.1f: live KV %d, want %d", T, wantRatio, d.LiveKVBytes, want)
			}
			floor := float64(md.DecodeWeightBytes+d.LiveKVBytes) / bench.DefaultBandwidth * 1e3
			if math.Abs(d.FloorMs-floor) > 1e-9*floor || math.Abs(d.FloorRatio-d.MsPerToken/floor) > 1e-9*d.FloorRatio {
				t.Errorf("context %d at %.1f: floor %g ms (x%g), want %g ms", T, wantRatio, d.FloorMs, d.FloorRatio, floor)
			}
			if i > 0 && (d.KVBytesReleased <= 0 || d.CompactedFrom != c.Decode[i-1].Compression) {
				t.Errorf("context %d at %.1f: compaction from %v released %d bytes", T, wantRatio, d.CompactedFrom, d.KVBytesReleased)
			}
		}
		k := c.KVTarget
		if k == nil || k.Ratio != 0.8 || k.Met != (math.Abs(k.LiveFraction-0.2) <= 0.02) || k.LiveFraction != c.Decode[2].KVFraction {
			t.Errorf("context %d: KV target %+v", T, k)
		}
		if c.Memory != nil {
			t.Errorf("context %d: device memory reported on the CPU: %+v", T, c.Memory)
		}
	}
	if rep.Contexts[0].Overhead != nil {
		t.Error("eviction overhead measured at 64, which --overhead-contexts left out")
	}
	o := rep.Contexts[1].Overhead
	if o == nil || o.Scorer != "expected-attention" || o.Ratio != 0.8 || o.WithScorerSeconds <= 0 || o.AllocCompactSecond <= 0 ||
		math.Abs(o.SharePct-100*(o.WithScorerSeconds-o.PrefillSeconds+o.AllocCompactSecond)/o.PrefillSeconds) > 1e-9*math.Abs(o.SharePct) {
		t.Errorf("eviction overhead at 160: %+v", o)
	}
	for _, want := range []string{"## Prefill", "## Decode", "## Eviction overhead", "| 160 | 80% |", "| 64 | full |", "context 160: live KV 20.00% of the full cache"} {
		if !strings.Contains(out, want) {
			t.Errorf("tables lack %q:\n%s", want, out)
		}
	}
	if !strings.Contains(progress, "bench: context 160: prefill") {
		t.Errorf("no progress on stderr: %q", progress)
	}
}

// TestBenchTimeBudget: with no time left every context is reported as skipped, and the
// run still succeeds.
func TestBenchTimeBudget(t *testing.T) {
	js := filepath.Join(t.TempDir(), "bench.json")
	if _, _, err := runCLI(t, "bench", "--contexts", "32,48", "--decode-steps", "1", "--warmup", "8", "--max-seconds", "1e-9", "--json", js); err != nil {
		t.Fatal(err)
	}
	rep := readBench(t, js)
	for _, c := range rep.Contexts {
		if c.Status != "skipped" || c.Prefill != nil {
			t.Errorf("context %d: status %q, prefill %v; want skipped", c.Context, c.Status, c.Prefill)
		}
	}
}

func TestBenchErrors(t *testing.T) {
	cases := []struct {
		args []string
		want []string
	}{
		{[]string{"bench", "--contexts", "1000,20000"}, []string{"20000", "16384", "max_position_embeddings"}},
		{[]string{"bench", "--contexts", "16380"}, []string{"16380", "34 decode steps", "16414 positions"}},
		{[]string{"bench", "--compression", "0.5,1.2"}, []string{"--compression", "1.2"}},
		{[]string{"bench", "--contexts", "0"}, []string{"--contexts", "must be > 0"}},
		{[]string{"bench", "--decode-steps", "0"}, []string{"--decode-steps"}},
		{[]string{"bench", "--scorer", "nope"}, []string{"--scorer", "nope"}},
		{[]string{"bench", "--contexts", "64", "--device", "cuda"}, []string{"without GPU support"}},
	}
	for _, c := range cases {
		_, _, err := runCLI(t, c.args...)
		for _, w := range c.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%v: error %v, want one mentioning %q", c.args, err, w)
			}
		}
	}
}

// TestPrecisionSetting: each command's precision holds unless the environment
// overrides it, and a bad value is an error naming the variable.
func TestPrecisionSetting(t *testing.T) {
	for _, c := range []struct {
		tc, kv string
		base   precision
		want   precision
	}{
		{"", "", fastPrecision, precision{TensorCores: true, KVBF16: true}},
		{"", "", exactPrecision, precision{}},
		{"0", "", fastPrecision, precision{KVBF16: true}},
		{"1", "bf16", exactPrecision, precision{TensorCores: true, KVBF16: true}},
		{"", "f32", fastPrecision, precision{TensorCores: true}},
	} {
		t.Setenv("LUKV_CUDA_TENSOR_CORES", c.tc)
		t.Setenv("LUKV_CUDA_KV", c.kv)
		got, err := c.base.withEnv()
		if err != nil || got != c.want {
			t.Errorf("LUKV_CUDA_TENSOR_CORES=%q LUKV_CUDA_KV=%q on %+v: %+v, %v; want %+v", c.tc, c.kv, c.base, got, err, c.want)
		}
	}
	t.Setenv("LUKV_CUDA_KV", "")
	t.Setenv("LUKV_CUDA_TENSOR_CORES", "yes please")
	if _, err := fastPrecision.withEnv(); err == nil || !strings.Contains(err.Error(), "LUKV_CUDA_TENSOR_CORES") {
		t.Errorf("bad LUKV_CUDA_TENSOR_CORES: error %v", err)
	}
	t.Setenv("LUKV_CUDA_TENSOR_CORES", "")
	t.Setenv("LUKV_CUDA_KV", "fp8")
	if _, err := fastPrecision.withEnv(); err == nil || !strings.Contains(err.Error(), "LUKV_CUDA_KV") {
		t.Errorf("bad LUKV_CUDA_KV: error %v", err)
	}
}

// TestBenchContextBudget: a context whose budget runs out mid-measurement stops at the
// next layer or step, is reported as "time budget" with the phase it was in, and the
// run goes on to the next context.
func TestBenchContextBudget(t *testing.T) {
	js := filepath.Join(t.TempDir(), "bench.json")
	if _, _, err := runCLI(t, "bench", "--contexts", "1024,2048", "--decode-steps", "1", "--warmup", "8", "--context-seconds", "0.001", "--json", js); err != nil {
		t.Fatal(err)
	}
	rep := readBench(t, js)
	if len(rep.Contexts) != 2 {
		t.Fatalf("%d contexts reported, want 2", len(rep.Contexts))
	}
	for _, c := range rep.Contexts {
		if c.Status != "time budget" || !strings.HasPrefix(c.Error, "prefill") || c.Seconds > 1 {
			t.Errorf("context %d: status %q (%s) after %.3f s; want the time budget during the prefill", c.Context, c.Status, c.Error, c.Seconds)
		}
	}
}

// TestCommandPrecision: each command asks --device cuda for its own precision (fast for
// generate and bench, exact for profile and eval), with no global state between them.
func TestCommandPrecision(t *testing.T) {
	var got precision
	errNoGPU := errors.New("no GPU in this test")
	saved := newCUDABackend
	newCUDABackend = func(p precision) (backend.Backend, error) { got = p; return nil, errNoGPU }
	defer func() { newCUDABackend = saved }()
	t.Setenv("LUKV_CUDA_TENSOR_CORES", "")
	t.Setenv("LUKV_CUDA_KV", "")
	cal := filepath.Join(t.TempDir(), "cal.json")
	os.WriteFile(cal, []byte(`{"context": "The grass is green.", "questions": ["What colour?"]}`), 0o644)
	for _, c := range []struct {
		args []string
		want precision
	}{
		{[]string{"generate", "--device", "cuda", "--prompt", "x"}, fastPrecision},
		{[]string{"bench", "--device", "cuda", "--contexts", "64"}, fastPrecision},
		{[]string{"profile", "--device", "cuda", "--calibration", cal}, exactPrecision},
		{[]string{"eval", "ruler", "--device", "cuda", "--tasks", "niah_single_1", "--lengths", "512", "--samples", "1", "--methods", "full", "--out", t.TempDir()}, exactPrecision},
		{[]string{"generate", "--device", "cuda", "--prompt", "x"}, fastPrecision},
	} {
		got = precision{TensorCores: true, KVBF16: true}
		if c.want == got {
			got = precision{}
		}
		_, _, err := runCLI(t, c.args...)
		if !errors.Is(err, errNoGPU) || got != c.want {
			t.Errorf("%s: precision %+v (%v), want %+v", c.args[0], got, err, c.want)
		}
	}
}
