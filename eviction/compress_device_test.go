package eviction

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/backend/backendtest"
	"github.com/lukv/lukv/backend/cpu"
	"github.com/lukv/lukv/model"
)

// The device paths of Collector and Method.Compress, checked on the CPU: the CPU backend
// has neither device interface, so the host path runs; fake device implementations
// (fakeScoring, fakeCompaction below) that follow runtime's documented semantics with
// host code show that the plumbing routes to them, hands them what the host allocators
// would use, and falls back to the host path when they refuse.

var tinyDir = filepath.Join("..", "models", "lukv-tiny")

// prefillTiny loads the default model on backend b and prefills n pseudo-random tokens
// with observer obs, returning the model and its cache.
func prefillTiny(t *testing.T, b backend.Backend, n int, obs func(m *model.Model) model.Observer) (*model.Model, backend.KVCache) {
	t.Helper()
	m, err := model.Load(tinyDir, b)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(7, 11))
	ids := make([]int, n)
	for i := range ids {
		ids[i] = r.IntN(m.Config.VocabSize)
	}
	cache := m.NewCache(8)
	var o model.Observer
	if obs != nil {
		o = obs(m)
	}
	if _, err := m.Forward(context.Background(), ids, 0, cache, model.ForwardOptions{Observer: o}); err != nil {
		t.Fatal(err)
	}
	return m, cache
}

// TestHostPathOnCPU: the CPU backend and cache implement neither device interface, so a
// Collector scores on the host (every layer, the host scorer's exact values) and
// Compress keeps what its host path keeps.
func TestHostPathOnCPU(t *testing.T) {
	b := cpu.New()
	if _, ok := any(b).(backend.DeviceScoring); ok {
		t.Fatal("the CPU backend claims to score on a device")
	}
	var col *Collector
	var views []*LayerView
	_, cache := prefillTiny(t, b, 48, func(m *model.Model) model.Observer {
		col = NewCollector(m, DefaultExpectedAttentionScorer())
		return model.Observer(observerFunc(func(layer int, positions []int, x, q, k, v backend.Tensor) {
			views = append(views, col.View(layer, positions, x, q, k, v))
			col.ObserveLayer(layer, positions, x, q, k, v)
		}))
	})
	if _, ok := cache.(backend.DeviceCompaction); ok {
		t.Fatal("the CPU cache claims to compact on a device")
	}
	for l, v := range views {
		want := col.Scorer.Score(v)
		if want == nil || !equalScores(col.Scores[l], want) {
			t.Fatalf("layer %d: collector scores differ from the host scorer's", l)
		}
	}
	other, err := cache.Clone(8)
	if err != nil {
		t.Fatal(err)
	}
	method := Method{Scorer: col.Scorer, Allocator: UniformAllocator{}, Ratio: 0.5, Sink: 4, Window: 1}
	if err := method.Compress(cache, col.Scores, 8); err != nil {
		t.Fatal(err)
	}
	host := method
	host.HostOnly = true
	if err := host.Compress(other, col.Scores, 8); err != nil {
		t.Fatal(err)
	}
	backendtest.SameCache(t, "Compress vs HostOnly on the CPU", cache, other)
	if got, want := cache.Len(0, 0), max(1, uniformBudget(48, 0.5)); got != want {
		t.Fatalf("kept %d tokens per head, want %d", got, want)
	}
}

type observerFunc func(layer int, positions []int, x, q, k, v backend.Tensor)

func (f observerFunc) ObserveLayer(layer int, positions []int, x, q, k, v backend.Tensor) {
	f(layer, positions, x, q, k, v)
}

func equalScores(a, b [][]float32) bool {
	if len(a) != len(b) {
		return false
	}
	for h := range a {
		if !slices.Equal(a[h], b[h]) {
			return false
		}
	}
	return true
}

// fakeScoring is a CPU backend that "scores on the device" with host K-norm, recording
// what it was asked and refusing one layer.
type fakeScoring struct {
	*cpu.Backend
	refuse int // layer answered with ErrUnsupported
	specs  []backend.ScorerSpec
	layers []int
	freed  int
	reads  int // device scores copied to the host
}

type fakeScores struct {
	f                       *fakeScoring
	data                    []float32
	layers, kvHeads, tokens int
}

