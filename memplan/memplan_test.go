package memplan

import (
	"errors"
	"strings"
	"testing"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/backend/cpu"
	"github.com/lukv/lukv/loader"
	"github.com/lukv/lukv/quant"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"2GiB": 2 << 30, "1.5 GB": 1_500_000_000, "4096": 4096, "512MiB": 512 << 20, "3kb": 3000, "1 TiB": 1 << 40, "7B": 7} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "GiB", "-1GiB", "2 parsecs", "0", "0.1", "1e3", "9999999TiB"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q): no error", bad)
		}
	}
}

func TestParseMemAvailable(t *testing.T) {
	got, err := ParseMemAvailable(strings.NewReader("MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   12345 kB\n"))
	if err != nil || got != 12345*1024 {
		t.Errorf("got %d, %v", got, err)
	}
	if _, err := ParseMemAvailable(strings.NewReader("MemTotal: 5 kB\n")); err == nil {
		t.Error("no MemAvailable: no error")
	}
	if _, err := ParseMemAvailable(strings.NewReader("MemAvailable: lots kB\n")); err == nil {
		t.Error("bad number: no error")
	}
	if n, err := HostAvailable(); err == nil && n <= 0 {
		t.Errorf("HostAvailable = %d", n)
	}
}

// llama8B is Llama-3.1-8B's shape.
var llama8B = &loader.Config{HiddenSize: 4096, NumLayers: 32, NumHeads: 32, NumKVHeads: 8, HeadDim: 128,
	IntermediateSize: 14336, VocabSize: 128256, MaxPositionEmbeddings: 131072}

func TestParamCountAndKV(t *testing.T) {
	if n := ParamCount(llama8B); n != 8_030_261_248 {
		t.Errorf("Llama-3.1-8B: %d parameters, want 8030261248", n)
	}
	p := Plan{Config: llama8B, KVElemBytes: 2, Context: 1 << 20, Chunk: 4096, Budget: 1 << 20 / 10, Tail: 100}
	// 32 layers x 8 heads x 2 x 128 x 2 bytes = 128 KiB per token: a 1M-token cache is 128 GiB.
	if got := p.KVBytesPerToken(); got != 128<<10 {
		t.Errorf("KV bytes per token %d, want 131072", got)
	}
	if got, want := p.PeakKVBytes(), int64(1<<20/10+4096)*(128<<10); got != want {
		t.Errorf("peak KV %d, want %d", got, want)
	}
	if e := KVElemBytes(cpu.New()); e != 4 {
		t.Errorf("CPU KV element bytes %d, want 4", e)
	}
}

func TestCheck(t *testing.T) {
	p := Plan{Config: llama8B, WeightBytes: 16 << 30, KVElemBytes: 2, Context: 1 << 20, Chunk: 4096, Budget: 1 << 20 / 10, Tail: 100}
	fixed := func(n int64) Available { return func() (int64, error) { return n, nil } }
	if err := p.Check(fixed(40 << 30)); err != nil {
		t.Errorf("fits in 40 GiB: %v", err)
	}
	err := p.Check(fixed(20 << 30))
	if err == nil || !strings.Contains(err.Error(), "--kv-budget") || !strings.Contains(err.Error(), "16.0 GiB") {
		t.Errorf("20 GiB: error %v, want one naming the sizes and --kv-budget", err)
	}
	if err := p.Check(fixed(8 << 30)); err == nil || !strings.Contains(err.Error(), "weights alone") {
		t.Errorf("8 GiB: error %v, want the weights alone", err)
	}
	if err := p.Check(func() (int64, error) { return 0, ErrUnknown }); err != nil {
		t.Errorf("unknown memory: %v, want the check skipped", err)
	}
	boom := errors.New("no meminfo")
	if err := p.Check(func() (int64, error) { return 0, boom }); !errors.Is(err, boom) {
		t.Errorf("source error lost: %v", err)
	}
}

