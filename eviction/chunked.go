package eviction

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/model"
)

// ChunkedEvictor evicts while a prompt is prefilled chunk by chunk (generate.ChunkedPrefill
// drives it), so that the cache never holds more than each head's budget plus one chunk.
//
// For every chunk: StartChunk is told which positions come; ObserveLayer (the chunk's
// forward pass, before its keys and values enter the cache) scores, per layer, the kept
// tokens of every head plus the chunk; EndChunk, once the chunk is in the cache, keeps in
// every (layer, KV head) what the method's allocator keeps out of the S tokens seen so
// far at the method's ratio, and compacts. The budgets therefore grow with S as the
// allocators give them for S tokens (uniform: floor(S(1-rho)); PyramidKV: its layer
// budget for S; LU-KV: the curve's counts for S; AdaKV: its pooled rule over the layer's
// live tokens with the budget of S), and the last chunk ends with what the allocator
// gives for the whole prompt.
//
// How the allocator sees a layer: every head's scores are laid out over the S positions
// seen, the kept and new tokens at their true positions and the evicted ones at -Inf
// (never chosen while a live token is left); sink and window are protected over those
// positions (ProtectSinkWindow); Allocator.Keep picks; picks of evicted positions are
// dropped. So ties still go to the later token, and a prompt in one chunk keeps exactly
// what Method.Compress keeps after a one-shot prefill. With a FixedAllocator (uniform,
// PyramidKV, LU-KV) the counts for S come from S alone and selection runs over each
// head's live tokens (keepLive), O(kept + chunk) per head per chunk; AdaKV, whose counts
// follow all S scores, pays O(S) per head (keepPadded, the reference keepLive is tested
// against). Layers select in parallel on the host and the cache compacts through
// KVCache.Compact on every backend: Method.Compress's device path
// (backend.DeviceCompaction) wants every head of the same length, which heads are not
// after the first compaction. A cache that can reserve capacity (CapacityReserver, the
// CUDA cache) is sized once, at the first compaction, for the end of the prompt
// (PlanChunks), so later compactions move rows within the same buffers.
//
// Compaction waits while the average budget floor(S(1-rho)) is below Sink+Window (the
// first (Sink+Window)/(1-rho) tokens, so that the sink tokens are not lost while the
// budget is tinier than what is protected); the last chunk is always compacted.
//
// What each scorer sees (keys and values of kept tokens come from the cache, per head;
// queries from the current chunk's forward pass):
//
//	scorer              keys/values          queries / statistics
//	keydiff             kept + chunk         none (key-only; the anchor is the mean over kept + chunk)
//	knorm               chunk only           none: a token's score is its own key norm, computed once when its
//	                                         chunk arrives and kept with it, so the cache is never read back
//	expected-attention  kept + chunk         mean and covariance of the chunk's pre-RoPE queries (this chunk only,
//	                                         not a running statistic: later text is what future queries look like);
//	                                         the future rotation starts after the chunk's last position
//	snapkv              kept + chunk         the last min(window, chunk) queries of the chunk attend (causally) to
//	                                         all kept keys and the chunk; pooling runs over the kept order
//	tova                kept + chunk         the chunk's last query
//	h2o                 kept + chunk         every query of the chunk (mean attention over the rows that see a key)
//	streaming           positions only       none (the kept order: sinks first, then the most recent)
//	random              -                    none (a fresh draw per chunk)
//
// While every head holds the same positions (the first chunk, or a prompt in one chunk)
// a layer is scored in one view, as after a one-shot prefill. Afterwards heads differ and
// each KV head is scored in its own view (one KV head, its query group), as decode-time
// eviction does: TOVA then averages over the head's query group instead of the whole
// layer, and the scores a scorer gives its own protected tokens (SnapKV's window,
// expected attention's sinks) are the head's maximum + 1 rather than the layer's, which
// only matters to AdaKV's cross-head pooling.
type ChunkedEvictor struct {
	Method Method
	Model  *model.Model

	collector  *Collector
	cache      backend.KVCache
	pos        [][][]int     // [layer][head] positions of the tokens the cache holds
	chunkPos   []int         // this chunk's positions
	scores     [][][]float32 // [layer][head] this chunk's scores, over pos + chunkPos
	keptScores [][][]float32 // [layer][head] scores of the held tokens (token-local scorers)
	err        error         // the first error of this chunk's observation
	seen       int           // tokens seen before this chunk
	Compacted  int           // chunks after which the cache was compacted

	total, chunk, room int       // PlanChunks: the prompt's tokens, its chunk and the most room a compaction leaves per head
	reserved           bool      // ReserveRows was done for this prompt
	lenOnly            []float32 // backing of the length-only score slices fixed allocators count from
}

