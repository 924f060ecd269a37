package eviction

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/backend/backendtest"
	"github.com/lukv/lukv/backend/cpu"
	"github.com/lukv/lukv/model"
)

// lenCache is a cache of which Plan and FixedCounts read only the shape: layers x heads,
// every head holding T tokens.
type lenCache struct {
	backend.KVCache
	layers, heads, T int
}

func (c lenCache) Layers() int          { return c.layers }
func (c lenCache) KVHeads() int         { return c.heads }
func (c lenCache) Len(layer, h int) int { return c.T }

// TestFixedCountsEqualPlan: for every allocator whose counts do not depend on the
// scores, FixedCounts gives exactly Plan's counts (sink and window floor included) on
// random scores, for random shapes, lengths (odd ones, and shorter than sink + window),
// ratios, sinks and windows; both fail alike where one fails (a LU-KV ratio off the
// curve's rows). AdaKV is not fixed.
func TestFixedCountsEqualPlan(t *testing.T) {
	r := rand.New(rand.NewPCG(19, 1))
	checked, floored := 0, 0
	for trial := 0; trial < 300; trial++ {
		L, nkv := 1+r.IntN(6), []int{1, 2, 4, 8}[r.IntN(4)]
		T := 1 + r.IntN(700)
		if trial%5 == 0 {
			T = 1 + r.IntN(12)
		}
		ratio := r.Float64() * 0.999
		switch trial % 7 {
		case 0:
			ratio = 0
		case 1:
			ratio = float64(1+r.IntN(99)) / 100
		case 2:
			ratio = 0.99
		}
		sink, window := r.IntN(12), r.IntN(12)
		curve := NewBudgetCurve(L, nkv)
		for i := range curve.Prune {
			curve.Prune[i] = r.Float64()
		}
		cache := lenCache{layers: L, heads: nkv, T: T}
		scores := tiedRandomScores(r, L, nkv, T)
		for _, a := range []Allocator{UniformAllocator{}, PyramidAllocator{Window: r.IntN(16), Beta: 1 + 29*r.Float64()},
			PyramidAllocator{Window: 8, Beta: 20}, LUKVAllocator{Curve: curve}} {
			m := Method{Allocator: a, Ratio: ratio, Sink: sink, Window: window}
			name := fmt.Sprintf("%s L=%d nkv=%d T=%d ratio %v sink %d window %d", a.Name(), L, nkv, T, ratio, sink, window)
			got, ok, gotErr := m.FixedCounts(cache, L)
			if !ok {
				t.Fatalf("%s: not a fixed allocator", name)
			}
			plan, wantErr := m.Plan(cache, scores)
			if (gotErr != nil) != (wantErr != nil) {
				t.Fatalf("%s: FixedCounts error %v, Plan error %v", name, gotErr, wantErr)
			}
			if wantErr != nil {
				continue
			}
			for l := range got {
				if !slices.Equal(got[l], plan.Counts[l]) {
					t.Fatalf("%s layer %d: fixed counts %v, Plan's %v", name, l, got[l], plan.Counts[l])
				}
				for _, c := range got[l] {
					if c < Protected(T, sink, window) {
						t.Fatalf("%s layer %d: count %d below the protected %d", name, l, c, Protected(T, sink, window))
					}
					if c == Protected(T, sink, window) && sink+window > 0 {
						floored++
					}
				}
			}
			checked++
		}
	}
	if checked < 900 || floored == 0 {
		t.Fatalf("only %d cases compared (%d at the sink and window floor)", checked, floored)
	}
	if _, ok, _ := (Method{Allocator: AdaKVAllocator{Safeguard: 0.2}, Ratio: 0.5}).FixedCounts(lenCache{layers: 1, heads: 2, T: 9}, 1); ok {
		t.Fatal("AdaKV's counts follow the scores: it must not be fixed")
	}
	if (Method{Allocator: UniformAllocator{}, HostOnly: true}).SelectsOnDevice() || !(Method{Allocator: UniformAllocator{}}).SelectsOnDevice() ||
		(Method{Allocator: AdaKVAllocator{}}).SelectsOnDevice() {
		t.Fatal("SelectsOnDevice: want true for a fixed allocator only, and never with HostOnly")
	}
}

