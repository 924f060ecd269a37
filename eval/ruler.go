// Package eval generates RULER-style long-context evaluation samples (NVIDIA RULER,
// scripts/data/synthetic/) in the exact formats of scripts/corpus/tasks.py, which lukv-tiny
// was trained on, and scores predictions as RULER does (string_match_all / _part).
package eval

import (
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"strings"
)

// Prompt templates and answer prefixes, identical to scripts/corpus/tasks.py (which follows
// RULER's synthetic.yaml / constants.py).
const (
	grass          = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
	niahTemplate   = "Some special magic {type_v} are hidden within the following text. Make sure to memorize it. I will quiz you about the {type_v} afterwards.\n{context}\nWhat are all the special magic {type_v} for {query} mentioned in the provided text?"
	niahPrefix     = " The special magic {type_v} for {query} mentioned in the provided text are"
	needleTemplate = "One of the special magic {type_v} for {key} is: {value}."
	vtTemplate     = "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\nQuestion: Find all variables that are assigned the value {query} in the text above."
	vtPrefix       = " Answer: According to the chain(s) of variable assignment in the text above, {num_v} variables are assigned the value {query}, they are:"
	cweTemplate    = "Below is a numbered list of words. In these words, some appear more often than others. Memorize the ones that appear most often.\n{context}\nQuestion: What are the 10 most common words in the above list?"
	cwePrefix      = " Answer: The top 10 words that appear most often in the list are:"
	fweTemplate    = "Read the following coded text and track the frequency of each coded word. Find the three most frequently appeared coded words. {context}\nQuestion: Do not provide any explanation. Please ignore the dots '....'. What are the three most frequently appeared words in the above coded text?"
	fwePrefix      = " Answer: According to the coded text above, the three most frequently appeared words are:"
)

// Sample is one evaluation instance. Prompt = Context + Question; Prompt ends with RULER's
// answer prefix so generation can start right after it. A runner may compress the KV cache
// after prefilling Context and before Question.
type Sample struct {
	Task         string
	Prompt       string
	Context      string
	Question     string
	Gold         []string
	MaxNewTokens int
	// AllClasses is the label set of a LongBench classification task (else nil).
	AllClasses []string
	// Family and Split: the formats suite's template family and its side of the split
	// (copied into every Cell); Score, when set, scores a prediction in [0, 1] instead of
	// the task's RULER or LongBench metric (ScoreSample).
	Family, Split string
	Score         func(pred string) float64
}

// niahSpec describes a NIAH variant (tasks.py NIAH_TASKS): haystack kind, key kind, value
// kind, number of keys, values per key, queried keys.
type niahSpec struct {
	hay, kKind, vKind string
	nK, nV, nQ        int
}

var niahTasks = map[string]niahSpec{
	"niah_single_1":   {"repeat", "words", "numbers", 1, 1, 1},
	"niah_single_2":   {"essay", "words", "numbers", 1, 1, 1},
	"niah_single_3":   {"essay", "words", "uuids", 1, 1, 1},
	"niah_multikey_1": {"essay", "words", "numbers", 4, 1, 1},
	"niah_multikey_2": {"needle", "words", "numbers", 1, 1, 1},
	"niah_multikey_3": {"needle", "uuids", "uuids", 1, 1, 1},
	"niah_multivalue": {"essay", "words", "numbers", 1, 4, 1},
	"niah_multiquery": {"essay", "words", "numbers", 4, 1, 4},
}

var taskOrder = []string{"niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1",
	"niah_multikey_2", "niah_multikey_3", "niah_multivalue", "niah_multiquery", "vt", "cwe", "fwe"}

// Tasks lists the task names in RULER's synthetic.yaml order.
func Tasks() []string { return append([]string(nil), taskOrder...) }

// Depths are RULER's 40 needle depths (percent), 0..100.
var Depths = func() []int {
	d := make([]int, 40)
	for i := range d {
		d[i] = (i*100 + 19) / 39 // round(i*100/39)
	}
	return d
}()

// tokensToGenerate is RULER's tokens_to_generate per task family.
func tokensToGenerate(task string) int {
	switch {
	case strings.HasPrefix(task, "niah"):
		return 128
	case task == "vt":
		return 30
	case task == "cwe":
		return 120
	case task == "fwe":
		return 50
	}
	return 0
}

