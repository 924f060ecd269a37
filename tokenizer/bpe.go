package tokenizer

import (
	"fmt"
	"sync"
	"unicode/utf8"

	"github.com/nlpodyssey/gotokenizers/models/bpemodel"
)

// bpeModel is HF's BPE model: a word is cut into characters (or
// byte-fallback tokens, or unk), then the merges are applied in rank order.
//
// The merge table is gotokenizers' bpemodel.MergeMap ((left id, right id) ->
// (rank, merged id)). The merge loop itself is ours: gotokenizers'
// Word.MergeAll computes the same result (the tests use it as the reference)
// but deletes merged symbols one at a time from a slice, which is quadratic
// in the word length, and allocates every symbol and heap entry.
// SentencePiece-style tokenizer.json files (Llama-2, Mistral) have no
// pre-tokenizer, so a whole prompt is one "word": a 100k-symbol word that
// merges down took 0.6 s there against 0.04 s here, and four times the
// length costs sixteen times as much. Its BPEModel.Tokenize cannot do byte
// fallback, gives the continuing-subword prefix to the first character
// instead of the others, and has no cache (WordCache is a stub), so word
// building is ours too.
type bpeModel struct {
	vocab   map[string]int
	merges  *bpemodel.MergeMap
	unkID   int // -1: no unk token (unknown characters are dropped, as in HF)
	fuseUnk bool
	// byteIDs[b] is the id of the "<0xNN>" token of byte b, -1 if absent;
	// used when byteFallback is set.
	byteIDs       [256]int
	byteFallback  bool
	ignoreMerges  bool
	prefix        string // continuing_subword_prefix, for every character but the first
	suffix        string // end_of_word_suffix, for the last character
	cacheMu       sync.RWMutex
	cache         map[string][]int
	cacheCapacity int
}

// Words longer than this (in bytes) are not cached, as in HF.
const maxCachedWordLen = 256

// newBPEModel builds the model. merges are (left, right) token pairs in rank
// order; every token they name, and every merged token, must be in vocab.
func newBPEModel(vocab map[string]int, merges [][2]string, unk string, prefix, suffix string) (*bpeModel, error) {
	mergeMap := make(bpemodel.MergeMap, len(merges))
	m := &bpeModel{
		vocab:         vocab,
		merges:        &mergeMap,
		unkID:         -1,
		prefix:        prefix,
		suffix:        suffix,
		cache:         map[string][]int{},
		cacheCapacity: 10000,
	}
	if unk != "" {
		id, ok := vocab[unk]
		if !ok {
			return nil, fmt.Errorf("model.unk_token %q is not in model.vocab", unk)
		}
		m.unkID = id
	}
	for b := range m.byteIDs {
		m.byteIDs[b] = -1
		if id, ok := vocab[fmt.Sprintf("<0x%02X>", b)]; ok {
			m.byteIDs[b] = id
		}
	}
	for rank, mg := range merges {
		a, b := mg[0], mg[1]
		aID, ok := vocab[a]
		if !ok {
			return nil, fmt.Errorf("model.merges[%d] (%q %q): %q is not in model.vocab", rank, a, b, a)
		}
		bID, ok := vocab[b]
		if !ok {
			return nil, fmt.Errorf("model.merges[%d] (%q %q): %q is not in model.vocab", rank, a, b, b)
		}
		if len(b) < len(prefix) {
			return nil, fmt.Errorf("model.merges[%d] (%q %q): %q is shorter than continuing_subword_prefix %q", rank, a, b, b, prefix)
		}
		merged := a + b[len(prefix):]
		newID, ok := vocab[merged]
		if !ok {
			return nil, fmt.Errorf("model.merges[%d] (%q %q): merged token %q is not in model.vocab", rank, a, b, merged)
		}
		m.merges.Set(aID, bID, bpemodel.MergeValue{Rank: rank, ID: newID})
	}
	return m, nil
}

// tokenize appends the ids of one word to dst.
func (m *bpeModel) tokenize(word string, dst []int) []int {
	if word == "" {
		return dst
	}
	if m.ignoreMerges {
		if id, ok := m.vocab[word]; ok {
			return append(dst, id)
		}
	}
	cacheable := len(word) <= maxCachedWordLen
	if cacheable {
		m.cacheMu.RLock()
		ids, ok := m.cache[word]
		m.cacheMu.RUnlock()
		if ok {
			return append(dst, ids...)
		}
	}
	ids := m.mergeWord(word)
	if cacheable {
		m.cacheMu.Lock()
		if len(m.cache) < m.cacheCapacity {
			m.cache[word] = ids
		}
		m.cacheMu.Unlock()
	}
	return append(dst, ids...)
}

// bpeSymbol is one symbol of a word being merged, in a doubly linked list
// over the symbols slice; size 0 marks a symbol merged into its left
// neighbour.
type bpeSymbol struct {
	id         int
	prev, next int // -1 at the ends
	size       int // bytes of the word it covers
}

