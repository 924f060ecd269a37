//go:build cuda

package cuda

// Device scoring for KV-cache eviction: the Backend implements backend.DeviceScoring
// with kernels/score_*.cu, so eviction's Collector ranks a layer's tokens where the
// forward pass left its queries, keys and values, instead of copying them to the host
// and recomputing the pre-RoPE queries there (kvcache_device_keep.go does the selection
// and compaction that follow).
//
// This file holds the scoring state and the entry points (NewScores, ScoreLayer,
// ReleaseScoring) and the tables the scorers share; each scorer family has its own file
// (score_expected.go, score_snapkv.go, score_keys.go) as its kernels do
// (kernels/score_*.cu).
//
// Scorers and how closely they match eviction's float64 host scorers (score_test.go
// checks these bounds on random views):
//
//   - KNorm and KeyDiff are computed in double from the float32 keys and rounded once,
//     as the host does: the scores agree to the last float32 bit but for the rare value
//     whose float64 lies within a double rounding of a float32 boundary (<= 1 ulp).
//   - ExpectedAttention: the pre-RoPE queries are the rotated ones turned back with the
//     RoPE kernel's own cos/sin (exact to float32 rounding); the query covariance,
//     k^T Sigma' k and mu'.k are float32 products, the rest double. Relative error of a
//     score: ~1e-6 times the spread of the logits z (under 1e-4 on the tests' views).
//     With Options.TensorCores at head dim 128 the covariance and k^T Sigma' k run on
//     the bf16 tensor cores with every float32 operand split into two bf16 (hi + lo,
//     16 significant bits; ~1.5e-5 relative per product): within 1e-3 relative.
//   - SnapKV: the window logits are float32 dot products, the softmax and pooling double;
//     relative error ~1e-6 times the logits' magnitude.
//
// Shapes the kernels take (others return backend.ErrUnsupported and eviction falls back
// to the host): ExpectedAttention head dim 32, 64 or 128; SnapKV a multiple of 4 up to
// 128; KeyDiff up to 256; KNorm any.

import (
	"fmt"
	"math"
	"unsafe"

	"gorgonia.org/cu"

	"github.com/lukv/lukv/backend"
)

// selectThreads is the block of select_topk (kernels/topk.cu; launched
// by kvcache_device_keep.go).
const selectThreads = 1024

// scoreState is a backend's scoring state (Backend.score): the tables that stay the same
// for every layer of a prefill (positions, RoPE cos/sin, statistics rows, the averaged
// future rotation) and scratch buffers reused across calls. It is used with the backend
// entered (its mutex held).
type scoreState struct {
	err error // why device scoring is unavailable
	tc  bool  // the tensor-core kernels can run (compute capability 8.0 or later)

	posHost  []int32 // positions on the device (pos)
	pos      devBuf
	freqHost []float32 // float32 RoPE inverse frequencies on the device (freq)
	freq     devBuf
	tableOK  bool   // table holds cos then sin [len(posHost)][len(freqHost)] for them
	table    devBuf //
	rowsSink int    // rows lists the statistics rows for posHost and this sink count
	rowsOK   bool
	nrows    int
	rows     devBuf
	meanKey  [2]int64 // (first, n) of the averaged rotation in mean (cbar, then sbar)
	meanOK   bool
	mean     devBuf

	// Calls that ran on the device (tests check that the device path was taken), and
	// how often eviction scores crossed between host and device (read back by
	// deviceScores.Read, uploaded for KeepTop): tests check that scores kept on the
	// device never did.
	scoreCalls, evictCalls, tcCalls int
	scoreReads, scoreUploads        int

	// Scratch (kvcache_device_keep.go uses sc, keep, counts and offs).
	mpart, spart, shift, mred, sred, ut, lin, z, ms, vn devBuf
	logits, pml, avg, kd                                devBuf
	sc, keep, counts, offs                              devBuf
}

// scoring returns b's scoring state, made on first use (the kernels' shared-memory
// opt-ins; err says why scoring is unavailable). The caller holds the backend (enter).
func (b *Backend) scoring() (*scoreState, error) {
	if b.score == nil {
		b.score = &scoreState{}
		b.score.err = b.initScoring(b.score)
	}
	return b.score, b.score.err
}

// ReleaseScoring frees the scoring state's device buffers now (they are otherwise kept
// for the next call, and released with the context).
func (b *Backend) ReleaseScoring() {
	defer b.enter()()
	st := b.score
	if st == nil {
		return
	}
	for _, d := range []*devBuf{&st.pos, &st.freq, &st.table, &st.rows, &st.mean, &st.mpart, &st.spart, &st.shift,
		&st.mred, &st.sred, &st.ut, &st.lin, &st.z, &st.ms, &st.vn, &st.logits, &st.pml, &st.avg, &st.kd,
		&st.sc, &st.keep, &st.counts, &st.offs} {
		d.free()
	}
	st.posHost, st.freqHost, st.tableOK, st.rowsOK, st.meanOK = nil, nil, false, false, false
}