func (s *fakeScores) Layers() int              { return s.layers }
func (s *fakeScores) KVHeads() int             { return s.kvHeads }
func (s *fakeScores) Tokens() int              { return s.tokens }
func (s *fakeScores) Read() ([]float32, error) { s.f.reads++; return slices.Clone(s.data), nil }
func (s *fakeScores) Free()                    { s.f.freed++ }

func (f *fakeScoring) NewScores(layers, kvHeads, tokens int) (backend.DeviceScores, error) {
	return &fakeScores{f: f, data: make([]float32, layers*kvHeads*tokens), layers: layers, kvHeads: kvHeads, tokens: tokens}, nil
}

func (f *fakeScoring) ScoreLayer(spec backend.ScorerSpec, in backend.LayerInput, dst backend.DeviceScores) error {
	f.specs = append(f.specs, spec)
	if in.Layer == f.refuse {
		return fmt.Errorf("fake: %w", backend.ErrUnsupported)
	}
	f.layers = append(f.layers, in.Layer)
	s := dst.(*fakeScores)
	k := f.Read(in.K)
	T, nkv, d := len(in.Positions), in.NumKVHeads, in.HeadDim
	for h := 0; h < nkv; h++ {
		for j := 0; j < T; j++ {
			var ss float64
			for _, x := range k[j*nkv*d+h*d : j*nkv*d+(h+1)*d] {
				ss += float64(x) * float64(x)
			}
			s.data[(in.Layer*nkv+h)*T+j] = float32(-math.Sqrt(ss))
		}
	}
	return nil
}

// TestCollectorDevicePath: with a backend that scores on the device, the Collector asks
// it for every layer with the scorer's defaults filled in, scores the refused layer on
// the host, and ends the pass with every layer's scores (equal to the host path's here,
// where the fake computes K-norm exactly as the host does) and the device memory freed.
func TestCollectorDevicePath(t *testing.T) {
	f := &fakeScoring{Backend: cpu.New(), refuse: 3}
	var dev *Collector
	var host *Collector
	prefillTiny(t, f, 40, func(m *model.Model) model.Observer {
		dev = NewCollector(m, KNormScorer{})
		host = NewCollector(m, KNormScorer{})
		host.HostOnly = true
		return observerFunc(func(layer int, positions []int, x, q, k, v backend.Tensor) {
			dev.ObserveLayer(layer, positions, x, q, k, v)
			host.ObserveLayer(layer, positions, x, q, k, v)
		})
	})
	L := len(dev.Scores)
	if len(f.specs) != L {
		t.Fatalf("ScoreLayer called %d times for %d layers (HostOnly must not call it)", len(f.specs), L)
	}
	if want := []int{0, 1, 2, 4, 5, 6, 7}; !slices.Equal(f.layers, want) {
		t.Fatalf("device-scored layers %v, want %v", f.layers, want)
	}
	if f.specs[0] != (backend.ScorerSpec{Kind: backend.ScoreKNorm}) {
		t.Fatalf("spec %+v", f.specs[0])
	}
	if f.freed != 1 {
		t.Fatalf("device scores freed %d times, want once", f.freed)
	}
	for l := range dev.Scores {
		if dev.Scores[l] == nil || !equalScores(dev.Scores[l], host.Scores[l]) {
			t.Fatalf("layer %d: device-path scores differ from the host path's", l)
		}
	}
}

// TestCollectorsShareOnePass: Collectors scores one prefill with several scorers, the
// device-capable one on the device (except the refused layer) and the others from one
// shared host view; each ends with exactly what a lone host-path Collector of its scorer
// gets, and the device scores are freed.
func TestCollectorsShareOnePass(t *testing.T) {
	f := &fakeScoring{Backend: cpu.New(), refuse: 5}
	scorers := []Scorer{KNormScorer{}, TOVAScorer{}, StreamingLLMScorer{Sink: DefaultStreamingSink}} // the fake scores K-norm for any spec: one device-capable scorer
	var together, alone Collectors
	prefillTiny(t, f, 48, func(m *model.Model) model.Observer {
		for _, s := range scorers {
			together = append(together, NewCollector(m, s))
			a := NewCollector(m, s)
			a.HostOnly = true
			alone = append(alone, a)
		}
		return observerFunc(func(layer int, positions []int, x, q, k, v backend.Tensor) {
			together.ObserveLayer(layer, positions, x, q, k, v)
			for _, a := range alone {
				a.ObserveLayer(layer, positions, x, q, k, v)
			}
		})
	})
	L := len(together[0].Scores)
	if want := []int{0, 1, 2, 3, 4, 6, 7}; !slices.Equal(f.layers, want) {
		t.Fatalf("device-scored layers %v, want %v (only K-norm has a device form)", f.layers, want)
	}
	if len(f.specs) != L || f.freed != 1 {
		t.Fatalf("ScoreLayer called %d times for %d layers, device scores freed %d times; want %d and once", len(f.specs), L, f.freed, L)
	}
	for i, c := range together {
		for l := 0; l < L; l++ {
			if c.Scores[l] == nil || !equalScores(c.Scores[l], alone[i].Scores[l]) {
				t.Fatalf("%s layer %d: scores differ from a lone host-path collector's", scorers[i].Name(), l)
			}
		}
	}
}

