package eviction

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/model"
)

// Method is one eviction configuration: a scorer ranks tokens, an allocator splits the
// budget, and the first Sink and last Window tokens of every head are always kept.
type Method struct {
	Scorer    Scorer
	Allocator Allocator
	Ratio     float64 // compression ratio rho: the fraction of tokens to drop
	Sink      int
	Window    int
	// HostOnly makes Compress select and compact through the host path even when the
	// cache can do it on the device (backend.DeviceCompaction); both keep the same
	// tokens. For comparisons and debugging.
	HostOnly bool
}

func (m Method) String() string {
	return fmt.Sprintf("%s/%s@%.2f", m.Scorer.Name(), m.Allocator.Name(), m.Ratio)
}

// Collector is a model.Observer that scores every layer's tokens during a prefill, so
// the cache can be compressed right after it. It holds only the scores, [layer][Nkv][T].
//
// When the model's backend scores on the device (backend.DeviceScoring) and the scorer
// has a device form (DeviceSpec), a layer is scored where its activations are, without
// the host View; the device scores of all layers are copied into Scores once, when the
// last layer has been observed (so during the pass a device-scored layer's entry is
// nil), unless KeepOnDevice is set. Device scores are float32 computations of the same
// function (see the backend's documentation for their rounding); a layer the device
// cannot score, or a Collector with OnView or HostOnly set, uses the host path.
type Collector struct {
	Model  *model.Model
	Scorer Scorer
	// Scores are the host scores. With KeepOnDevice, device-scored layers stay nil
	// until HostScores copies them.
	Scores [][][]float32
	// OnView, when set, also receives every layer's view (the profiler keeps them).
	OnView func(v *LayerView)
	// HostOnly scores on the host even when the backend could score on the device.
	HostOnly bool
	// KeepOnDevice leaves a pass's device scores on the device (no read-back) for
	// Method.CompressCollected to select from there; HostScores copies them on demand.
	// Method.NewCollector sets it when the method's counts do not need the scores.
	KeepOnDevice bool

	dev   backend.DeviceScores // this pass's device scores, [layers][Nkv][T]
	onDev []bool               // [layer] scored into dev in this pass
}

// NewCollector returns a collector for model m and scorer s.
func NewCollector(m *model.Model, s Scorer) *Collector {
	return &Collector{Model: m, Scorer: s, Scores: make([][][]float32, m.Config.NumLayers)}
}

// ObserveLayer scores the layer: on the device when it can (see Collector), else from
// the host view of the backend's activations.
func (c *Collector) ObserveLayer(layer int, positions []int, x, q, k, v backend.Tensor) {
	Collectors{c}.ObserveLayer(layer, positions, x, q, k, v)
}

// Collectors is a model.Observer that scores one prefill with several scorers (Collectors
// of the same model): each scores on the device when it can, and those that cannot
// share one host view of the layer (copied once) and score it concurrently.
type Collectors []*Collector

func (cs Collectors) ObserveLayer(layer int, positions []int, x, q, k, v backend.Tensor) {
	var host []*Collector
	for _, c := range cs {
		if layer == 0 {
			c.dropDevice() // a new pass
		}
		if !c.scoreOnDevice(layer, positions, q, k, v) {
			host = append(host, c)
		}
	}
	if len(host) > 0 {
		view := host[0].View(layer, positions, x, q, k, v)
		var wg sync.WaitGroup
		for _, c := range host {
			wg.Add(1)
			go func() { // each scorer is single-threaded; they only read the view
				defer wg.Done()
				c.Scores[layer] = c.Scorer.Score(view)
			}()
		}
		wg.Wait()
		for _, c := range host {
			if c.OnView != nil {
				c.OnView(view)
			}
		}
	}
	for _, c := range cs {
		if layer == len(c.Scores)-1 && !c.KeepOnDevice {
			c.collectDevice()
		}
	}
}

// HostScores returns the scores [layer][Nkv][T] on the host, copying device scores kept
// on the device (KeepOnDevice) into Scores first; the device copy stays for
// CompressCollected. A layer whose copy fails stays nil (Compress reports it).
func (c *Collector) HostScores() [][][]float32 {
	if c.dev == nil {
		return c.Scores
	}
	pending := false
	for l, on := range c.onDev {
		pending = pending || (on && c.Scores[l] == nil)
	}
	if !pending {
		return c.Scores
	}
	data, err := c.dev.Read()
	if err != nil {
		return c.Scores
	}
	c.fill(data)
	return c.Scores
}

