package eval

import (
	"fmt"
	"sort"
	"strings"
)

// split cuts a filled template at the end of its context: everything up to and including
// the context is Context, the rest (question + answer prefix) is Question.
func split(template, context string, kv []string, prefix string) (string, string) {
	i := strings.Index(template, "{context}")
	head := fill(template[:i], kv...) + context
	return head, fill(template[i+len("{context}"):], kv...) + fill(prefix, kv...)
}

// niah returns the builder for a NIAH task (RULER niah.py, tasks.py TaskGen.niah); h is the
// number of haystack sentences (essay), grass lines (repeat) or distractor needles (needle).
func (s *state) niah(task string, depth int) (func(int) Sample, error) {
	sp, ok := niahTasks[task]
	if !ok {
		return nil, fmt.Errorf("eval: unknown task %q (want one of %v)", task, taskOrder)
	}
	if sp.hay == "essay" && len(s.g.Haystack) == 0 {
		return nil, fmt.Errorf("eval: task %s needs Generator.Haystack (essay sentences)", task)
	}
	if (sp.kKind == "words" || sp.vKind == "words") && len(s.g.Words) == 0 && (len(s.g.Adjectives) == 0 || len(s.g.Nouns) == 0) {
		return nil, fmt.Errorf("eval: task %s needs Generator.Words", task)
	}
	used := map[string]bool{}
	keys := s.distinct(sp.kKind, sp.nK, used)
	if len(keys) < sp.nK {
		return nil, fmt.Errorf("eval: task %s: word list too small for %d distinct keys", task, sp.nK)
	}
	type needle struct {
		key, val, text string
		queried        bool
	}
	seenV := map[string]bool{}
	var needles []needle
	qIdx := s.r.Perm(sp.nK)[:sp.nQ]
	sort.Ints(qIdx)
	queried := map[int]bool{}
	for _, i := range qIdx {
		queried[i] = true
	}
	for ki, k := range keys {
		for _, v := range s.distinct(sp.vKind, sp.nV, seenV) {
			needles = append(needles, needle{k, v, fill(needleTemplate, "{type_v}", sp.vKind, "{key}", k, "{value}", v), queried[ki]})
		}
	}
	s.r.Shuffle(len(needles), func(i, j int) { needles[i], needles[j] = needles[j], needles[i] })
	// Depths: the first queried needle at the controlled depth, the others at random RULER depths.
	depths := make([]int, len(needles))
	first := true
	for i := range needles {
		if needles[i].queried && first {
			depths[i], first = depth, false
		} else {
			depths[i] = Depths[s.r.IntN(len(Depths))]
		}
	}
	var queries []string
	for _, i := range qIdx {
		queries = append(queries, keys[i])
	}
	query := queries[0]
	if len(queries) > 1 {
		query = strings.Join(queries[:len(queries)-1], ", ") + ", and " + queries[len(queries)-1]
	}
	template, prefix, typeV := niahTemplate, niahPrefix, sp.vKind
	if sp.nQ*sp.nV == 1 {
		template = strings.ReplaceAll(strings.ReplaceAll(strings.ReplaceAll(template, "Some", "A"), "are all", "is"), "are", "is")
		prefix = strings.ReplaceAll(prefix, "are", "is")
		typeV = sp.vKind[:len(sp.vKind)-1]
	}
	hayStart := s.r.IntN(len(s.g.Haystack) + 1)
	distSeed := s.r.Uint64()
	kv := []string{"{type_v}", typeV, "{query}", query}

	return func(h int) Sample {
		var context string
		if sp.hay == "essay" {
			n := len(s.g.Haystack)
			sents := make([]string, h)
			for i := range sents {
				sents[i] = s.g.Haystack[(hayStart+i)%n]
			}
			context = strings.Join(insertAt(sents, needleTexts(needles, func(n needle) string { return n.text }), depths), " ")
		} else {
			var lines []string
			if sp.hay == "repeat" {
				lines = make([]string, h)
				for i := range lines {
					lines[i] = grass
				}
			} else {
				ds := &state{g: s.g, r: newRand(s.g.Seed^distSeed, distSeed)}
				avoid := map[string]bool{}
				for _, k := range keys {
					avoid[k] = true
				}
				for _, k := range ds.distinct(sp.kKind, h, avoid) {
					lines = append(lines, fill(needleTemplate, "{type_v}", sp.vKind, "{key}", k, "{value}", ds.value(sp.vKind)))
				}
			}
			context = strings.Join(insertAt(lines, needleTexts(needles, func(n needle) string { return n.text }), depths), "\n")
		}
		var gold []string
		for _, n := range needles {
			if n.queried {
				gold = append(gold, n.val)
			}
		}
		sort.SliceStable(gold, func(i, j int) bool { return strings.Index(context, gold[i]) < strings.Index(context, gold[j]) })
		c, q := split(template, context, kv, prefix)
		return Sample{Prompt: c + q, Context: c, Question: q, Gold: gold}
	}, nil
}