// TestDeviceSpecDefaults: the device forms carry every default the host scorer applies.
func TestDeviceSpecDefaults(t *testing.T) {
	ea := DefaultExpectedAttentionScorer()
	ea.NFuture = 0
	spec, ok := DeviceSpec(&ea)
	want := backend.ScorerSpec{Kind: backend.ScoreExpectedAttention, Epsilon: DefaultEAEpsilon, NFuture: DefaultEANFuture,
		NSink: DefaultEANSink, UseCovariance: true, UseVNorm: true}
	if !ok || spec != want {
		t.Errorf("expected attention: %+v, %v; want %+v", spec, ok, want)
	}
	spec, ok = DeviceSpec(SnapKVScorer{Pool: "max"})
	if want := (backend.ScorerSpec{Kind: backend.ScoreSnapKV, Window: DefaultSnapKVWindow, Kernel: DefaultSnapKVKernel, MaxPool: true}); !ok || spec != want {
		t.Errorf("snapkv: %+v, %v; want %+v", spec, ok, want)
	}
	for _, s := range []Scorer{TOVAScorer{}, RandomScorer{}, SnapKVScorer{Pool: "median"}, ExpectedAttentionScorer{NSink: -1}, (*KNormScorer)(nil)} {
		if _, ok := DeviceSpec(s); ok {
			t.Errorf("%T %+v has a device form", s, s)
		}
	}
}

// fakeCompaction is a CPU cache that "selects and compacts on the device": it applies a
// KeepTopRequest as backend documents it, with code of its own (a sort per head), then
// compacts through the CPU cache.
type fakeCompaction struct {
	backend.KVCache
	refuse bool
	reqs   []backend.KeepTopRequest
}

func (c *fakeCompaction) KeepTop(req backend.KeepTopRequest) error {
	c.reqs = append(c.reqs, req)
	if c.refuse {
		return fmt.Errorf("fake: %w", backend.ErrUnsupported)
	}
	scores := req.Scores
	if req.Device != nil { // "on the device": its data, protected as documented
		d := req.Device.(*fakeScores)
		scores = make([][][]float32, d.layers)
		for l := range scores {
			scores[l] = make([][]float32, d.kvHeads)
			for h := range scores[l] {
				i := (l*d.kvHeads + h) * d.tokens
				scores[l][h] = slices.Clone(d.data[i : i+d.tokens])
			}
			ProtectSinkWindow(scores[l], req.Sink, req.Window)
		}
	}
	for l, s := range scores {
		var keep [][]int
		for h := range s {
			keep = append(keep, refTopK(s[h], req.Counts[l][h]))
		}
		if err := c.Compact(l, keep, req.Reserve); err != nil {
			return err
		}
	}
	return nil
}

// refTopK is the k best of s by (score, index), ascending, by sorting.
func refTopK(s []float32, k int) []int {
	idx := make([]int, len(s))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int {
		if c := cmp.Compare(s[b], s[a]); c != 0 {
			return c
		}
		return cmp.Compare(b, a)
	})
	out := slices.Clone(idx[:max(0, min(k, len(s)))])
	slices.Sort(out)
	return out
}