// deviceScores are this pass's scores when every layer was scored on the device and
// they are still there (KeepOnDevice), else nil.
func (c *Collector) deviceScores() backend.DeviceScores {
	if c.dev == nil || len(c.onDev) == 0 {
		return nil
	}
	for _, on := range c.onDev {
		if !on {
			return nil
		}
	}
	return c.dev
}

// Release frees device scores kept on the device now (the next pass, or the garbage
// collector, does it otherwise).
func (c *Collector) Release() { c.dropDevice() }

// DeviceSpec returns the device form of s (backend.ScorerSpec, defaults filled in) and
// true when s is one of the scorers a backend may run on the device (expected
// attention, SnapKV, KeyDiff, K-norm, as values or non-nil pointers) with a valid
// configuration.
func DeviceSpec(s Scorer) (backend.ScorerSpec, bool) {
	switch p := s.(type) {
	case *ExpectedAttentionScorer:
		if p == nil {
			return backend.ScorerSpec{}, false
		}
		s = *p
	case *SnapKVScorer:
		if p == nil {
			return backend.ScorerSpec{}, false
		}
		s = *p
	case *KeyDiffScorer:
		if p == nil {
			return backend.ScorerSpec{}, false
		}
		s = *p
	case *KNormScorer:
		if p == nil {
			return backend.ScorerSpec{}, false
		}
		s = *p
	}
	switch sc := s.(type) {
	case ExpectedAttentionScorer:
		return expectedSpec(sc)
	case SnapKVScorer:
		return snapSpec(sc)
	case KeyDiffScorer:
		return backend.ScorerSpec{Kind: backend.ScoreKeyDiff}, true
	case KNormScorer:
		return backend.ScorerSpec{Kind: backend.ScoreKNorm}, true
	}
	return backend.ScorerSpec{}, false
}

func expectedSpec(s ExpectedAttentionScorer) (backend.ScorerSpec, bool) {
	if s.Validate() != nil {
		return backend.ScorerSpec{}, false
	}
	n := s.NFuture
	if n == 0 {
		n = DefaultEANFuture
	}
	return backend.ScorerSpec{Kind: backend.ScoreExpectedAttention, Epsilon: s.Epsilon, NFuture: n, NSink: s.NSink,
		UseCovariance: s.UseCovariance, UseVNorm: s.UseVNorm}, true
}

func snapSpec(s SnapKVScorer) (backend.ScorerSpec, bool) {
	if s.Validate() != nil {
		return backend.ScorerSpec{}, false
	}
	w, k := s.Window, s.Kernel
	if w == 0 {
		w = DefaultSnapKVWindow
	}
	if k == 0 {
		k = DefaultSnapKVKernel
	}
	return backend.ScorerSpec{Kind: backend.ScoreSnapKV, Window: w, Kernel: k, MaxPool: s.Pool == "max"}, true
}

// scoreOnDevice scores the layer into this pass's device scores, reporting false (with
// nothing recorded) when the host path must do it.
func (c *Collector) scoreOnDevice(layer int, positions []int, q, k, v backend.Tensor) bool {
	if c.OnView != nil || c.HostOnly || c.Model == nil {
		return false
	}
	ds, ok := c.Model.Backend.(backend.DeviceScoring)
	if !ok {
		return false
	}
	spec, ok := DeviceSpec(c.Scorer)
	cfg := c.Model.Config
	if !ok || len(c.Scores) != cfg.NumLayers || layer < 0 || layer >= len(c.Scores) {
		return false
	}
	T := len(positions)
	if c.dev == nil || c.dev.Tokens() != T {
		c.dropDevice()
		d, err := ds.NewScores(len(c.Scores), cfg.NumKVHeads, T)
		if err != nil {
			return false
		}
		c.dev, c.onDev = d, make([]bool, len(c.Scores))
	}
	in := backend.LayerInput{Layer: layer, Positions: positions, Q: q, K: k, V: v,
		NumHeads: cfg.NumHeads, NumKVHeads: cfg.NumKVHeads, HeadDim: cfg.HeadDim, RoPE: c.Model.RoPE}
	if err := ds.ScoreLayer(spec, in, c.dev); err != nil {
		return false // unsupported here (or failed): the host path scores this layer
	}
	c.onDev[layer] = true
	c.Scores[layer] = nil
	return true
}