// CapacityReserver is a KV cache whose layers can hold buffers larger than their heads'
// capacities (the CUDA cache): ReserveRows makes layer's buffers hold at least rows
// rows (all heads together), so that later relayouts within them move rows in place
// instead of allocating new buffers and freeing the old ones every chunk.
type CapacityReserver interface {
	backend.KVCache
	ReserveRows(layer, rows int) error
}

// PlanChunks tells the evictor the prompt's length, its chunk size and the room the
// cache keeps after the last chunk (generate.ChunkedPrefill calls it before the first
// chunk), so that a CapacityReserver cache is sized once, at the first compaction, for
// the budgets at the end of the prompt plus one chunk.
func (e *ChunkedEvictor) PlanChunks(total, chunk, reserve int) {
	e.total, e.chunk, e.room, e.reserved = total, chunk, max(chunk, reserve), false
}

// NewChunkedEvictor returns an evictor for model m applying method.
func NewChunkedEvictor(m *model.Model, method Method) (*ChunkedEvictor, error) {
	if method.Scorer == nil || method.Allocator == nil {
		return nil, errors.New("chunked eviction: the method needs a scorer and an allocator")
	}
	if err := checkRatio(method.Ratio); err != nil {
		return nil, fmt.Errorf("chunked eviction: %w", err)
	}
	if method.Sink < 0 || method.Window < 0 {
		return nil, fmt.Errorf("chunked eviction: sink %d and window %d must be >= 0", method.Sink, method.Window)
	}
	L := m.Config.NumLayers
	return &ChunkedEvictor{Method: method, Model: m, collector: NewCollector(m, method.Scorer),
		pos: make([][][]int, L), scores: make([][][]float32, L), keptScores: make([][][]float32, L)}, nil
}

// StartChunk prepares the evictor for the chunk at positions pos0 .. pos0+n-1 of cache.
// The first chunk must start at position 0 with the cache empty, and every chunk must
// follow the previous one.
func (e *ChunkedEvictor) StartChunk(cache backend.KVCache, pos0, n int) error {
	if n < 1 {
		return fmt.Errorf("chunked eviction: chunk of %d tokens", n)
	}
	if pos0 == 0 {
		for l := 0; l < cache.Layers(); l++ {
			for h := 0; h < cache.KVHeads(); h++ {
				if cache.Len(l, h) != 0 {
					return fmt.Errorf("chunked eviction: the first chunk needs an empty cache, layer %d head %d holds %d tokens", l, h, cache.Len(l, h))
				}
			}
		}
		e.seen = 0
		for l := range e.pos {
			e.pos[l] = make([][]int, cache.KVHeads())
			e.keptScores[l] = make([][]float32, cache.KVHeads())
		}
	}
	if pos0 != e.seen || e.cache != nil && pos0 > 0 && cache != e.cache {
		return fmt.Errorf("chunked eviction: chunk at position %d does not follow the %d tokens seen", pos0, e.seen)
	}
	e.cache, e.err = cache, nil
	e.chunkPos = make([]int, n)
	for i := range e.chunkPos {
		e.chunkPos[i] = pos0 + i
	}
	for l := range e.scores {
		e.scores[l] = nil
	}
	return nil
}

