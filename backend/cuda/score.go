//go:build cuda

package cuda

// Device scoring for KV-cache eviction: the Backend implements backend.DeviceScoring
// with kernels/score.cu, so eviction's Collector ranks a layer's tokens where the
// forward pass left its queries, keys and values, instead of copying them to the host
// and recomputing the pre-RoPE queries there (kvcache_device_keep.go does the selection
// and compaction that follow).
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
	"runtime"
	"slices"
	"sync"
	"unsafe"
	"weak"

	"gorgonia.org/cu"

	"github.com/lukv/lukv/backend"
)

// scoreKernelNames and topkKernelNames are kernels/score.cu's and kernels/topk.cu's
// kernels (kernels.go's module list names them, so New fails on a build without them).
var scoreKernelNames = []string{
	"score_rope_table", "score_rope_mean", "ea_cov_partial", "ea_cov_reduce", "ea_cov_rotate", "ea_logits",
	"ea_softmax_stats", "ea_finish", "row_norms", "knorm_scores", "kd_anchor_partial", "kd_scores",
	"snap_logits", "snap_stats", "snap_reduce", "snap_pool", "layer_protect", "ea_cov_tc", "ea_logits_tc",
}
var topkKernelNames = []string{"select_topk", "kv_gather_keep"}

// Shapes of the scoring kernels, in one place (kernels/score.cu).
const (
	eaRC            = 32      // EA_RC: statistics rows per chunk
	eaKT            = 64      // EA_KT: keys per tile
	eaKTP           = 68      // EA_KTP: padded key tile row
	eaMaxHeadDim    = 128     // U (D x D floats) and a key tile fit shared memory
	skTile          = 64      // SK_RT, SK_KT: window rows and keys per tile
	skP             = 68      // SK_P: padded tile row
	skMaxHeadDim    = 128     // two tiles of D x 68 floats
	kdMaxHeadDim    = 256     // KD_MAXD
	snapLogitsBytes = 1 << 28 // the window logits of at most this many bytes are held at once
	selectThreads   = 1024    // block of select_topk
	tcHeadDim       = 128     // TC_D: the head dim of the tensor-core expected-attention kernels
	tcRC            = 64      // TCX_RC: statistics rows per chunk of ea_cov_tc
	tcKT            = 64      // TCK_KT: keys per tile of ea_logits_tc
	tcCovSmem       = 2*tcHeadDim*(tcRC+8)*2 + tcHeadDim*4
	tcLogitsSmem    = (2*tcHeadDim*(tcHeadDim+8)+2*tcKT*(tcHeadDim+8))*2 + tcHeadDim*4
)

func eaLogitsSmem(d int) int { return (d*d + d*eaKTP + d + eaKT) * 4 }
func snapSmem(d int) int     { return 2 * d * skP * 4 }

// scoreState is a backend's scoring state: the kernels, the tables that stay the same
// for every layer of a prefill (positions, RoPE cos/sin, statistics rows, the averaged
// future rotation) and scratch buffers reused across calls. It is used with the backend
// entered (its mutex held).
type scoreState struct {
	err error          // why the kernels are unavailable
	k   map[string]kfn // by name
	tc  bool           // the tensor-core kernels can run (compute capability 8.0 or later)

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

	// Calls that ran on the device (tests check that the device path was taken).
	scoreCalls, evictCalls, tcCalls int

	// Scratch.
	mpart, spart, shift, mred, sred, ut, lin, z, ms, vn devBuf
	logits, pml, avg, kd                                devBuf
	sc, keep, counts, offs                              devBuf
}

// scoreStates maps each live backend to its scoring state. The Backend struct has no
// field for it (backend.go belongs to the forward pass); the entry goes when the backend
// is garbage collected, and the device buffers with its context.
var scoreStates = struct {
	sync.Mutex
	m map[weak.Pointer[Backend]]*scoreState
}{m: map[weak.Pointer[Backend]]*scoreState{}}