func needleTexts[T any](xs []T, f func(T) string) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = f(x)
	}
	return out
}

// insertAt places items[i] into base at fraction depths[i]/100 of base (positions computed on
// the original base, as RULER does), returning a new slice.
func insertAt(base, items []string, depths []int) []string {
	type ins struct {
		pos, ord int
	}
	order := make([]ins, len(items))
	for i, d := range depths {
		order[i] = ins{len(base) * d / 100, i}
	}
	sort.SliceStable(order, func(a, b int) bool { return order[a].pos < order[b].pos })
	out := make([]string, 0, len(base)+len(items))
	prev := 0
	for _, o := range order {
		out = append(out, base[prev:o.pos]...)
		out = append(out, items[o.ord])
		prev = o.pos
	}
	return append(out, base[prev:]...)
}

// vtCore builds one variable-tracking prompt (RULER variable_tracking.py, 1 chain, 4 hops):
// h grass lines with the chain's statements inserted in order.
func (s *state) vtCore(h int) (string, string, []string) {
	const letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	names := map[string]bool{}
	var vs []string
	for len(vs) < 5 {
		var b [5]byte
		for i := range b {
			b[i] = letters[s.r.IntN(26)]
		}
		if !names[string(b[:])] {
			names[string(b[:])] = true
			vs = append(vs, string(b[:]))
		}
	}
	val := fmt.Sprint(10000 + s.r.IntN(90000))
	chain := []string{"VAR " + vs[0] + " = " + val}
	for j := 0; j < 4; j++ {
		chain = append(chain, "VAR "+vs[j+1]+" = VAR "+vs[j]+" ")
	}
	n := max(h, len(chain)+1)
	pos := s.r.Perm(n)[:len(chain)]
	sort.Ints(pos)
	sents := make([]string, 0, n+len(chain))
	ci := 0
	for i := 0; i < n; i++ {
		for ci < len(chain) && pos[ci] == i {
			sents = append(sents, chain[ci])
			ci++
		}
		sents = append(sents, grass+"\n")
	}
	context := strings.ReplaceAll(strings.Join(sents, " "), ". \n", ".\n")
	kv := []string{"{query}", val, "{num_v}", "5"}
	c, q := split(vtTemplate, context, kv, vtPrefix)
	return c, q, vs
}

// vt: RULER's variable tracking with its one-shot example (ICL) prepended.
func (s *state) vt() func(int) Sample {
	ex := &state{g: s.g, r: newRand(s.r.Uint64(), 1)}
	c, q, vs := ex.vtCore(300 / 25)
	icl := c + q + " " + strings.Join(vs, " ") + "\n\n"
	seed := s.r.Uint64()
	return func(h int) Sample {
		st := &state{g: s.g, r: newRand(seed, 2)}
		c, q, vs := st.vtCore(h)
		return Sample{Prompt: icl + c + q, Context: icl + c, Question: q, Gold: vs}
	}
}

