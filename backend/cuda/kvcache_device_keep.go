//go:build cuda

package cuda

// Selection and compaction on the device: the KVCache implements
// backend.DeviceCompaction with kernels/topk.cu. The scores come from the host, already
// protected by eviction (one upload for all layers: eviction's Plan hands them out
// contiguous), or stay on the device where the Backend scored them (a device-to-device
// copy into scratch, where kernels/score_protect.cu's layer_protect protects sink and
// window as eviction.ProtectSinkWindow does); with every head's count, every head's
// top-count selection and the gather of the kept rows run on the device, and neither
// the scores nor the kept indices cross to the host. The result is exactly what Compact
// with eviction's host-selected indices gives (score_test.go and keep_device_test.go
// check it). The policy (sink and window sizes, budgets) is eviction's, not this file's.

import (
	"fmt"
	"math"
	"unsafe"

	"gorgonia.org/cu"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/kv"
)

var _ backend.DeviceCompaction = (*KVCache)(nil)

// evictGroupBytes bounds the new key and value buffers allocated before the old ones of
// their layers are freed: layers are compacted in groups, one device synchronisation
// per group instead of one per layer, without doubling the cache's peak memory.
const evictGroupBytes = 1 << 30

// keepPlan is a checked KeepTopRequest.
type keepPlan struct {
	layers, kvHeads, T int
	counts             [][]int       // [layer][head]
	dev                *deviceScores // the scores on the device, or nil: from the host
	sink, window       int           // >= 0: protected before selecting
	reserve            int
}

// planKeep checks req against the cache.
func (c *KVCache) planKeep(req backend.KeepTopRequest) (*keepPlan, error) {
	L := len(req.Counts)
	if L < 1 || L > c.layers {
		return nil, fmt.Errorf("kv cache: keep top: counts for %d layers, the cache has %d", L, c.layers)
	}
	if req.Reserve < 0 {
		return nil, fmt.Errorf("kv cache: keep top: negative reserve %d", req.Reserve)
	}
	p := &keepPlan{layers: L, kvHeads: c.kvHeads, T: -1, counts: req.Counts, reserve: req.Reserve,
		sink: max(req.Sink, 0), window: max(req.Window, 0)}
	if req.Device != nil {
		ds, ok := req.Device.(*deviceScores)
		if !ok || ds.b != c.b {
			return nil, fmt.Errorf("kv cache: keep top: device scores of type %T do not belong to this backend", req.Device)
		}
		if ds.t.freed {
			return nil, fmt.Errorf("kv cache: keep top: device scores used after Free")
		}
		if ds.layers != L || ds.kvHeads != c.kvHeads {
			return nil, fmt.Errorf("kv cache: keep top: device scores for %d layers x %d heads, counts for %d layers x %d heads",
				ds.layers, ds.kvHeads, L, c.kvHeads)
		}
		p.dev, p.T = ds, ds.tokens
		for l := 0; l < L; l++ {
			for h := 0; h < c.kvHeads; h++ {
				if c.l[l].Len[h] != p.T {
					return nil, fmt.Errorf("kv cache: keep top: layer %d head %d holds %d tokens, the device scores %d", l, h, c.l[l].Len[h], p.T)
				}
			}
		}
	} else if len(req.Scores) != L {
		return nil, fmt.Errorf("kv cache: keep top: scores for %d layers, counts for %d", len(req.Scores), L)
	} else {
		for l, s := range req.Scores {
			if len(s) != c.kvHeads {
				return nil, fmt.Errorf("kv cache: keep top: layer %d has scores for %d heads, the cache %d", l, len(s), c.kvHeads)
			}
			for h, hs := range s {
				if p.T < 0 {
					p.T = len(hs)
				}
				if len(hs) != p.T || c.l[l].Len[h] != p.T {
					return nil, fmt.Errorf("kv cache: keep top: layer %d head %d has %d scores for %d cached tokens (every head must hold the same %d)",
						l, h, len(hs), c.l[l].Len[h], p.T)
				}
			}
		}
	}
	if int64(L)*int64(c.kvHeads)*int64(p.T) > math.MaxInt32 {
		return nil, unsupported("keeping the top of %d layers x %d heads x %d tokens at once (32-bit indices)", L, c.kvHeads, p.T)
	}
	for l, cs := range req.Counts {
		if len(cs) != c.kvHeads {
			return nil, fmt.Errorf("kv cache: keep top: layer %d has counts for %d heads, the cache %d", l, len(cs), c.kvHeads)
		}
		for h, n := range cs {
			if n < 0 || n > p.T {
				return nil, fmt.Errorf("kv cache: keep top: layer %d head %d keeps %d of %d tokens", l, h, n, p.T)
			}
		}
	}
	return p, nil
}