// refPooled is AdaKV's pooled rule as selection (the old device contract, written from
// its documentation): every head keeps its safe best tokens, then the left best of all
// the layer's remaining tokens (score, then later token, then lower head) wherever they
// are; a head left with nothing keeps its best token.
func refPooled(s [][]float32, safe, left int) [][]int {
	type tok struct {
		h, j int
		v    float32
	}
	chosen := make([]map[int]bool, len(s))
	var rest []tok
	for h := range s {
		chosen[h] = map[int]bool{}
		for _, j := range refTopK(s[h], safe) {
			chosen[h][j] = true
		}
		for j, v := range s[h] {
			if !chosen[h][j] {
				rest = append(rest, tok{h, j, v})
			}
		}
	}
	slices.SortFunc(rest, func(a, b tok) int {
		if c := cmp.Compare(b.v, a.v); c != 0 {
			return c
		}
		if c := cmp.Compare(b.j, a.j); c != 0 {
			return c
		}
		return cmp.Compare(a.h, b.h)
	})
	for _, x := range rest[:max(0, min(left, len(rest)))] {
		chosen[x.h][x.j] = true
	}
	keep := make([][]int, len(s))
	for h := range s {
		for j := range s[h] {
			if chosen[h][j] {
				keep[h] = append(keep[h], j)
			}
		}
		if len(keep[h]) == 0 {
			keep[h] = refTopK(s[h], 1)
		}
	}
	return keep
}

// TestCompressDevicePath: for every allocator, Compress through a cache that selects
// and compacts "on the device" leaves the cache exactly as the host path does (the
// device consumes the plan's counts and protected scores), with one request for all
// layers; HostOnly, heads of different lengths and a refusing cache take the host path.
func TestCompressDevicePath(t *testing.T) {
	col := (*Collector)(nil)
	_, base := prefillTiny(t, cpu.New(), 64, func(m *model.Model) model.Observer {
		col = NewCollector(m, KNormScorer{})
		return col
	})
	curve, err := ReadNPY(filepath.Join(tinyDir, "curves", "knorm.npy"))
	if err != nil {
		t.Fatal(err)
	}
	// Ties in the scores (every fourth token equal) exercise the tie rule.
	scores := make([][][]float32, len(col.Scores))
	for l := range scores {
		scores[l] = make([][]float32, len(col.Scores[l]))
		for h := range scores[l] {
			scores[l][h] = slices.Clone(col.Scores[l][h])
			for j := 0; j < len(scores[l][h]); j += 4 {
				scores[l][h][j] = -3
			}
		}
	}
	allocs := []Allocator{UniformAllocator{}, &UniformAllocator{}, PyramidAllocator{Window: 8, Beta: 20},
		LUKVAllocator{Curve: curve}, AdaKVAllocator{Safeguard: 0.2}, &AdaKVAllocator{Safeguard: 0.5}, halfAllocator{}}
	for _, a := range allocs {
		for _, ratio := range []float64{0, 0.3, 0.75} {
			name := fmt.Sprintf("%s@%.2f", a.Name(), ratio)
			method := Method{Scorer: col.Scorer, Allocator: a, Ratio: ratio, Sink: 4, Window: 2}
			dc, hc := cloneCache(t, base), cloneCache(t, base)
			fc := &fakeCompaction{KVCache: dc}
			if err := method.Compress(fc, scores, 5); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if len(fc.reqs) != 1 {
				t.Fatalf("%s: %d device requests, want 1", name, len(fc.reqs))
			}
			host := method
			host.HostOnly = true
			if err := host.Compress(hc, scores, 5); err != nil {
				t.Fatalf("%s: host: %v", name, err)
			}
			backendtest.SameCache(t, name, dc, hc)
		}
	}

	// HostOnly. Heads of different lengths. A refusing cache. Each leaves the cache as
	// the host path does.
	method := Method{Scorer: col.Scorer, Allocator: UniformAllocator{}, Ratio: 0.5, Sink: 4, Window: 1, HostOnly: true}
	fc := &fakeCompaction{KVCache: cloneCache(t, base)}
	if err := method.Compress(fc, scores, 0); err != nil || len(fc.reqs) != 0 {
		t.Fatalf("HostOnly: err %v, %d device requests", err, len(fc.reqs))
	}
	method.HostOnly = false
	ragged, raggedHost := cloneCache(t, base), cloneCache(t, base)
	raggedScores := slices.Clone(scores)
	for _, c := range []backend.KVCache{ragged, raggedHost} {
		keep := [][]int{{0, 1, 2}, iotaInts(64), iotaInts(64), iotaInts(64)}
		if err := c.Compact(0, keep, 0); err != nil {
			t.Fatal(err)
		}
	}
	raggedScores[0] = [][]float32{scores[0][0][:3], scores[0][1], scores[0][2], scores[0][3]}
	fc = &fakeCompaction{KVCache: ragged}
	if err := method.Compress(fc, raggedScores, 0); err != nil || len(fc.reqs) != 0 {
		t.Fatalf("heads of different lengths: err %v, %d device requests", err, len(fc.reqs))
	}
	hostOnly := method
	hostOnly.HostOnly = true
	if err := hostOnly.Compress(raggedHost, raggedScores, 0); err != nil {
		t.Fatal(err)
	}
	backendtest.SameCache(t, "heads of different lengths", ragged, raggedHost)
	if ragged.Len(0, 0) != Protected(3, 4, 1) {
		t.Fatalf("a 3-token head keeps %d tokens, want all 3 (sink and window cover it)", ragged.Len(0, 0))
	}
	fc = &fakeCompaction{KVCache: cloneCache(t, base), refuse: true}
	hc := cloneCache(t, base)
	if err := method.Compress(fc, scores, 0); err != nil || len(fc.reqs) != 1 {
		t.Fatalf("refusing cache: err %v, %d device requests", err, len(fc.reqs))
	}
	if err := hostOnly.Compress(hc, scores, 0); err != nil {
		t.Fatal(err)
	}
	backendtest.SameCache(t, "after a refusal", fc.KVCache, hc)
}