// initialSymbols cuts word into its first symbols, following HF's
// BPE::merge_word: one per character (with the continuing-subword prefix on
// all but the first and the end-of-word suffix on the last); a character
// missing from the vocabulary becomes its "<0xNN>" byte tokens when byte
// fallback is on and all of them exist, otherwise unk (runs of unknown
// characters fused into one unk with fuse_unk), otherwise it is dropped.
func (m *bpeModel) initialSymbols(word string) []bpeSymbol {
	syms := make([]bpeSymbol, 0, len(word))
	add := func(id, size int) {
		syms = append(syms, bpeSymbol{id: id, prev: len(syms) - 1, next: -1, size: size})
	}
	unkID, unkSize := -1, 0 // pending unk
	for i := 0; i < len(word); {
		_, w := utf8.DecodeRuneInString(word[i:])
		s := word[i : i+w]
		if i > 0 && m.prefix != "" {
			s = m.prefix + s
		}
		if i+w == len(word) && m.suffix != "" {
			s += m.suffix
		}
		i += w
		if id, ok := m.vocab[s]; ok {
			if unkID >= 0 {
				add(unkID, unkSize)
				unkID = -1
			}
			add(id, w)
			continue
		}
		if m.byteFallback && m.allBytesKnown(s) {
			// As in HF, a pending unk is not flushed here: it is added
			// after these byte tokens.
			for k := 0; k < len(s); k++ {
				add(m.byteIDs[s[k]], 1)
			}
			continue
		}
		if m.unkID < 0 {
			continue
		}
		switch {
		case unkID >= 0 && m.fuseUnk:
			unkSize += w
		case unkID >= 0:
			add(unkID, unkSize)
			unkID, unkSize = m.unkID, w
		default:
			unkID, unkSize = m.unkID, w
		}
	}
	if unkID >= 0 {
		add(unkID, unkSize)
	}
	for k := range syms {
		if k+1 < len(syms) {
			syms[k].next = k + 1
		}
	}
	return syms
}

func (m *bpeModel) allBytesKnown(s string) bool {
	for k := 0; k < len(s); k++ {
		if m.byteIDs[s[k]] < 0 {
			return false
		}
	}
	return true
}

// mergeWord returns the ids of word after all merges.
func (m *bpeModel) mergeWord(word string) []int {
	syms := m.initialSymbols(word)
	mergeSymbols(syms, m.merges)
	ids := make([]int, 0, len(syms))
	for _, s := range syms {
		if s.size > 0 {
			ids = append(ids, s.id)
		}
	}
	return ids
}

// pendingMerge is a candidate merge of the symbol at pos with its right
// neighbour, into newID, of the given rank.
type pendingMerge struct {
	rank, pos, newID int
}

func (a pendingMerge) less(b pendingMerge) bool {
	if a.rank != b.rank {
		return a.rank < b.rank
	}
	return a.pos < b.pos
}

// mergeHeap is a binary min-heap of pending merges ordered by (rank, pos),
// written out to avoid container/heap's boxing of every entry.
type mergeHeap []pendingMerge

func (h *mergeHeap) push(x pendingMerge) {
	*h = append(*h, x)
	a := *h
	for k := len(a) - 1; k > 0; {
		p := (k - 1) / 2
		if !a[k].less(a[p]) {
			break
		}
		a[k], a[p] = a[p], a[k]
		k = p
	}
}

func (h *mergeHeap) pop() pendingMerge {
	a := *h
	top := a[0]
	n := len(a) - 1
	a[0] = a[n]
	a = a[:n]
	for k := 0; ; {
		l, r, m := 2*k+1, 2*k+2, k
		if l < n && a[l].less(a[m]) {
			m = l
		}
		if r < n && a[r].less(a[m]) {
			m = r
		}
		if m == k {
			break
		}
		a[k], a[m] = a[m], a[k]
		k = m
	}
	*h = a
	return top
}

// mergeSymbols applies the merges to syms in place, exactly as HF's
// Word::merge_all without dropout: repeatedly take the lowest-rank merge
// (leftmost among equal ranks) that is still valid, merge, and queue the
// merges it makes possible with its neighbours. O(n log n) in the number of
// symbols.
func mergeSymbols(syms []bpeSymbol, merges *bpemodel.MergeMap) {
	if len(syms) < 2 {
		return
	}
	h := make(mergeHeap, 0, len(syms))
	for k := 0; k+1 < len(syms); k++ {
		if mv, ok := merges.Get(syms[k].id, syms[k+1].id); ok {
			h.push(pendingMerge{mv.Rank, k, mv.ID})
		}
	}
	for len(h) > 0 {
		top := h.pop()
		cur := &syms[top.pos]
		if cur.size == 0 || cur.next < 0 {
			continue
		}
		nextPos := cur.next
		right := syms[nextPos]
		// Skip entries made stale by earlier merges.
		if mv, ok := merges.Get(cur.id, right.id); !ok || mv.ID != top.newID {
			continue
		}
		cur.id = top.newID
		cur.size += right.size
		cur.next = right.next
		syms[nextPos].size = 0
		if right.next >= 0 {
			syms[right.next].prev = top.pos
		}
		if cur.prev >= 0 {
			if mv, ok := merges.Get(syms[cur.prev].id, cur.id); ok {
				h.push(pendingMerge{mv.Rank, cur.prev, mv.ID})
			}
		}
		if cur.next >= 0 {
			if mv, ok := merges.Get(cur.id, syms[cur.next].id); ok {
				h.push(pendingMerge{mv.Rank, top.pos, mv.ID})
			}
		}
	}
}