// initScoring opts the scoring kernels that need it into more than 48 KiB of shared
// memory, and the tensor-core ones only on a GPU that has bf16 mma (8.0 or later).
func (b *Backend) initScoring(st *scoreState) error {
	if err := b.allowSharedMemory("ea_logits", eaLogitsSmem(eaMaxHeadDim)); err != nil {
		return err
	}
	if err := b.allowSharedMemory("snap_logits", snapSmem(skMaxHeadDim)); err != nil {
		return err
	}
	if major, err := b.dev.Attribute(cu.ComputeCapabilityMajor); err == nil && major >= 8 {
		if err := b.allowSharedMemory("ea_logits_tc", tcLogitsSmem); err != nil {
			return err
		}
		st.tc = true
	}
	return nil
}

// ceilDiv is ceil(a/b) for b > 0.
func ceilDiv(a, b int) int { return (a + b - 1) / b }

// ptrAt is p advanced by n elements of size bytes.
func ptrAt(p cu.DevicePtr, n int, size int64) cu.DevicePtr { return p + cu.DevicePtr(int64(n)*size) }

// deviceScores is backend.DeviceScores on this backend: a pooled float32 tensor
// [layers*kvHeads, tokens].
type deviceScores struct {
	b                       *Backend
	t                       *Tensor
	layers, kvHeads, tokens int
}

var (
	_ backend.DeviceScoring = (*Backend)(nil)
	_ backend.DeviceScores  = (*deviceScores)(nil)
)

func (s *deviceScores) Layers() int  { return s.layers }
func (s *deviceScores) KVHeads() int { return s.kvHeads }
func (s *deviceScores) Tokens() int  { return s.tokens }

// Read copies the scores to the host.
func (s *deviceScores) Read() ([]float32, error) {
	defer s.b.enter()()
	if s.t.freed {
		return nil, fmt.Errorf("cuda: reading eviction scores after Free")
	}
	out := make([]float32, s.layers*s.kvHeads*s.tokens)
	if len(out) == 0 {
		return out, nil
	}
	if err := cu.MemcpyDtoH(unsafe.Pointer(&out[0]), s.t.ptr, int64(len(out))*4); err != nil {
		return nil, fmt.Errorf("cuda: reading eviction scores: %w", err)
	}
	if st := s.b.score; st != nil {
		st.scoreReads++
	}
	return out, nil
}

// Free returns the scores' memory to the backend's pool.
func (s *deviceScores) Free() { s.b.Free(s.t) }

// NewScores allocates room for layers x kvHeads x tokens scores.
func (b *Backend) NewScores(layers, kvHeads, tokens int) (backend.DeviceScores, error) {
	if layers < 1 || kvHeads < 1 || tokens < 0 {
		return nil, fmt.Errorf("cuda: NewScores(%d layers, %d KV heads, %d tokens): need layers, heads >= 1, tokens >= 0", layers, kvHeads, tokens)
	}
	defer b.enter()()
	t, err := b.newTensor(layers*kvHeads, tokens, f32, fmt.Sprintf("eviction scores [%d layers, %d heads, %d tokens]", layers, kvHeads, tokens))
	if err != nil {
		return nil, err
	}
	return &deviceScores{b: b, t: t, layers: layers, kvHeads: kvHeads, tokens: tokens}, nil
}

// unsupported is an error wrapping backend.ErrUnsupported.
func unsupported(format string, args ...any) error {
	return fmt.Errorf("cuda: %s: %w", fmt.Sprintf(format, args...), backend.ErrUnsupported)
}

// checkSpec reports (wrapping ErrUnsupported) a scorer configuration the kernels do not
// take.
func checkSpec(spec backend.ScorerSpec, d int, rope *backend.RoPE) error {
	switch spec.Kind {
	case backend.ScoreExpectedAttention:
		if d != 32 && d != 64 && d != 128 {
			return unsupported("expected-attention kernels take head dim 32, 64 or 128, not %d", d)
		}
		if rope == nil || len(rope.InvFreq) != d/2 {
			return unsupported("expected-attention needs %d RoPE inverse frequencies", d/2)
		}
		if spec.NFuture < 1 || spec.NSink < 0 {
			return unsupported("expected-attention with NFuture %d, NSink %d", spec.NFuture, spec.NSink)
		}
	case backend.ScoreSnapKV:
		if d%4 != 0 || d > skMaxHeadDim {
			return unsupported("snapkv kernels take a head dim that is a multiple of 4 up to %d, not %d", skMaxHeadDim, d)
		}
		if spec.Window < 1 || spec.Window > 64*skTile {
			return unsupported("snapkv with window %d (the kernels take 1 .. %d: 64 row tiles of %d)", spec.Window, 64*skTile, skTile)
		}
	case backend.ScoreKeyDiff:
		if d > kdMaxHeadDim {
			return unsupported("keydiff kernels take a head dim up to %d, not %d", kdMaxHeadDim, d)
		}
	case backend.ScoreKNorm:
	default:
		return unsupported("no device kernels for scorer %v", spec.Kind)
	}
	return nil
}