// KeepTop selects and compacts on the device (backend.DeviceCompaction).
func (c *KVCache) KeepTop(req backend.KeepTopRequest) error {
	p, err := c.planKeep(req)
	if err != nil {
		return err
	}
	defer c.b.enter()()
	st, err := c.b.scoring()
	if err != nil {
		return unsupported("device eviction unavailable: %v", err)
	}
	if err := c.selectOnDevice(st, p, req.Scores); err != nil {
		return err
	}
	st.evictCalls++
	return c.compactOnDevice(st, p)
}

// SelectKeep runs KeepTop's selection only and returns the kept indices [layer][head]
// (ascending), leaving the cache as it is: what KeepTop would keep.
func (c *KVCache) SelectKeep(req backend.KeepTopRequest) ([][][]int, error) {
	p, err := c.planKeep(req)
	if err != nil {
		return nil, err
	}
	defer c.b.enter()()
	st, err := c.b.scoring()
	if err != nil {
		return nil, unsupported("device eviction unavailable: %v", err)
	}
	if err := c.selectOnDevice(st, p, req.Scores); err != nil {
		return nil, err
	}
	all := make([]int32, p.layers*p.kvHeads*p.T)
	if len(all) > 0 {
		if err := cu.MemcpyDtoH(unsafe.Pointer(&all[0]), st.keep.ptr, int64(len(all))*4); err != nil {
			return nil, fmt.Errorf("cuda: reading kept indices: %w", err)
		}
	}
	keep := make([][][]int, p.layers)
	for l := range keep {
		keep[l] = make([][]int, p.kvHeads)
		for h := range keep[l] {
			base := (l*p.kvHeads + h) * p.T
			keep[l][h] = make([]int, p.counts[l][h])
			for i := range keep[l][h] {
				keep[l][h][i] = int(all[base+i])
			}
		}
	}
	return keep, nil
}

// uploadScores copies scores [layers][kvHeads][T] into st.sc: in one copy when they lie
// back to back in memory (as eviction.Plan lays them out), else packed first.
func (st *scoreState) uploadScores(scores [][][]float32, nkv, T int) error {
	n := len(scores) * nkv * T
	if err := st.sc.ensure(int64(max(n, 1))*4, "eviction scores"); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	base := uintptr(unsafe.Pointer(&scores[0][0][0]))
	contiguous := true
	for l := range scores {
		for h := range scores[l] {
			if uintptr(unsafe.Pointer(&scores[l][h][0])) != base+uintptr((l*nkv+h)*T)*4 {
				contiguous = false
			}
		}
	}
	src := unsafe.Pointer(&scores[0][0][0])
	if !contiguous {
		packed := make([]float32, 0, n)
		for l := range scores {
			for h := range scores[l] {
				packed = append(packed, scores[l][h]...)
			}
		}
		src = unsafe.Pointer(&packed[0])
	}
	if err := cu.MemcpyHtoD(st.sc.ptr, src, int64(n)*4); err != nil {
		return fmt.Errorf("cuda: eviction scores to device: %w", err)
	}
	return nil
}

// selectOnDevice brings the scores into st.sc (uploaded from the host, or copied on the
// device from p.dev and protected there) and the counts, and selects: st.keep
// [layers][kvHeads][T] then holds each head's kept indices (the first counts[l][h]
// entries, ascending) and st.counts the counts.
func (c *KVCache) selectOnDevice(st *scoreState, p *keepPlan, scores [][][]float32) error {
	L, nkv, T := p.layers, p.kvHeads, p.T
	n := L * nkv * T
	if p.dev == nil {
		if err := st.uploadScores(scores, nkv, T); err != nil {
			return err
		}
		st.scoreUploads++
	} else if err := st.sc.ensure(int64(max(n, 1))*4, "eviction scores"); err != nil {
		return err
	}
	if err := ensureAll("eviction selection", &st.keep, int64(n)*4, &st.counts, int64(L*nkv)*4); err != nil {
		return err
	}
	if T == 0 {
		return nil
	}
	if p.dev != nil {
		// The collector's scores stay as they are (another method may read them).
		if err := cu.MemcpyDtoD(st.sc.ptr, p.dev.t.ptr, int64(n)*4); err != nil {
			return fmt.Errorf("cuda: copying eviction scores on the device: %w", err)
		}
	}
	if p.dev != nil && (p.sink > 0 || p.window > 0) {
		// eviction.ProtectSinkWindow on the device: above the layer's largest finite
		// score (all heads), unprotected scores at or above it lowered just below.
		c.b.launch("layer_protect", dim3{L, 1, 1}, dim3{1024, 1, 1}, 0,
			st.sc.ptr, int32(nkv), int32(T), int32(0), int32(T), int32(min(p.sink, T)), int32(max(0, T-p.window)), int32(1))
	}
	flat := make([]int32, 0, L*nkv)
	for _, cs := range p.counts {
		for _, k := range cs {
			flat = append(flat, int32(k))
		}
	}
	if err := st.counts.uploadInt32(flat, "eviction counts"); err != nil {
		return err
	}
	c.b.launch("select_topk", dim3{L * nkv, 1, 1}, dim3{selectThreads, 1, 1}, 0,
		st.keep.ptr, st.sc.ptr, st.counts.ptr, int32(T))
	return nil
}

