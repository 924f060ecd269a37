//go:build cuda

package cuda

// ExpectedAttention on the device (kernels/score_expected.cu, and
// kernels/score_expected_tc.cu for the tensor-core form at head dim 128): the query
// statistics over the prompt (un-rotated queries: mean and covariance), turned by the
// averaged rotation of the next NFuture positions, give each key its expected logit;
// the softmax over keys, averaged over the query group and scaled by ||v||, is the
// score. Host twin: eviction ExpectedAttentionScorer.

import (
	"slices"

	"gorgonia.org/cu"

	"github.com/lukv/lukv/backend"
)

// Shapes of the expected-attention kernels (kernels/score_expected.cu,
// kernels/score_expected_tc.cu).
const (
	eaRC         = 32  // EA_RC: statistics rows per chunk
	eaKT         = 64  // EA_KT: keys per tile
	eaKTP        = 68  // EA_KTP: padded key tile row
	eaMaxHeadDim = 128 // U (D x D floats) and a key tile fit shared memory
	tcHeadDim    = 128 // TC_D: the head dim of the tensor-core expected-attention kernels
	tcRC         = 64  // TCX_RC: statistics rows per chunk of ea_cov_tc
	tcKT         = 64  // TCK_KT: keys per tile of ea_logits_tc
	tcCovSmem    = 2*tcHeadDim*(tcRC+8)*2 + tcHeadDim*4
	tcLogitsSmem = (2*tcHeadDim*(tcHeadDim+8)+2*tcKT*(tcHeadDim+8))*2 + tcHeadDim*4
)

func eaLogitsSmem(d int) int { return (d*d + d*eaKTP + d + eaKT) * 4 }

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
	b.launch("score_rope_table", gridFor(total, b.sms), dim3{256, 1, 1}, 0,
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
	b.launch("score_rope_mean", dim3{half, 1, 1}, dim3{256, 1, 1}, 0,
		st.mean.ptr, ptrAt(st.mean.ptr, half, 8), st.freq.ptr, first, int32(n))
	st.meanOK, st.meanKey = true, key
	return nil
}

// scoreExpected runs expected attention (see kernels/score_expected.cu and score_expected_tc.cu for the kernels).
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
	// run on the tensor cores (split bf16, see kernels/score_expected_tc.cu).
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
		b.launch("ea_cov_tc", dim3{nq, splits, 1}, dim3{128, 1, 1}, tcCovSmem,
			st.mpart.ptr, st.spart.ptr, st.shift.ptr, q.ptr, cosT, sinT, st.rows.ptr,
			int32(nrows), int32(nq), int32(rps))
	} else {
		b.launch("ea_cov_partial", dim3{nq, splits, 1}, dim3{block, 1, 1}, (eaRC+1)*d*4,
			st.mpart.ptr, st.spart.ptr, st.shift.ptr, q.ptr, cosT, sinT, st.rows.ptr,
			int32(nrows), int32(nq), int32(d), int32(rps), useCov)
	}
	b.launch("ea_cov_reduce", dim3{nq, 10, 1}, dim3{256, 1, 1}, 0,
		st.mred.ptr, st.sred.ptr, st.mpart.ptr, st.spart.ptr, int32(d), int32(splits), useCov)
	cb, sb := st.mean.ptr, ptrAt(st.mean.ptr, half, 8)
	b.launch("ea_cov_rotate", dim3{nq, ceilDiv(d*d, 256), 1}, dim3{256, 1, 1}, 0,
		st.ut.ptr, st.lin.ptr, st.mred.ptr, st.sred.ptr, st.shift.ptr, cb, sb, int32(d), int32(nrows), useCov)

	// Logits of the keys after the sinks: one wave of two blocks per multiprocessor
	// (what ea_logits' shared memory allows).
	keys := T - ns
	kx := min(max(2*b.sms/nq, 1), ceilDiv(keys, eaKT))
	kpb := ceilDiv(ceilDiv(keys, kx), eaKT) * eaKT
	kx = ceilDiv(keys, kpb)
	if tc { // eaKT == tcKT: kpb is a multiple of both tiles
		b.launch("ea_logits_tc", dim3{nq, kx, 1}, dim3{128, 1, 1}, tcLogitsSmem,
			st.z.ptr, k.ptr, st.ut.ptr, st.lin.ptr, int32(T), int32(nq), int32(nkv), int32(ns), int32(kpb))
	} else {
		b.launch("ea_logits", dim3{nq, kx, 1}, dim3{d, 1, 1}, eaLogitsSmem(d),
			st.z.ptr, k.ptr, st.ut.ptr, st.lin.ptr, int32(T), int32(nq), int32(nkv), int32(d), int32(ns), int32(kpb), useCov)
	}
	if spec.UseVNorm {
		b.launch("row_norms", dim3{ceilDiv(T*nkv, 8), 1, 1}, dim3{256, 1, 1}, 0,
			st.vn.ptr, v.ptr, int32(T), int32(nkv), int32(d))
	}
	b.launch("ea_softmax_stats", dim3{nq, 1, 1}, dim3{1024, 1, 1}, 0, st.ms.ptr, st.z.ptr, int32(T), int32(ns))
	b.launch("ea_finish", dim3{ceilDiv(keys, 256), nkv, 1}, dim3{256, 1, 1}, 0,
		out, st.z.ptr, st.ms.ptr, st.vn.ptr, int32(T), int32(nq), int32(nkv), int32(ns), spec.Epsilon, boolInt32(spec.UseVNorm))
	if ns > 0 { // the sinks score above every other token of the layer
		b.launch("layer_protect", dim3{1, 1, 1}, dim3{1024, 1, 1}, 0,
			out, int32(nkv), int32(T), int32(ns), int32(T), int32(ns), int32(T), int32(0))
	}
	return nil
}