// cweCore: RULER common_words_extraction.py: 10 common words x freqCW among others x freqUCW.
func (s *state) cweCore(nWords, freqCW, freqUCW int) (string, string, []string) {
	const numCW = 10
	nU := max(0, (nWords-freqCW*numCW)/freqUCW)
	nU = min(nU, len(s.g.Words)-numCW)
	perm := s.r.Perm(len(s.g.Words))[:numCW+nU]
	common := make([]string, numCW)
	for i := range common {
		common[i] = s.g.Words[perm[i]]
	}
	var lst []string
	for i := 0; i < freqCW; i++ {
		lst = append(lst, common...)
	}
	for i := 0; i < freqUCW; i++ {
		for _, p := range perm[numCW:] {
			lst = append(lst, s.g.Words[p])
		}
	}
	s.r.Shuffle(len(lst), func(i, j int) { lst[i], lst[j] = lst[j], lst[i] })
	var b strings.Builder
	for i, w := range lst {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%d. %s", i+1, w)
	}
	c, q := split(cweTemplate, b.String(), nil, cwePrefix)
	return c, q, common
}

func (s *state) cwe() (func(int) Sample, error) {
	if len(s.g.Words) < 20 {
		return nil, fmt.Errorf("eval: task cwe needs at least 20 Generator.Words, have %d", len(s.g.Words))
	}
	ex := &state{g: s.g, r: newRand(s.r.Uint64(), 3)}
	c, q, cw := ex.cweCore(150, 6, 1)
	icl := c + q + " " + strings.Join(cw, " ") + "\n\n"
	seed := s.r.Uint64()
	return func(h int) Sample {
		st := &state{g: s.g, r: newRand(seed, 4)}
		c, q, cw := st.cweCore(330+h, 30, 3)
		return Sample{Prompt: icl + c + q, Context: icl + c, Question: q, Gold: cw}
	}, nil
}

// fweCore: RULER freq_words_extraction.py: Zipf(alpha=2) draws of random coded words.
func (s *state) fweCore(nWords, vocabSize int) (string, string, []string) {
	const letters = "abcdefghijklmnopqrstuvwxyz"
	seen := map[string]bool{}
	var vocab []string
	for len(vocab) < vocabSize {
		n := 4 + s.r.IntN(3)
		b := make([]byte, n)
		for i := range b {
			b[i] = letters[s.r.IntN(26)]
		}
		if !seen[string(b)] {
			seen[string(b)] = true
			vocab = append(vocab, string(b))
		}
	}
	cum := make([]float64, vocabSize)
	tot := 0.0
	for k := range cum {
		tot += 1 / float64((k+1)*(k+1))
		cum[k] = tot
	}
	counts := map[string]int{}
	words := make([]string, nWords)
	for i := range words {
		x := s.r.Float64() * tot
		k := min(sort.SearchFloat64s(cum, x), vocabSize-1)
		words[i] = vocab[k]
		counts[vocab[k]]++
	}
	ranked := make([]string, 0, len(counts))
	for w := range counts {
		ranked = append(ranked, w)
	}
	sort.Slice(ranked, func(i, j int) bool {
		if counts[ranked[i]] != counts[ranked[j]] {
			return counts[ranked[i]] > counts[ranked[j]]
		}
		return ranked[i] < ranked[j]
	})
	top := ranked[:min(3, len(ranked))]
	if len(ranked) > 3 && counts[ranked[2]] == counts[ranked[3]] {
		words = append(words, ranked[2]) // strict top 3, as tasks.py
	}
	c, q := split(fweTemplate, strings.Join(words, " .... "), nil, fwePrefix)
	return c, q, append([]string(nil), top...)
}

func (s *state) fwe() func(int) Sample {
	ex := &state{g: s.g, r: newRand(s.r.Uint64(), 5)}
	c, q, top := ex.fweCore(60, 30)
	icl := c + q + " " + strings.Join(top, " ") + "\n\n"
	seed := s.r.Uint64()
	return func(h int) Sample {
		st := &state{g: s.g, r: newRand(seed, 6)}
		c, q, top := st.fweCore(20+h, 1000)
		return Sample{Prompt: icl + c + q, Context: icl + c, Question: q, Gold: top}
	}
}