// newLayerBuf is a layer's new key and value buffers during compaction.
type newLayerBuf struct {
	layer  int
	nk, nv cu.DevicePtr
	nl     layerCache
}

// compactOnDevice moves each head's kept rows (st.keep, st.counts; p.counts on the
// host) into new buffers with room for p.reserve more, a group of layers at a time, and
// frees the old ones.
func (c *KVCache) compactOnDevice(st *scoreState, p *keepPlan) error {
	nkv, T, d, counts := p.kvHeads, p.T, c.headDim, p.counts
	esz := c.esz()
	words := int64(d) * esz / 4 // 32-bit words per row (d % 4 == 0)
	for l0 := 0; l0 < p.layers; {
		var group []newLayerBuf
		var bytes int64
		release := func() {
			for _, g := range group {
				freeDevice(g.nk)
				freeDevice(g.nv)
			}
		}
		for l := l0; l < p.layers; l++ {
			nl := kv.Kept(counts[l], p.reserve)
			if nl.Rows > math.MaxInt32 {
				release()
				return fmt.Errorf("cuda: kv cache layer %d: %d rows per layer do not fit 32-bit row indices", l, nl.Rows)
			}
			size := int64(nl.Rows) * int64(d) * esz
			if len(group) > 0 && bytes+2*size > evictGroupBytes {
				break
			}
			what := fmt.Sprintf("kv cache layer %d (%d rows of %d %s)", l, nl.Rows, d, c.DType())
			nk, err := allocDevice(size, what)
			if err != nil {
				release()
				return err
			}
			nv, err := allocDevice(size, what)
			if err != nil {
				freeDevice(nk)
				release()
				return err
			}
			group = append(group, newLayerBuf{layer: l, nk: nk, nv: nv, nl: nl})
			bytes += 2 * size
		}
		table := make([]int32, 0, len(group)*2*nkv) // per layer: new offsets, then old
		for _, g := range group {
			for h := 0; h < nkv; h++ {
				table = append(table, int32(g.nl.Off[h]))
			}
			for h := 0; h < nkv; h++ {
				table = append(table, int32(c.l[g.layer].Off[h]))
			}
		}
		if err := st.offs.uploadInt32(table, "kv cache compaction offsets"); err != nil {
			release()
			return err
		}
		for i, g := range group {
			most := 0
			for _, n := range counts[g.layer] {
				most = max(most, n)
			}
			if most == 0 {
				continue
			}
			units := int64(most) * words
			if words%4 == 0 {
				units /= 4
			}
			gx := int(min((units+255)/256, int64(max(8*c.b.sms/nkv, 1))))
			c.b.launch("kv_gather_keep", dim3{gx, nkv, 1}, dim3{256, 1, 1}, 0,
				g.nk, g.nv, c.buf.k[g.layer], c.buf.v[g.layer],
				ptrAt(st.keep.ptr, g.layer*nkv*T, 4), ptrAt(st.counts.ptr, g.layer*nkv, 4), ptrAt(st.offs.ptr, i*2*nkv, 4),
				int32(nkv), int32(T), int32(words))
		}
		for _, g := range group {
			// cuMemFree waits for the gathers that read the old buffers.
			freeDevice(c.buf.k[g.layer])
			freeDevice(c.buf.v[g.layer])
			c.buf.k[g.layer], c.buf.v[g.layer], c.rows[g.layer] = g.nk, g.nv, g.nl.Rows
			c.l[g.layer] = g.nl
			c.reallocs++
			if err := c.uploadMeta(g.layer); err != nil {
				return err
			}
		}
		l0 += len(group)
	}
	return nil
}