// halfAllocator keeps the first half of every head's count (T/2, a custom allocator:
// any allocator's counts take the device path).
type halfAllocator struct{}

func (halfAllocator) Name() string { return "half" }
func (halfAllocator) Counts(layer, numLayers int, scores [][]float32, ratio float64) ([]int, error) {
	counts := make([]int, len(scores))
	for h := range scores {
		counts[h] = len(scores[h]) / 2
	}
	return counts, nil
}

func cloneCache(t *testing.T, c backend.KVCache) backend.KVCache {
	t.Helper()
	n, err := c.Clone(0)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestCompressDeviceErrors: on the device path, the errors the host path returns before
// compacting anything come back the same, with no request made.
func TestCompressDeviceErrors(t *testing.T) {
	col := (*Collector)(nil)
	_, base := prefillTiny(t, cpu.New(), 20, func(m *model.Model) model.Observer {
		col = NewCollector(m, KNormScorer{})
		return col
	})
	short := slices.Clone(col.Scores)
	short[2] = [][]float32{col.Scores[2][0][:5], col.Scores[2][1], col.Scores[2][2], col.Scores[2][3]}
	unscored := slices.Clone(col.Scores)
	unscored[0] = nil
	cases := []struct {
		name   string
		method Method
		scores [][][]float32
	}{
		{"bad ratio", Method{Scorer: col.Scorer, Allocator: UniformAllocator{}, Ratio: 1}, col.Scores},
		{"unscored layer", Method{Scorer: col.Scorer, Allocator: UniformAllocator{}, Ratio: 0.5}, unscored},
		{"length mismatch", Method{Scorer: col.Scorer, Allocator: AdaKVAllocator{Safeguard: 0.2}, Ratio: 0.5}, short},
		{"curve shape", Method{Scorer: col.Scorer, Allocator: LUKVAllocator{Curve: NewBudgetCurve(3, 4)}, Ratio: 0.5}, col.Scores},
		{"curve ratio", Method{Scorer: col.Scorer, Allocator: LUKVAllocator{Curve: NewBudgetCurve(8, 4)}, Ratio: 0.995}, col.Scores},
	}
	for _, tc := range cases {
		fc := &fakeCompaction{KVCache: cloneCache(t, base)}
		errDev := tc.method.Compress(fc, tc.scores, 0)
		host := tc.method
		host.HostOnly = true
		errHost := host.Compress(cloneCache(t, base), tc.scores, 0)
		if errDev == nil || errHost == nil || errDev.Error() != errHost.Error() {
			t.Errorf("%s: device path %v, host path %v", tc.name, errDev, errHost)
		}
		if len(fc.reqs) != 0 {
			t.Errorf("%s: %d device requests", tc.name, len(fc.reqs))
		}
		if errors.Is(errDev, backend.ErrUnsupported) {
			t.Errorf("%s: %v", tc.name, errDev)
		}
	}
}