func TestBudgets(t *testing.T) {
	r, err := RatioForBudget("--kv-budget", 200, 1000, 4, 1, 16384)
	if err != nil || r != 0.8 {
		t.Errorf("200 of 1000: ratio %v, %v", r, err)
	}
	if r, err := RatioForBudget("--kv-budget", 2000, 1000, 4, 1, 16384); err != nil || r != 0 {
		t.Errorf("budget over the prompt: ratio %v, %v; want 0", r, err)
	}
	for _, b := range []int{0, 4, 20000} {
		if _, err := RatioForBudget("--kv-budget", b, 1000, 4, 1, 16384); err == nil || !strings.Contains(err.Error(), "--kv-budget") {
			t.Errorf("budget %d: error %v", b, err)
		}
	}
	b, err := BudgetForMemory(1<<20, 1024, 256, 64)
	if err != nil || b != 1024-256 {
		t.Errorf("1 MiB at 1 KiB per token, chunk 256: budget %d, %v; want 768", b, err)
	}
	if _, err := BudgetForMemory(100<<10, 1024, 256, 64); err == nil || !strings.Contains(err.Error(), "--chunk") {
		t.Errorf("limit below one chunk: error %v", err)
	}
}

func TestResolve(t *testing.T) {
	req := Request{Chunk: 2048, Evict: true, Ratio: 0.5, Sink: 4, Window: 1, Context: 100000, Tail: 64}
	p, r, err := Resolve(llama8B, 16<<30, 2, req)
	if err != nil || r != 0.5 || p.Budget != 50000 {
		t.Errorf("plain --compression: %+v, %v, %v", p.Budget, r, err)
	}
	req.KVBudget = 10000
	if p, r, err = Resolve(llama8B, 16<<30, 2, req); err != nil || r != 0.9 || p.Budget != 10000 {
		t.Errorf("--kv-budget 10000 of 100000: budget %d ratio %v, %v", p.Budget, r, err)
	}
	req.KVBudget, req.MaxKVMemory = 0, 2<<30 // 16384 tokens at 128 KiB: 16384 - 2048 kept
	if p, r, err = Resolve(llama8B, 16<<30, 2, req); err != nil || p.Budget != 14336 || p.PeakKVBytes() != 2<<30 {
		t.Errorf("--max-kv-memory 2GiB: budget %d peak %d ratio %v, %v", p.Budget, p.PeakKVBytes(), r, err)
	}
	bad := map[string]Request{
		"--chunk":               {Chunk: 0, Context: 10},
		"not both":              {Chunk: 8, KVBudget: 10, MaxKVMemory: 1 << 30, Evict: true, Context: 100},
		"needs an eviction":     {Chunk: 8, KVBudget: 10, Context: 100},
		"or --compression":      {Chunk: 8, KVBudget: 10, Evict: true, RatioSet: true, Context: 100},
		"below what every head": {Chunk: 8, KVBudget: 3, Evict: true, Sink: 4, Window: 1, Context: 100},
		"above the model's":     {Chunk: 8, KVBudget: 200000, Evict: true, Context: 100},
		"raise it or lower":     {Chunk: 8, MaxKVMemory: 1 << 20, Evict: true, Context: 100},
	}
	for want, req := range bad {
		if _, _, err := Resolve(llama8B, 1, 2, req); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: error %v, want one saying %q", req, err, want)
		}
	}
}

// int8CPU is a CPU backend that says it has int8 kernels.
type int8CPU struct{ *cpu.Backend }

func (int8CPU) WeightInt8(*quant.Int8) (backend.Tensor, error) { return nil, nil }

func TestWeightBytesByFormat(t *testing.T) {
	cfg := *llama8B
	cfg.TorchDType = "bfloat16"
	n := ParamCount(&cfg)
	proj := ProjectionParams(&cfg)
	if proj != 32*(2*4096*4096+2*1024*4096+3*14336*4096) {
		t.Fatalf("projection weights %d", proj)
	}
	for _, c := range []struct {
		name   string
		b      backend.Backend
		format loader.WeightFormat
		want   int64
	}{
		{"cpu f32", cpu.New(), loader.WeightsF32, 4 * n},
		{"cpu auto, widening", &cpu.Backend{WidenBF16: true}, loader.WeightsAuto, 4 * n},
		{"cpu auto, keeping bf16", cpu.New(), loader.WeightsAuto, 2 * n},
		{"cpu bf16", cpu.New(), loader.WeightsBF16, 2 * n},
		{"cpu int8 without int8 kernels", plainBackend{cpu.New()}, loader.WeightsInt8, 4 * n},
		{"cpu int8", int8CPU{cpu.New()}, loader.WeightsInt8, 2*(n-proj) + proj + proj/8},
	} {
		if got := WeightBytes(&cfg, c.b, c.format); got != c.want {
			t.Errorf("%s: %d bytes, want %d", c.name, got, c.want)
		}
	}
}

// plainBackend hides every optional capability of the backend it wraps (bf16 and int8
// weights): a backend that only takes float32 matrices.
type plainBackend struct{ backend.Backend }