// scoring returns b's scoring state, loading the kernels on first use. The caller holds
// the backend (enter).
func (b *Backend) scoring() (*scoreState, error) {
	key := weak.Make(b)
	scoreStates.Lock()
	st, ok := scoreStates.m[key]
	if !ok {
		st = &scoreState{}
		st.err = b.initScoring(st)
		scoreStates.m[key] = st
		runtime.AddCleanup(b, func(k weak.Pointer[Backend]) {
			scoreStates.Lock()
			delete(scoreStates.m, k)
			scoreStates.Unlock()
		}, key)
	}
	scoreStates.Unlock()
	return st, st.err
}

// ReleaseScoring frees the scoring state's device buffers now (they are otherwise kept
// for the next call, and released with the context).
func (b *Backend) ReleaseScoring() {
	defer b.enter()()
	scoreStates.Lock()
	st := scoreStates.m[weak.Make(b)]
	scoreStates.Unlock()
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

func (b *Backend) initScoring(st *scoreState) error {
	st.k = map[string]kfn{}
	for _, name := range append(slices.Clone(scoreKernelNames), topkKernelNames...) {
		k, err := b.findKernel(name, "kernels/score.cu, kernels/topk.cu")
		if err != nil {
			return err
		}
		st.k[name] = k
	}
	if err := setMaxDynamicShared(st.k["ea_logits"], eaLogitsSmem(eaMaxHeadDim)); err != nil {
		return err
	}
	if err := setMaxDynamicShared(st.k["snap_logits"], snapSmem(skMaxHeadDim)); err != nil {
		return err
	}
	if major, err := b.dev.Attribute(cu.ComputeCapabilityMajor); err == nil && major >= 8 {
		if err := setMaxDynamicShared(st.k["ea_logits_tc"], tcLogitsSmem); err != nil {
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
		b.launch(st.k["knorm_scores"], dim3{ceilDiv(T*nkv, 8), 1, 1}, dim3{256, 1, 1}, 0,
			out, k.ptr, int32(T), int32(nkv), int32(d))
		return nil
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

// setFreq uploads float32(rope.InvFreq) unless the device holds it already.
func (st *scoreState) setFreq(rope *backend.RoPE) error {
	freq := make([]float32, len(rope.InvFreq))
	for j, f := range rope.InvFreq {
		freq[j] = float32(f) // as the RoPE kernel and backend/rope.go form the angle
	}
	if slices.Equal(freq, st.freqHost) {
		return nil
	}
	st.freqHost, st.tableOK, st.meanOK = nil, false, false
	if err := st.freq.uploadFloat32(freq, "eviction RoPE frequencies"); err != nil {
		return err
	}
	st.freqHost = freq
	return nil
}

// ropeTable makes the cos/sin table of the positions and frequencies (setPositions,
// setFreq) unless it is there.
func (b *Backend) ropeTable(st *scoreState) error {
	if st.tableOK {
		return nil
	}
	n, half := len(st.posHost), len(st.freqHost)
	if err := st.table.ensure(int64(2*n*half)*4, "eviction RoPE table"); err != nil {
		return err
	}
	total := int64(n) * int64(half)
	b.launch(st.k["score_rope_table"], gridFor(total, b.sms), dim3{256, 1, 1}, 0,
		st.table.ptr, ptrAt(st.table.ptr, n*half, 4), st.pos.ptr, st.freq.ptr, int32(n), int32(half))
	st.tableOK = true
	return nil
}

// statRows lists, on the device, the query rows expected attention takes its statistics
// over (eviction ExpectedAttentionScorer.statisticsRows): those after the sink-th
// key's position, or all when that leaves none.
func (st *scoreState) statRows(positions []int, sink int) error {
	if st.rowsOK && st.rowsSink == sink {
		return nil
	}
	var rows []int32
	if sink > 0 {
		end := positions[sink-1]
		for r, p := range positions {
			if p > end {
				rows = append(rows, int32(r))
			}
		}
	}
	if len(rows) == 0 {
		rows = make([]int32, len(positions))
		for r := range rows {
			rows[r] = int32(r)
		}
	}
	if err := st.rows.uploadInt32(rows, "expected-attention statistics rows"); err != nil {
		return err
	}
	st.rowsOK, st.rowsSink, st.nrows = true, sink, len(rows)
	return nil
}

// ropeMean makes cbar and sbar (double [half] each) for the n positions from first
// (eviction averageRotation) unless they are there.
func (b *Backend) ropeMean(st *scoreState, first int64, n int) error {
	key := [2]int64{first, int64(n)}
	if st.meanOK && st.meanKey == key {
		return nil
	}
	half := len(st.freqHost)
	if err := st.mean.ensure(int64(2*half)*8, "expected-attention future rotation"); err != nil {
		return err
	}
	b.launch(st.k["score_rope_mean"], dim3{half, 1, 1}, dim3{256, 1, 1}, 0,
		st.mean.ptr, ptrAt(st.mean.ptr, half, 8), st.freq.ptr, first, int32(n))
	st.meanOK, st.meanKey = true, key
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

// scoreExpected runs expected attention (see kernels/score.cu for the kernels).
func (b *Backend) scoreExpected(st *scoreState, spec backend.ScorerSpec, in backend.LayerInput, q, k, v *Tensor, out cu.DevicePtr) error {
	T, nq, nkv, d := len(in.Positions), in.NumHeads, in.NumKVHeads, in.HeadDim
	ns := spec.NSink
	if T <= ns {
		return fillScores(out, nkv*T, 1)
	}
	if err := st.setPositions(in.Positions); err != nil {
		return err
	}
	if err := st.setFreq(in.RoPE); err != nil {
		return err
	}
	if err := b.ropeTable(st); err != nil {
		return err
	}
	if err := st.statRows(in.Positions, ns); err != nil {
		return err
	}
	if err := b.ropeMean(st, int64(in.Positions[T-1])+1, spec.NFuture); err != nil {
		return err
	}
	half, bd := d/2, d/4
	tile := bd * bd
	nrows := st.nrows
	useCov := boolInt32(spec.UseCovariance)
	// With Options.TensorCores, head dim 128 and the covariance, the two large products
	// run on the tensor cores (split bf16, see kernels/score.cu).
	tc := b.opt.TensorCores && st.tc && d == tcHeadDim && spec.UseCovariance
	rc := eaRC
	if tc {
		rc = tcRC
	}

	// Statistics: one wave of two blocks per multiprocessor (what the kernels' registers
	// allow), each over whole chunks of rows.
	splits := min(max(2*b.sms/nq, 1), ceilDiv(nrows, rc))
	rps := ceilDiv(ceilDiv(nrows, splits), rc) * rc
	splits = ceilDiv(nrows, rps)
	mpartBytes := int64(0)
	if spec.UseCovariance {
		mpartBytes = int64(nq) * int64(splits) * 10 * int64(tile) * 4
	}
	if err := ensureAll("expected-attention scratch",
		&st.mpart, mpartBytes, &st.spart, int64(nq*splits*d)*4, &st.shift, int64(nq*d)*4,
		&st.mred, int64(nq*10*tile)*8, &st.sred, int64(nq*d)*8, &st.ut, int64(nq*d*d)*4, &st.lin, int64(nq*d)*4,
		&st.z, int64(nq)*int64(T)*4, &st.ms, int64(nq*2)*8, &st.vn, int64(nkv)*int64(T)*8); err != nil {
		return err
	}
	m := bd / 8
	block := (max(10*m*m, d) + 31) / 32 * 32
	cosT, sinT := st.table.ptr, ptrAt(st.table.ptr, T*half, 4)
	if tc {
		st.tcCalls++
		b.launch(st.k["ea_cov_tc"], dim3{nq, splits, 1}, dim3{128, 1, 1}, tcCovSmem,
			st.mpart.ptr, st.spart.ptr, st.shift.ptr, q.ptr, cosT, sinT, st.rows.ptr,
			int32(nrows), int32(nq), int32(rps))
	} else {
		b.launch(st.k["ea_cov_partial"], dim3{nq, splits, 1}, dim3{block, 1, 1}, (eaRC+1)*d*4,
			st.mpart.ptr, st.spart.ptr, st.shift.ptr, q.ptr, cosT, sinT, st.rows.ptr,
			int32(nrows), int32(nq), int32(d), int32(rps), useCov)
	}
	b.launch(st.k["ea_cov_reduce"], dim3{nq, 10, 1}, dim3{256, 1, 1}, 0,
		st.mred.ptr, st.sred.ptr, st.mpart.ptr, st.spart.ptr, int32(d), int32(splits), useCov)
	cb, sb := st.mean.ptr, ptrAt(st.mean.ptr, half, 8)
	b.launch(st.k["ea_cov_rotate"], dim3{nq, ceilDiv(d*d, 256), 1}, dim3{256, 1, 1}, 0,
		st.ut.ptr, st.lin.ptr, st.mred.ptr, st.sred.ptr, st.shift.ptr, cb, sb, int32(d), int32(nrows), useCov)

	// Logits of the keys after the sinks: one wave of two blocks per multiprocessor
	// (what ea_logits' shared memory allows).
	keys := T - ns
	kx := min(max(2*b.sms/nq, 1), ceilDiv(keys, eaKT))
	kpb := ceilDiv(ceilDiv(keys, kx), eaKT) * eaKT
	kx = ceilDiv(keys, kpb)
	if tc { // eaKT == tcKT: kpb is a multiple of both tiles
		b.launch(st.k["ea_logits_tc"], dim3{nq, kx, 1}, dim3{128, 1, 1}, tcLogitsSmem,
			st.z.ptr, k.ptr, st.ut.ptr, st.lin.ptr, int32(T), int32(nq), int32(nkv), int32(ns), int32(kpb))
	} else {
		b.launch(st.k["ea_logits"], dim3{nq, kx, 1}, dim3{d, 1, 1}, eaLogitsSmem(d),
			st.z.ptr, k.ptr, st.ut.ptr, st.lin.ptr, int32(T), int32(nq), int32(nkv), int32(d), int32(ns), int32(kpb), useCov)
	}
	if spec.UseVNorm {
		b.launch(st.k["row_norms"], dim3{ceilDiv(T*nkv, 8), 1, 1}, dim3{256, 1, 1}, 0,
			st.vn.ptr, v.ptr, int32(T), int32(nkv), int32(d))
	}
	b.launch(st.k["ea_softmax_stats"], dim3{nq, 1, 1}, dim3{1024, 1, 1}, 0, st.ms.ptr, st.z.ptr, int32(T), int32(ns))
	b.launch(st.k["ea_finish"], dim3{ceilDiv(keys, 256), nkv, 1}, dim3{256, 1, 1}, 0,
		out, st.z.ptr, st.ms.ptr, st.vn.ptr, int32(T), int32(nq), int32(nkv), int32(ns), spec.Epsilon, boolInt32(spec.UseVNorm))
	if ns > 0 { // the sinks score above every other token of the layer
		b.launch(st.k["layer_protect"], dim3{1, 1, 1}, dim3{1024, 1, 1}, 0,
			out, int32(nkv), int32(T), int32(ns), int32(T), int32(ns), int32(T))
	}
	return nil
}

// scoreSnapKV runs SnapKV: the window logits are held for at most snapLogitsBytes worth
// of query heads at a time.
func (b *Backend) scoreSnapKV(st *scoreState, spec backend.ScorerSpec, in backend.LayerInput, q, k *Tensor, out cu.DevicePtr) error {
	T, nq, nkv, d := len(in.Positions), in.NumHeads, in.NumKVHeads, in.HeadDim
	w := min(spec.Window, T)
	if T <= w {
		return fillScores(out, nkv*T, 1)
	}
	if err := st.setPositions(in.Positions); err != nil {
		return err
	}
	prefix := T - w
	prefixP := (prefix + 3) / 4 * 4
	perHead := int64(w) * int64(prefixP) * 4
	hchunk := int(min(int64(nq), max(1, snapLogitsBytes/perHead)))
	rowTiles := ceilDiv(w, skTile)
	kx := min(max(3*b.sms/(hchunk*rowTiles), 1), ceilDiv(T, skTile)) // one wave of three blocks per multiprocessor
	kpb := ceilDiv(ceilDiv(T, kx), skTile) * skTile
	kx = ceilDiv(T, kpb)
	if err := ensureAll("snapkv scratch",
		&st.logits, int64(hchunk)*perHead, &st.pml, int64(hchunk*w*kx*2)*4, &st.ms, int64(hchunk*w*2)*8,
		&st.avg, int64(nq)*int64(prefix)*8); err != nil {
		return err
	}
	scale := float32(1 / math.Sqrt(float64(d)))
	for h0 := 0; h0 < nq; h0 += hchunk {
		hc := min(hchunk, nq-h0)
		b.launch(st.k["snap_logits"], dim3{kx, hc, rowTiles}, dim3{256, 1, 1}, snapSmem(d),
			st.logits.ptr, st.pml.ptr, q.ptr, k.ptr, st.pos.ptr, int32(T), int32(nq), int32(nkv), int32(d),
			int32(w), int32(prefix), int32(prefixP), int32(h0), int32(kpb), scale)
		b.launch(st.k["snap_stats"], dim3{ceilDiv(hc*w, 256), 1, 1}, dim3{256, 1, 1}, 0,
			st.ms.ptr, st.pml.ptr, int32(hc*w), int32(kx))
		b.launch(st.k["snap_reduce"], dim3{ceilDiv(prefix, 256), hc, 1}, dim3{256, 1, 1}, 0,
			st.avg.ptr, st.logits.ptr, st.ms.ptr, int32(w), int32(prefix), int32(prefixP), int32(h0))
	}
	b.launch(st.k["snap_pool"], dim3{ceilDiv(prefix, 256), nkv, 1}, dim3{256, 1, 1}, 0,
		out, st.avg.ptr, int32(T), int32(prefix), int32(nq), int32(nkv), int32(spec.Kernel), boolInt32(spec.MaxPool))
	// The window scores above every other token of the layer.
	b.launch(st.k["layer_protect"], dim3{1, 1, 1}, dim3{1024, 1, 1}, 0,
		out, int32(nkv), int32(T), int32(0), int32(prefix), int32(0), int32(prefix))
	return nil
}

// scoreKeyDiff runs KeyDiff: partial anchors over row slices, then the scores.
func (b *Backend) scoreKeyDiff(st *scoreState, in backend.LayerInput, k *Tensor, out cu.DevicePtr) error {
	T, nkv, d := len(in.Positions), in.NumKVHeads, in.HeadDim
	splits := min(max(ceilDiv(2*b.sms, nkv), 1), ceilDiv(T, 64))
	rpb := ceilDiv(T, splits)
	splits = ceilDiv(T, rpb)
	if err := st.kd.ensure(int64(nkv*splits*d)*8, "keydiff anchors"); err != nil {
		return err
	}
	b.launch(st.k["kd_anchor_partial"], dim3{nkv, splits, 1}, dim3{256, 1, 1}, 0,
		st.kd.ptr, k.ptr, int32(T), int32(nkv), int32(d), int32(rpb))
	gx := min(max(ceilDiv(4*b.sms, nkv), 1), ceilDiv(T, 8))
	b.launch(st.k["kd_scores"], dim3{gx, nkv, 1}, dim3{256, 1, 1}, 0,
		out, st.kd.ptr, k.ptr, int32(T), int32(nkv), int32(d), int32(splits))
	return nil
}