// Generator makes samples. Tokenizer counts prompt tokens (Encode(text, true) includes BOS).
// Haystack holds essay sentences (evaluation prose), Words the evaluation word list (keys are
// "word-word" pairs, like tasks.py's "adj-noun"; cwe draws from it). Adjectives and Nouns,
// when both set, give keys exactly as tasks.py ("adj-noun").
type Generator struct {
	Tokenizer interface{ Encode(string, bool) []int }
	Haystack  []string
	Words     []string
	// Adjectives, Nouns: optional key vocabularies (eval split); if empty, Words is used.
	Adjectives, Nouns []string
	Seed              uint64
	// QA holds the user-given data of RULER's QA tasks by task name ("qa_1": LoadSQuAD,
	// "qa_2": LoadHotpotQA); see MakeQA.
	QA map[string]*QAData
}

// state is per-sample randomness.
type state struct {
	g *Generator
	r *rand.Rand
}

func (s *state) key() string {
	a, n := s.g.Adjectives, s.g.Nouns
	if len(a) == 0 || len(n) == 0 {
		a, n = s.g.Words, s.g.Words
	}
	return a[s.r.IntN(len(a))] + "-" + n[s.r.IntN(len(n))]
}

func (s *state) uuid() string {
	var b [16]byte
	for i := range b {
		b[i] = byte(s.r.UintN(256))
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func (s *state) value(kind string) string {
	switch kind {
	case "numbers":
		return fmt.Sprint(1000000 + s.r.IntN(9000000))
	case "uuids":
		return s.uuid()
	}
	return s.key()
}

func (s *state) distinct(kind string, n int, avoid map[string]bool) []string {
	out := make([]string, 0, n)
	for tries := 0; len(out) < n && tries < 100*n+1000; tries++ {
		v := s.value(kind)
		if !avoid[v] {
			avoid[v] = true
			out = append(out, v)
		}
	}
	return out
}

func fill(t string, kv ...string) string {
	return strings.NewReplacer(kv...).Replace(t)
}

// ErrDoesNotFit marks a sample that cannot be made at the asked length (even its
// smallest prompt is longer): an evaluation skips such cells and says so.
var ErrDoesNotFit = errors.New("does not fit the length")

// Make builds sample index of task at total length `length` (prompt tokens + MaxNewTokens),
// deterministic in (Seed, task, length, index). The first queried needle goes to depth
// Depths[index % 40].
func (g *Generator) Make(task string, length int, index int) (Sample, error) {
	if _, ok := qaTasks[task]; ok {
		return g.MakeQA(task, length, index)
	}
	if g.Tokenizer == nil {
		return Sample{}, fmt.Errorf("eval: Generator.Tokenizer is nil")
	}
	budget := length - tokensToGenerate(task)
	if tokensToGenerate(task) == 0 {
		return Sample{}, fmt.Errorf("eval: unknown task %q (want one of %v)", task, taskOrder)
	}
	if budget <= 0 {
		return Sample{}, fmt.Errorf("eval: length %d too small for task %s: %w", length, task, ErrDoesNotFit)
	}
	h := crc32.ChecksumIEEE([]byte(fmt.Sprintf("%s:%d:%d", task, length, index)))
	st := &state{g: g, r: newRand(g.Seed, uint64(h))}
	var build func(int) Sample
	var err error
	switch task {
	case "vt":
		build = st.vt()
	case "cwe":
		build, err = st.cwe()
	case "fwe":
		build = st.fwe()
	default:
		build, err = st.niah(task, Depths[index%len(Depths)])
	}
	if err != nil {
		return Sample{}, err
	}
	s, ok := g.fit(build, budget)
	if !ok {
		return Sample{}, fmt.Errorf("eval: task %s: even the smallest prompt (%d tokens) exceeds %d: %w",
			task, g.count(s.Prompt), budget, ErrDoesNotFit)
	}
	s.Task = task
	s.MaxNewTokens = tokensToGenerate(task)
	return s, nil
}

func (g *Generator) count(p string) int { return len(g.Tokenizer.Encode(p, true)) }

// fit binary-searches the haystack amount h (RULER: largest haystack whose prompt fits) and
// returns the largest sample with count(prompt) <= budget.
func (g *Generator) fit(build func(int) Sample, budget int) (Sample, bool) {
	s0 := build(0)
	if g.count(s0.Prompt) > budget {
		return s0, false
	}
	lo, hi := 0, 1
	for {
		if g.count(build(hi).Prompt) > budget {
			break
		}
		lo = hi
		hi *= 2
		if hi > 1<<24 {
			return build(lo), true
		}
	}
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if g.count(build(mid).Prompt) <= budget {
			lo = mid
		} else {
			hi = mid
		}
	}
	return build(lo), true
}

// newRand is a PCG generator seeded by (a, b).
func newRand(a, b uint64) *rand.Rand { return rand.New(rand.NewPCG(a, b)) }