// collectDevice copies this pass's device scores into Scores, in one block of memory
// ([layer][head] slices back to back, as one read-back gives them), and frees them. If
// the copy fails those layers stay nil, and Compress reports them as not scored.
func (c *Collector) collectDevice() {
	if c.dev == nil {
		return
	}
	defer c.dropDevice()
	data, err := c.dev.Read()
	if err != nil {
		return
	}
	c.fill(data)
}

// fill sets the device-scored layers of Scores from data, the device scores read back.
func (c *Collector) fill(data []float32) {
	nkv, T := c.dev.KVHeads(), c.dev.Tokens()
	for l, on := range c.onDev {
		if !on {
			continue
		}
		c.Scores[l] = make([][]float32, nkv)
		for h := range c.Scores[l] {
			i := (l*nkv + h) * T
			c.Scores[l][h] = data[i : i+T : i+T]
		}
	}
}

// dropDevice frees this pass's device scores.
func (c *Collector) dropDevice() {
	if c.dev != nil {
		c.dev.Free()
	}
	c.dev, c.onDev = nil, nil
}

// View copies one layer's activations to the host as a LayerView, recomputing the
// pre-RoPE queries from the normalised input x.
func (c *Collector) View(layer int, positions []int, x, q, k, v backend.Tensor) *LayerView {
	m, b := c.Model, c.Model.Backend
	cfg := m.Config
	n, d := len(positions), cfg.HeadDim
	l := &m.Layers[layer]
	pre := b.Alloc(n, cfg.NumHeads*d)
	defer b.Free(pre)
	b.MatMul(pre, x, l.Wq)
	if l.Bq != nil {
		b.AddBias(pre, l.Bq)
	}
	if l.QNorm != nil {
		b.HeadRMSNorm(pre, l.QNorm, d, float32(cfg.RMSNormEps))
	}
	view := &LayerView{
		Layer: layer, NumHeads: cfg.NumHeads, NumKVHeads: cfg.NumKVHeads, HeadDim: d,
		Positions: append([]int(nil), positions...), QueryPositions: append([]int(nil), positions...),
		Queries: b.Read(q), PreRoPEQueries: b.Read(pre),
		RoPE: m.RoPE,
	}
	keys, vals := b.Read(k), b.Read(v)
	view.Keys, view.Values = splitHeads(keys, n, cfg.NumKVHeads, d), splitHeads(vals, n, cfg.NumKVHeads, d)
	return view
}

// splitHeads turns [n, heads*d] into [heads][n*d].
func splitHeads(x []float32, n, heads, d int) [][]float32 {
	out := make([][]float32, heads)
	for h := range out {
		out[h] = make([]float32, n*d)
		for i := 0; i < n; i++ {
			copy(out[h][i*d:(i+1)*d], x[i*heads*d+h*d:i*heads*d+(h+1)*d])
		}
	}
	return out
}

// Plan is a method's whole decision for one prefill, as plain data that the host and a
// device consume alike: every head's scores with sink and window protected, and how
// many of its best tokens it keeps.
type Plan struct {
	// Scores is [layer][head][T] after ProtectSinkWindow, one block of memory (layer,
	// head and token order), so a device takes it in one copy.
	Scores [][][]float32
	// Counts is [layer][head]: the head keeps its Counts best tokens (KeepTop).
	Counts [][]int
}

// Keep is layer's kept indices per head, ascending: each head's top Counts tokens.
func (p *Plan) Keep(layer int) [][]int { return KeepTop(p.Scores[layer], p.Counts[layer]) }

// sameLength reports whether every head of every layer holds the same number of tokens.
func (p *Plan) sameLength() bool {
	T := -1
	for _, s := range p.Scores {
		for _, hs := range s {
			if T >= 0 && len(hs) != T {
				return false
			}
			T = len(hs)
		}
	}
	return true
}

// Protected is how many tokens of a T-token head the sink and window cover: the first
// sink and the last window, counted once where they overlap.
func Protected(T, sink, window int) int { return min(T, max(sink, 0)+max(window, 0)) }

// LayerCounts is how many tokens each head of layer keeps, given the layer's protected
// scores: the allocator's counts, raised to Protected where they are below it (the
// sink and window rule of the package documentation).
func (m Method) LayerCounts(layer, numLayers int, protected [][]float32) ([]int, error) {
	counts, err := m.Allocator.Counts(layer, numLayers, protected, m.Ratio)
	if err != nil {
		return nil, err
	}
	lens := make([]int, len(protected))
	for h, s := range protected {
		lens[h] = len(s)
	}
	return m.floorCounts(layer, counts, lens)
}