// ObserveLayer scores the layer's kept tokens plus the chunk (model.Observer).
func (e *ChunkedEvictor) ObserveLayer(layer int, positions []int, x, q, k, v backend.Tensor) {
	if e.err != nil || e.cache == nil {
		return
	}
	if !slices.Equal(positions, e.chunkPos) {
		e.err = fmt.Errorf("chunked eviction: layer %d observed positions %d.., want the chunk at %d..", layer, positions[0], e.chunkPos[0])
		return
	}
	if e.tokenLocal() {
		e.scoreLocal(layer, len(positions), k)
		return
	}
	chunk := e.collector.View(layer, positions, x, q, k, v)
	nkv := chunk.NumKVHeads
	kept := e.pos[layer]
	same := true
	for h := 1; h < nkv; h++ {
		same = same && slices.Equal(kept[h], kept[0])
	}
	if same {
		view := *chunk
		view.Positions = append(append([]int(nil), kept[0]...), positions...)
		view.Keys, view.Values = make([][]float32, nkv), make([][]float32, nkv)
		for h := 0; h < nkv; h++ {
			view.Keys[h] = append(e.cache.Keys(layer, h), chunk.Keys[h]...)
			view.Values[h] = append(e.cache.Values(layer, h), chunk.Values[h]...)
		}
		s := e.Method.Scorer.Score(&view)
		if s == nil {
			e.err = fmt.Errorf("chunked eviction: layer %d: %w", layer, CheckScorerView(e.Method.Scorer, &view))
			return
		}
		e.scores[layer] = s
		return
	}
	out := make([][]float32, nkv)
	for h := 0; h < nkv; h++ {
		view := headView(chunk, h, append(append([]int(nil), kept[h]...), positions...),
			append(e.cache.Keys(layer, h), chunk.Keys[h]...), append(e.cache.Values(layer, h), chunk.Values[h]...))
		s := e.Method.Scorer.Score(view)
		if s == nil {
			e.err = fmt.Errorf("chunked eviction: layer %d head %d: %w", layer, h, CheckScorerView(e.Method.Scorer, view))
			return
		}
		out[h] = s[0]
	}
	e.scores[layer] = out
}

// tokenLocal reports whether the scorer gives a token a score that depends on that
// token's key alone (K-norm), so a kept token's score never changes: it is computed once,
// when its chunk arrives, and the cache is never read back.
func (e *ChunkedEvictor) tokenLocal() bool {
	switch e.Method.Scorer.(type) {
	case KNormScorer, *KNormScorer:
		return true
	}
	return false
}

// scoreLocal scores the chunk's keys k [n, Nkv*D] alone and appends them to the kept
// tokens' scores.
func (e *ChunkedEvictor) scoreLocal(layer, n int, k backend.Tensor) {
	cfg := e.Model.Config
	keys := splitHeads(e.Model.Backend.Read(k), n, cfg.NumKVHeads, cfg.HeadDim)
	view := &LayerView{Layer: layer, NumHeads: cfg.NumHeads, NumKVHeads: cfg.NumKVHeads, HeadDim: cfg.HeadDim,
		Positions: e.chunkPos, Keys: keys, Values: keys, RoPE: e.Model.RoPE}
	s := e.Method.Scorer.Score(view)
	if s == nil {
		e.err = fmt.Errorf("chunked eviction: layer %d: %w", layer, CheckScorerView(e.Method.Scorer, view))
		return
	}
	out := make([][]float32, cfg.NumKVHeads)
	for h := range out {
		out[h] = append(append([]float32(nil), e.keptScores[layer][h]...), s[h]...)
	}
	e.scores[layer] = out
}