// ScoreLayer scores one layer on the device into dst (backend.DeviceScoring).
func (b *Backend) ScoreLayer(spec backend.ScorerSpec, in backend.LayerInput, dst backend.DeviceScores) error {
	ds, ok := dst.(*deviceScores)
	if !ok || ds.b != b {
		return fmt.Errorf("cuda: ScoreLayer: scores of type %T do not belong to this backend", dst)
	}
	T, nq, nkv, d := len(in.Positions), in.NumHeads, in.NumKVHeads, in.HeadDim
	if nq < 1 || nkv < 1 || d < 1 || nq%nkv != 0 {
		return fmt.Errorf("cuda: ScoreLayer: %d query heads, %d KV heads of %d: want heads a multiple of KV heads, all >= 1", nq, nkv, d)
	}
	if in.Layer < 0 || in.Layer >= ds.layers || nkv != ds.kvHeads || T != ds.tokens {
		return fmt.Errorf("cuda: ScoreLayer: layer %d, %d KV heads, %d tokens do not fit scores for %d layers x %d heads x %d tokens",
			in.Layer, nkv, T, ds.layers, ds.kvHeads, ds.tokens)
	}
	if err := checkSpec(spec, d, in.RoPE); err != nil {
		return err
	}
	for _, p := range in.Positions {
		if p < 0 || p >= math.MaxInt32-spec.NFuture-1 {
			return unsupported("position %d does not fit the kernels' 32-bit positions", p)
		}
	}
	defer b.enter()()
	st, err := b.scoring()
	if err != nil {
		return unsupported("device scoring unavailable: %v", err)
	}
	q, k, v := b.f32(in.Q, "ScoreLayer q"), b.f32(in.K, "ScoreLayer k"), b.f32(in.V, "ScoreLayer v")
	if q.rows != T || q.cols != nq*d || k.rows != T || k.cols != nkv*d || v.rows != T || v.cols != nkv*d {
		return fmt.Errorf("cuda: ScoreLayer: q [%d, %d], k [%d, %d], v [%d, %d] do not fit %d tokens of %d/%d heads of %d",
			q.rows, q.cols, k.rows, k.cols, v.rows, v.cols, T, nq, nkv, d)
	}
	if ds.t.freed {
		return fmt.Errorf("cuda: ScoreLayer: scores used after Free")
	}
	if T == 0 {
		return nil
	}
	out := ptrAt(ds.t.ptr, in.Layer*nkv*T, 4)
	st.scoreCalls++
	switch spec.Kind {
	case backend.ScoreExpectedAttention:
		return b.scoreExpected(st, spec, in, q, k, v, out)
	case backend.ScoreSnapKV:
		return b.scoreSnapKV(st, spec, in, q, k, out)
	case backend.ScoreKeyDiff:
		return b.scoreKeyDiff(st, in, k, out)
	case backend.ScoreKNorm:
		return b.scoreKNorm(in, k, out)
	}
	return unsupported("no device kernels for scorer %v", spec.Kind)
}

// fillScores sets count floats at out to v.
func fillScores(out cu.DevicePtr, count int, v float32) error {
	if count == 0 {
		return nil
	}
	if err := cu.MemsetD32Async(out, uint(math.Float32bits(v)), int64(count), cu.NoStream); err != nil {
		return fmt.Errorf("cuda: filling %d scores: %w", count, err)
	}
	return nil
}

// setPositions uploads positions (as int32) unless the device holds them already; a new
// set invalidates the tables made from them.
func (st *scoreState) setPositions(positions []int) error {
	if len(positions) == len(st.posHost) {
		same := true
		for i, p := range positions {
			if int32(p) != st.posHost[i] {
				same = false
				break
			}
		}
		if same {
			return nil
		}
	}
	host := make([]int32, len(positions))
	for i, p := range positions {
		host[i] = int32(p)
	}
	st.posHost, st.tableOK, st.rowsOK = nil, false, false
	if err := st.pos.uploadInt32(host, "eviction positions"); err != nil {
		return err
	}
	st.posHost = host
	return nil
}

// ensureAll grows several scratch buffers.
func ensureAll(what string, bufs ...any) error {
	for i := 0; i < len(bufs); i += 2 {
		if err := bufs[i].(*devBuf).ensure(max(bufs[i+1].(int64), 8), what); err != nil {
			return err
		}
	}
	return nil
}

func boolInt32(v bool) int32 {
	if v {
		return 1
	}
	return 0
}