// floorCounts checks an allocator's counts for heads of lengths lens and raises them to
// Protected: the one place the sink and window floor is applied.
func (m Method) floorCounts(layer int, counts, lens []int) ([]int, error) {
	if len(counts) != len(lens) {
		return nil, fmt.Errorf("eviction: allocator %s gave %d counts for %d heads of layer %d", m.Allocator.Name(), len(counts), len(lens), layer)
	}
	for h, T := range lens {
		if counts[h] < 0 || counts[h] > T {
			return nil, fmt.Errorf("eviction: allocator %s keeps %d of layer %d head %d's %d tokens", m.Allocator.Name(), counts[h], layer, h, T)
		}
		counts[h] = max(counts[h], Protected(T, m.Sink, m.Window))
	}
	return counts, nil
}

// FixedCounts is Plan's Counts without the scores, for a cache whose every head holds
// the same T tokens, when the allocator's counts do not depend on them (a
// FixedAllocator); ok is false, with nothing computed, for any other allocator. The
// scores the counts apply to must then be protected as ProtectSinkWindow does (a device
// does it itself: backend.KeepTopRequest's Sink and Window).
func (m Method) FixedCounts(cache backend.KVCache, layers int) (counts [][]int, ok bool, err error) {
	fa, ok := m.Allocator.(FixedAllocator)
	if !ok {
		return nil, false, nil
	}
	if layers > cache.Layers() {
		return nil, true, fmt.Errorf("eviction: counts for %d layers, the cache has %d", layers, cache.Layers())
	}
	nkv := cache.KVHeads()
	lens := make([]int, nkv)
	counts = make([][]int, layers)
	for layer := range counts {
		T := 0
		for h := range lens {
			lens[h] = cache.Len(layer, h)
			if h == 0 {
				T = lens[0]
			} else if lens[h] != T {
				return nil, true, fmt.Errorf("eviction: layer %d head %d holds %d tokens, head 0 %d: fixed counts need one length", layer, h, lens[h], T)
			}
		}
		c, err := fa.CountsFor(layer, layers, nkv, T, m.Ratio)
		if err != nil {
			return nil, true, err
		}
		if counts[layer], err = m.floorCounts(layer, c, lens); err != nil {
			return nil, true, err
		}
	}
	return counts, true, nil
}

// KeepLayer is what the method keeps of one layer of unprotected scores [Nkv][T]: each
// head's kept indices, ascending. The scores are not changed.
func (m Method) KeepLayer(layer, numLayers int, scores [][]float32) ([][]int, error) {
	prot := make([][]float32, len(scores))
	for h := range scores {
		prot[h] = slices.Clone(scores[h])
	}
	ProtectSinkWindow(prot, m.Sink, m.Window)
	counts, err := m.LayerCounts(layer, numLayers, prot)
	if err != nil {
		return nil, err
	}
	return KeepTop(prot, counts), nil
}