// headView is KV head h of view v as a view of its own (one KV head and its query group's
// queries) over the given positions, keys and values of that head.
func headView(v *LayerView, h int, positions []int, keys, values []float32) *LayerView {
	group := v.NumHeads / v.NumKVHeads
	tq, w := v.Tq(), group*v.HeadDim
	return &LayerView{Layer: v.Layer, NumHeads: group, NumKVHeads: 1, HeadDim: v.HeadDim, RoPE: v.RoPE,
		Positions: positions, QueryPositions: v.QueryPositions,
		Keys: [][]float32{keys}, Values: [][]float32{values},
		Queries:        headColumns(v.Queries, tq, v.NumHeads*v.HeadDim, h*w, w),
		PreRoPEQueries: headColumns(v.PreRoPEQueries, tq, v.NumHeads*v.HeadDim, h*w, w),
	}
}

// headColumns copies columns [c0, c0+w) of the rows x rowLen matrix x.
func headColumns(x []float32, rows, rowLen, c0, w int) []float32 {
	out := make([]float32, 0, rows*w)
	for r := 0; r < rows; r++ {
		out = append(out, x[r*rowLen+c0:r*rowLen+c0+w]...)
	}
	return out
}

// EndChunk runs after the chunk's forward pass: every (layer, KV head) of cache keeps
// what the allocator keeps for the tokens seen so far (see ChunkedEvictor), leaving room
// for reserve more tokens per head. last says this is the prompt's last chunk.
func (e *ChunkedEvictor) EndChunk(cache backend.KVCache, last bool, reserve int) error {
	if e.err != nil {
		return e.err
	}
	if cache != e.cache || e.chunkPos == nil {
		return errors.New("chunked eviction: EndChunk without StartChunk")
	}
	n := len(e.chunkPos)
	S := e.seen + n
	e.seen = S
	e.chunkPos = nil
	L, nkv := cache.Layers(), cache.KVHeads()
	for l := 0; l < L; l++ {
		for h := 0; h < nkv; h++ {
			for p := S - n; p < S; p++ {
				e.pos[l][h] = append(e.pos[l][h], p)
			}
			if len(e.pos[l][h]) != cache.Len(l, h) {
				return fmt.Errorf("chunked eviction: layer %d head %d holds %d tokens, the evictor tracked %d", l, h, cache.Len(l, h), len(e.pos[l][h]))
			}
		}
	}
	if !last && uniformBudget(S, e.Method.Ratio) < e.Method.Sink+e.Method.Window {
		// Too few tokens yet for the budget to cover what is protected: wait, so that the
		// sinks survive (and leave room for the next chunk).
		for l := range e.keptScores {
			if e.scores[l] != nil {
				e.keptScores[l] = e.scores[l]
			}
		}
		return e.ensureRoom(cache, reserve)
	}
	if ec, ok := cache.(CapacityReserver); ok && !e.reserved && e.total > 0 {
		// Every later chunk's compaction then fits the buffers allocated here.
		if err := e.reserveCapacity(ec, e.room); err != nil {
			return err
		}
		e.reserved = true
	}
	for l := 0; l < L; l++ {
		s := e.scores[l]
		if s == nil {
			return fmt.Errorf("chunked eviction: layer %d was not scored in the chunk ending at position %d", l, S-1)
		}
		for h := range s {
			if len(s[h]) != len(e.pos[l][h]) {
				return fmt.Errorf("chunked eviction: layer %d head %d: %d scores for %d tokens", l, h, len(s[h]), len(e.pos[l][h]))
			}
		}
	}
	// The layers select independently (host work, O(kept + chunk) per head with a fixed
	// allocator): in parallel, then the cache compacts them one by one.
	if cap(e.lenOnly) < S {
		e.lenOnly = make([]float32, S)
	}
	keeps := make([][][]int, L)
	pos, scores := make([][][]int, L), make([][][]float32, L) // the kept tokens' positions and scores
	errs := make([]error, L)
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for l := 0; l < L; l++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			keep, ok, err := e.keepLive(l, L, S, e.scores[l])
			if err == nil && !ok {
				keep, err = e.keepPadded(l, L, S, e.scores[l])
			}
			keeps[l], errs[l] = keep, err
			if err != nil {
				return
			}
			pos[l], scores[l] = make([][]int, len(keep)), make([][]float32, len(keep))
			for h := range keep {
				pos[l][h], scores[l][h] = make([]int, len(keep[h])), make([]float32, len(keep[h]))
				for j, i := range keep[h] {
					pos[l][h][j], scores[l][h][j] = e.pos[l][h][i], e.scores[l][h][i]
				}
			}
		}()
	}
	wg.Wait()
	for l := 0; l < L; l++ {
		if errs[l] != nil {
			return errs[l]
		}
		if err := cache.Compact(l, keeps[l], reserve); err != nil {
			return fmt.Errorf("chunked eviction: layer %d: %w", l, err)
		}
		e.pos[l], e.keptScores[l] = pos[l], scores[l]
	}
	e.Compacted++
	return nil
}