// TestFixedCountsFloor: at a ratio whose budget is below sink + window, every head
// keeps exactly sink + window tokens (or all of a shorter head).
func TestFixedCountsFloor(t *testing.T) {
	m := Method{Allocator: UniformAllocator{}, Ratio: 0.95, Sink: 4, Window: 2}
	for _, tc := range []struct{ T, want int }{{40, 6}, {5, 5}, {200, 10}} {
		c, _, err := m.FixedCounts(lenCache{layers: 2, heads: 3, T: tc.T}, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, lc := range c {
			for _, n := range lc {
				if n != tc.want {
					t.Fatalf("T=%d: count %d, want %d", tc.T, n, tc.want)
				}
			}
		}
	}
	if _, _, err := m.FixedCounts(lenCache{layers: 2, heads: 3, T: 9}, 3); err == nil {
		t.Fatal("counts for more layers than the cache holds: want an error")
	}
}

// tiedRandomScores are [layers][heads][T] random scores with ties.
func tiedRandomScores(r *rand.Rand, layers, heads, T int) [][][]float32 {
	out := make([][][]float32, layers)
	for l := range out {
		out[l] = make([][]float32, heads)
		for h := range out[l] {
			out[l][h] = make([]float32, T)
			for j := range out[l][h] {
				out[l][h][j] = float32(r.IntN(20))
			}
		}
	}
	return out
}

// TestCompressCollectedKeepsScoresOnDevice: with a backend that scores on the device and
// a cache that selects there, a method with fixed counts leaves the collector's scores
// on the device (never read back) and hands them to the cache with its counts, sink and
// window; the cache ends exactly as the host path leaves it. AdaKV (counts from the
// scores) reads them back once and plans on the host; HostScores gives the host path's
// scores; the CPU backend takes the host path.
func TestCompressCollectedKeepsScoresOnDevice(t *testing.T) {
	f := &fakeScoring{Backend: cpu.New(), refuse: -1}
	curve, err := ReadNPY(tinyDir + "/curves/knorm.npy")
	if err != nil {
		t.Fatal(err)
	}
	var cols []*Collector
	var hostCol *Collector
	methods := []Method{
		{Scorer: KNormScorer{}, Allocator: UniformAllocator{}, Ratio: 0.5, Sink: 4, Window: 2},
		{Scorer: KNormScorer{}, Allocator: PyramidAllocator{Window: 8, Beta: 20}, Ratio: 0.7, Sink: 1, Window: 30},
		{Scorer: KNormScorer{}, Allocator: LUKVAllocator{Curve: curve}, Ratio: 0.6, Sink: 4, Window: 1},
		{Scorer: KNormScorer{}, Allocator: LUKVAllocator{Curve: curve}, Ratio: 0.99, Sink: 0, Window: 0},
	}
	_, base := prefillTiny(t, f, 61, func(m *model.Model) model.Observer {
		var obs Collectors
		for _, mt := range methods {
			c := mt.NewCollector(m)
			if !c.KeepOnDevice {
				t.Fatalf("%v: collector does not keep its scores on the device", mt)
			}
			cols = append(cols, c)
			obs = append(obs, c)
		}
		hostCol = NewCollector(m, KNormScorer{})
		hostCol.HostOnly = true
		return append(obs, hostCol)
	})
	if f.reads != 0 || f.freed != 0 {
		t.Fatalf("after the pass: %d reads, %d frees of device scores, want none", f.reads, f.freed)
	}
	for l := range cols[0].Scores {
		if cols[0].Scores[l] != nil {
			t.Fatalf("layer %d: scores copied to the host", l)
		}
	}
	for i, mt := range methods {
		dev := &fakeCompaction{KVCache: cloneCache(t, base)}
		if err := mt.CompressCollected(dev, cols[i], 3); err != nil {
			t.Fatalf("%v: %v", mt, err)
		}
		if len(dev.reqs) != 1 || dev.reqs[0].Device == nil || dev.reqs[0].Scores != nil ||
			dev.reqs[0].Sink != mt.Sink || dev.reqs[0].Window != mt.Window || dev.reqs[0].Reserve != 3 {
			t.Fatalf("%v: requests %+v, want one with device scores, sink, window and reserve", mt, dev.reqs)
		}
		host := cloneCache(t, base)
		hm := mt
		hm.HostOnly = true
		if err := hm.Compress(host, hostCol.Scores, 3); err != nil {
			t.Fatal(err)
		}
		backendtest.SameCache(t, fmt.Sprintf("%v: device scores vs host path", mt), dev.KVCache, host)
	}
	if f.reads != 0 {
		t.Fatalf("fixed-count methods read the device scores back %d times", f.reads)
	}
	// AdaKV needs the scores on the host: one read-back, then the plan's request.
	ada := Method{Scorer: KNormScorer{}, Allocator: AdaKVAllocator{Safeguard: 0.2}, Ratio: 0.5, Sink: 4, Window: 2}
	dev, host := &fakeCompaction{KVCache: cloneCache(t, base)}, cloneCache(t, base)
	if err := ada.CompressCollected(dev, cols[0], 3); err != nil {
		t.Fatal(err)
	}
	if f.reads != 1 || len(dev.reqs) != 1 || dev.reqs[0].Device != nil || dev.reqs[0].Scores == nil {
		t.Fatalf("adakv: %d reads, requests %+v; want one read and a host-scores request", f.reads, dev.reqs)
	}
	ada.HostOnly = true
	if err := ada.Compress(host, hostCol.Scores, 3); err != nil {
		t.Fatal(err)
	}
	backendtest.SameCache(t, "adakv", dev.KVCache, host)
	for l, s := range cols[0].HostScores() {
		if !equalScores(s, hostCol.Scores[l]) {
			t.Fatalf("layer %d: HostScores differ from the host path's", l)
		}
	}
	if f.reads != 1 {
		t.Fatalf("HostScores read again (%d reads)", f.reads)
	}
	cols[0].Release()
	if f.freed != 1 {
		t.Fatalf("Release freed %d device scores, want 1", f.freed)
	}

	// The CPU backend: no device scores, the host path, the same cache.
	var cpuCol *Collector
	mt := methods[2]
	_, cpuBase := prefillTiny(t, cpu.New(), 61, func(m *model.Model) model.Observer {
		cpuCol = mt.NewCollector(m)
		return cpuCol
	})
	fc := &fakeCompaction{KVCache: cpuBase}
	if err := mt.CompressCollected(fc, cpuCol, 3); err != nil {
		t.Fatal(err)
	}
	if len(fc.reqs) != 1 || fc.reqs[0].Device != nil {
		t.Fatalf("CPU backend: requests %+v, want one with host scores", fc.reqs)
	}
}

// TestCompressCollectedPartlyOnDevice: when the device refused a layer, the kept scores
// are not complete on the device: CompressCollected reads the device layers back once,
// joins them to the host-scored layer and plans on the host, leaving the cache as the
// host path does.
func TestCompressCollectedPartlyOnDevice(t *testing.T) {
	f := &fakeScoring{Backend: cpu.New(), refuse: 3}
	mt := Method{Scorer: KNormScorer{}, Allocator: UniformAllocator{}, Ratio: 0.5, Sink: 4, Window: 2}
	var col, hostCol *Collector
	_, base := prefillTiny(t, f, 45, func(m *model.Model) model.Observer {
		col = mt.NewCollector(m)
		hostCol = NewCollector(m, KNormScorer{})
		hostCol.HostOnly = true
		return Collectors{col, hostCol}
	})
	if f.reads != 0 || col.Scores[3] == nil || col.Scores[0] != nil {
		t.Fatalf("after the pass: %d reads; layer 3 scored on the host %v, layer 0 kept on the device %v",
			f.reads, col.Scores[3] != nil, col.Scores[0] == nil)
	}
	dev, host := &fakeCompaction{KVCache: cloneCache(t, base)}, cloneCache(t, base)
	if err := mt.CompressCollected(dev, col, 2); err != nil {
		t.Fatal(err)
	}
	if f.reads != 1 || len(dev.reqs) != 1 || dev.reqs[0].Device != nil {
		t.Fatalf("%d reads, requests %+v; want one read and a host-scores request", f.reads, dev.reqs)
	}
	mt.HostOnly = true
	if err := mt.Compress(host, hostCol.Scores, 2); err != nil {
		t.Fatal(err)
	}
	backendtest.SameCache(t, "partly on the device", dev.KVCache, host)
}