// Plan protects and counts every layer of scores [layer][Nkv][T] for cache, whose every
// head must hold exactly the tokens scored. It changes neither.
func (m Method) Plan(cache backend.KVCache, scores [][][]float32) (*Plan, error) {
	if m.Allocator == nil {
		return nil, fmt.Errorf("eviction: method has no allocator")
	}
	if len(scores) > cache.Layers() {
		return nil, fmt.Errorf("eviction: scores for %d layers, the cache has %d", len(scores), cache.Layers())
	}
	n := 0
	for layer, s := range scores {
		if s == nil {
			return nil, fmt.Errorf("eviction: layer %d was not scored", layer)
		}
		if len(s) != cache.KVHeads() {
			return nil, fmt.Errorf("eviction: layer %d has scores for %d heads, the cache %d", layer, len(s), cache.KVHeads())
		}
		for h := range s {
			if len(s[h]) != cache.Len(layer, h) {
				return nil, fmt.Errorf("eviction: layer %d head %d has %d scores for %d cached tokens", layer, h, len(s[h]), cache.Len(layer, h))
			}
			n += len(s[h])
		}
	}
	p := &Plan{Scores: make([][][]float32, len(scores)), Counts: make([][]int, len(scores))}
	block := make([]float32, n)
	for layer, s := range scores {
		p.Scores[layer] = make([][]float32, len(s))
		for h := range s {
			p.Scores[layer][h] = block[:len(s[h]):len(s[h])]
			block = block[len(s[h]):]
		}
	}
	// Layers are independent: plan them concurrently (AdaKV's pooled count is a
	// selection over all of a layer's tokens), and report the first layer's error.
	errs := make([]error, len(scores))
	next := make(chan int, len(scores))
	for layer := range scores {
		next <- layer
	}
	close(next)
	var wg sync.WaitGroup
	for range min(len(scores), runtime.GOMAXPROCS(0)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for layer := range next {
				for h := range scores[layer] {
					copy(p.Scores[layer][h], scores[layer][h])
				}
				ProtectSinkWindow(p.Scores[layer], m.Sink, m.Window)
				p.Counts[layer], errs[layer] = m.LayerCounts(layer, len(scores), p.Scores[layer])
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Compress applies the method to a cache whose every head holds exactly the T tokens the
// collector scored: it plans (protects sink and window, counts every head's budget),
// then every head keeps its top count tokens, leaving room for reserve more tokens per
// head. Nothing is compacted when planning fails.
//
// When the cache selects and compacts on the device (backend.DeviceCompaction) and all
// heads hold the same T, the plan goes to the device once and the kept indices never
// come back; otherwise (or with HostOnly, or when the device refuses) every layer is
// compacted through KVCache.Compact with the indices selected here. Both keep the same
// tokens.
func (m Method) Compress(cache backend.KVCache, scores [][][]float32, reserve int) error {
	if reserve < 0 {
		return fmt.Errorf("eviction: negative reserve %d", reserve)
	}
	p, err := m.Plan(cache, scores)
	if err != nil {
		return err
	}
	if dc, ok := cache.(backend.DeviceCompaction); ok && !m.HostOnly && len(p.Scores) > 0 && p.sameLength() {
		err := dc.KeepTop(backend.KeepTopRequest{Scores: p.Scores, Counts: p.Counts, Reserve: reserve})
		if !errors.Is(err, backend.ErrUnsupported) {
			return err
		}
	}
	for layer := range p.Counts {
		if err := cache.Compact(layer, p.Keep(layer), reserve); err != nil {
			return err
		}
	}
	return nil
}

// SelectsOnDevice reports whether CompressCollected can select from scores left on the
// device: the allocator's counts do not need them (FixedAllocator) and the method is
// not HostOnly.
func (m Method) SelectsOnDevice() bool {
	_, fixed := m.Allocator.(FixedAllocator)
	return fixed && !m.HostOnly
}

// NewCollector returns a collector for model mod and the method's scorer that keeps
// device scores on the device when the method selects from there (SelectsOnDevice):
// use it with CompressCollected.
func (m Method) NewCollector(mod *model.Model) *Collector {
	c := NewCollector(mod, m.Scorer)
	c.KeepOnDevice = m.SelectsOnDevice()
	return c
}

// CompressCollected is Compress with the scores of collector c's last prefill. When c
// kept them on the device, the allocator's counts do not need them (FixedCounts) and
// the cache selects and compacts on the device (backend.DeviceCompaction), they never
// leave the device: the counts are planned here and the device protects sink and window
// and keeps each head's top count, as the host path would. Otherwise the scores are
// copied to the host (Collector.HostScores) and Compress runs. Both keep the same
// tokens; c's scores are not changed, so several methods may compress from them.
func (m Method) CompressCollected(cache backend.KVCache, c *Collector, reserve int) error {
	if reserve < 0 {
		return fmt.Errorf("eviction: negative reserve %d", reserve)
	}
	dc, isDev := cache.(backend.DeviceCompaction)
	if d := c.deviceScores(); d != nil && isDev && !m.HostOnly {
		// A shape the counts or the cache refuse falls back: the host path reports it.
		counts, ok, err := m.FixedCounts(cache, d.Layers())
		if ok && err == nil && d.KVHeads() == cache.KVHeads() && cache.Len(0, 0) == d.Tokens() {
			err := dc.KeepTop(backend.KeepTopRequest{Device: d, Sink: m.Sink, Window: m.Window, Counts: counts, Reserve: reserve})
			if !errors.Is(err, backend.ErrUnsupported) {
				return err
			}
		}
	}
	return m.Compress(cache, c.HostScores(), reserve)
}