// keepPadded is the reference selection of EndChunk for layer l after S tokens: every
// head's scores s (over its live tokens) laid out over the S positions seen, evicted
// positions at -Inf, protected, counted and selected as after a one-shot prefill; it
// returns the kept indices into each head's live tokens. O(S) per head: EndChunk uses it
// for allocators whose counts follow the scores (AdaKV) and where keepLive cannot decide.
func (e *ChunkedEvictor) keepPadded(l, L, S int, s [][]float32) ([][]int, error) {
	nkv := len(s)
	padded := make([][]float32, nkv)
	for h := range padded {
		padded[h] = make([]float32, S)
		for j := range padded[h] {
			padded[h][j] = float32(math.Inf(-1))
		}
		for j, p := range e.pos[l][h] {
			padded[h][p] = s[h][j]
		}
	}
	ProtectSinkWindow(padded, e.Method.Sink, e.Method.Window)
	for h := range padded { // an evicted sink stays evicted
		live := e.pos[l][h]
		for j, p := 0, 0; p < S; p++ {
			if j < len(live) && live[j] == p {
				j++
			} else {
				padded[h][p] = float32(math.Inf(-1))
			}
		}
	}
	counts, err := e.Method.LayerCounts(l, L, padded)
	if err != nil {
		return nil, fmt.Errorf("chunked eviction: layer %d after %d tokens: %w", l, S, err)
	}
	// Positions evicted earlier rank lowest (-Inf); one the counts reach anyway (an
	// evicted sink under the sink/window floor) is not in the cache and is skipped.
	picked := KeepTop(padded, counts)
	keep := make([][]int, nkv)
	for h := range keep {
		keep[h] = make([]int, 0, len(picked[h]))
		live := e.pos[l][h]
		i := 0 // picked[h] and live are both ascending positions
		for _, p := range picked[h] {
			for i < len(live) && live[i] < p {
				i++
			}
			if i < len(live) && live[i] == p {
				keep[h] = append(keep[h], i)
			}
		}
	}
	return keep, nil
}

// keepLive is keepPadded in O(live tokens) per head, for allocators whose counts depend
// only on the number of positions (FixedAllocator: uniform, PyramidKV, LU-KV): the counts
// for S positions come from scores of that length that are never read, protection goes by
// position, and each head selects among its live tokens only. An evicted position (-Inf)
// ranks below every live token with a score above -Inf, so when a head's count is at most
// the number of those, the live top-count is exactly the padded selection's live part
// (ties still go to the later token: live indices follow positions). ok is false, with
// nothing decided, for any other allocator or when some count reaches a live token at
// -Inf or NaN (keepPadded then decides).
func (e *ChunkedEvictor) keepLive(l, L, S int, s [][]float32) (keep [][]int, ok bool, err error) {
	if _, fixed := e.Method.Allocator.(FixedAllocator); !fixed {
		return nil, false, nil
	}
	nkv := len(s)
	buf := e.lenOnly // EndChunk sizes it before the layers run in parallel
	if cap(buf) < S {
		buf = make([]float32, S)
	}
	shape := make([][]float32, nkv) // S positions per head; a fixed allocator reads only the lengths
	for h := range shape {
		shape[h] = buf[:S]
	}
	counts, err := e.Method.LayerCounts(l, L, shape)
	if err != nil {
		return nil, false, fmt.Errorf("chunked eviction: layer %d after %d tokens: %w", l, S, err)
	}
	prot := make([][]float32, nkv)
	for h := range prot {
		prot[h] = append([]float32(nil), s[h]...)
	}
	protectPositions(prot, e.pos[l], S, e.Method.Sink, e.Method.Window)
	keep = make([][]int, nkv)
	for h := range keep {
		above := 0 // live tokens that outrank every evicted position
		for _, v := range prot[h] {
			if v > float32(math.Inf(-1)) {
				above++
			}
		}
		if counts[h] >= S {
			keep[h] = iotaInts(len(prot[h]))
			continue
		}
		if counts[h] > above {
			return nil, false, nil
		}
		keep[h] = topK(prot[h], counts[h])
	}
	return keep, true, nil
}

// protectPositions is ProtectSinkWindow over S positions for heads that hold only the
// positions pos[h] (scores[h][j] is position pos[h][j]'s): the same top, the same
// lowering of unprotected scores at or above it, and the sink (positions < sink) and
// window (positions >= S-window) set to it.
func protectPositions(scores [][]float32, pos [][]int, S, sink, window int) {
	if sink <= 0 && window <= 0 {
		return
	}
	top := aboveAll(scores)
	below := math.Nextafter32(top, float32(math.Inf(-1)))
	for h, s := range scores {
		for j, v := range s {
			if v >= top {
				s[j] = below
			}
			if p := pos[h][j]; p < sink || p >= S-max(window, 0) {
				s[j] = top
			}
		}
	}
}

// reserveCapacity has a cache that can hold buffers larger than its heads' capacity
// allocate, once, what every layer needs until the end of the prompt: the most its
// heads keep together after any chunk (counts need not grow with S: PyramidKV's layer
// budgets fall back to uniform ones for short contexts) plus room for one chunk each,
// so that compacting after every chunk moves rows within the same memory instead of
// reallocating it.
func (e *ChunkedEvictor) reserveCapacity(c CapacityReserver, room int) error {
	L, nkv := c.Layers(), c.KVHeads()
	if cap(e.lenOnly) < e.total {
		e.lenOnly = make([]float32, e.total)
	}
	shape := make([][]float32, nkv)
	_, fixed := e.Method.Allocator.(FixedAllocator)
	for l := 0; l < L; l++ {
		kept := 0
		if fixed {
			for S := min(e.seen, e.total); S > 0; S = min(S+e.chunk, e.total) {
				for h := range shape {
					shape[h] = e.lenOnly[:S]
				}
				counts, err := e.Method.LayerCounts(l, L, shape)
				if err != nil {
					return fmt.Errorf("chunked eviction: layer %d, %d tokens: %w", l, S, err)
				}
				sum := 0
				for _, n := range counts {
					sum += n
				}
				kept = max(kept, sum)
				if S == e.total || e.chunk < 1 {
					break
				}
			}
		} else { // AdaKV: its pooled counts add up to the uniform budget
			kept = nkv * uniformBudget(e.total, e.Method.Ratio)
		}
		if err := c.ReserveRows(l, kept+nkv*room); err != nil {
			return fmt.Errorf("chunked eviction: layer %d: %w", l, err)
		}
	}
	return nil
}

// ensureRoom keeps every token but makes sure every head has room for reserve more, so a
// growing cache does not double its buffers.
func (e *ChunkedEvictor) ensureRoom(cache backend.KVCache, reserve int) error {
	for l := 0; l < cache.Layers(); l++ {
		keep := make([][]int, cache.KVHeads())
		for h := range keep {
			keep[h] = iotaInts(cache.Len(l, h))
		}
		if err := cache.Compact(l, keep, reserve); err != nil {
			return fmt.Errorf("chunked eviction: layer %d: %w", l, err)
		}
	}
	return nil
}

// Positions returns the positions of the tokens head (layer, head) holds, ascending.
func (e *ChunkedEvictor) Positions(layer, head int) []int {
	return append([]int(nil), e.pos[layer][head]...)
}
