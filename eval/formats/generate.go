package formats

import (
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Tasks lists the task kinds in a fixed order:
//
//	single        one queried key among distractor keys
//	multikey      2-4 queried keys, every value asked
//	multivalue    one key given 2-4 values in different places: list them all
//	multihop      the key's value is another key's value (1-2 references to follow)
//	count         how many records have a status (aggregation)
//	mostfrequent  which status is the most frequent (aggregation)
func Tasks() []string { return slices.Clone(allTasks) }

// Position says where the question goes relative to the context.
type Position int

const (
	RandomPosition Position = iota // Make: by the sample index's parity; Random: a coin
	QuestionAfter
	QuestionBefore
)

// Sample is one rendered task. Prompt = Context + Question: a runner may compress the KV
// cache after Context. When the question comes first it is inside Context and Question holds
// the cue alone. Answer is the training target that follows Prompt.
type Sample struct {
	Family, Task  string
	HeldOut       bool
	Prompt        string
	Context       string
	Question      string
	Answer        string
	Query         string // the question as rendered, wherever it sits
	Gold          []string
	Metric        string // MetricMatchAll or MetricNumber (score.go)
	QuestionFirst bool
	// Depth is where the first gold value sits in Context, in percent (0: start); -1 for the
	// aggregation tasks, whose answer is not a span of the context.
	Depth        int
	MaxNewTokens int
	Distractors  int // distractor keys (retrieval tasks)
	// Snippets are the rendered facts as inserted (one per fact, or one block).
	Snippets []string
}

// Config is what a Generator draws from.
type Config struct {
	Filler Filler
	// Words: key vocabulary (keys are "word-word"); use the training or the evaluation split
	// of the word lists to match the generator.
	Words []string
	// Count counts a prompt's tokens; nil estimates len(text)/CharsPerToken.
	Count         func(string) int
	CharsPerToken float64 // default 4
	Seed          uint64
}

// Generator renders samples of the families it allows.
type Generator struct {
	cfg     Config
	allowed []*family
}

// NewTraining returns a generator of the trained families only: Make and Random refuse a
// held-out family, whatever the caller asks.
func NewTraining(cfg Config) (*Generator, error) { return newGenerator(cfg, false) }

// NewEvaluation returns a generator of every family, held-out ones included.
func NewEvaluation(cfg Config) (*Generator, error) { return newGenerator(cfg, true) }

func newGenerator(cfg Config, withHeldOut bool) (*Generator, error) {
	if cfg.Filler == nil || cfg.Filler.Len() == 0 {
		return nil, errors.New("formats: Config.Filler is empty")
	}
	if len(cfg.Words) < 20 {
		return nil, fmt.Errorf("formats: Config.Words has %d words, want at least 20", len(cfg.Words))
	}
	if cfg.CharsPerToken == 0 {
		cfg.CharsPerToken = 4
	}
	g := &Generator{cfg: cfg}
	for _, f := range families {
		if withHeldOut || !heldOut[f.name] {
			g.allowed = append(g.allowed, f)
		}
	}
	return g, nil
}

// Families lists the names of the families this generator renders.
func (g *Generator) Families() []string {
	out := make([]string, len(g.allowed))
	for i, f := range g.allowed {
		out[i] = f.name
	}
	return out
}

func (g *Generator) family(name string) (*family, error) {
	for _, f := range g.allowed {
		if f.name == name {
			return f, nil
		}
	}
	if familyByName(name) != nil {
		return nil, fmt.Errorf("formats: family %q is held out of training (split.go); this generator renders %v", name, g.Families())
	}
	return nil, fmt.Errorf("formats: unknown family %q (families: %v)", name, AllFamilies())
}

// Spec selects one sample.
type Spec struct {
	Family, Task string
	Length       int // the prompt's maximum token count
	Index        int
	Depth        int // percent depth of the first queried fact; < 0: drawn
	Question     Position
	Distractors  int // distractor keys; < 0: drawn
}

// Make renders the sample of spec, deterministic in (Seed, Family, Task, Length, Index) and
// the spec's other fields.
func (g *Generator) Make(s Spec) (Sample, error) {
	f, err := g.family(s.Family)
	if err != nil {
		return Sample{}, err
	}
	h := crc32.ChecksumIEEE(fmt.Appendf(nil, "%s:%s:%d:%d", s.Family, s.Task, s.Length, s.Index))
	if s.Question == RandomPosition {
		s.Question = QuestionAfter + Position(s.Index%2)
	}
	return g.make(f, s, rand.New(rand.NewPCG(g.cfg.Seed, uint64(h))))
}

// Random renders a training sample of at most length tokens: family, task, question
// position, depth and distractors all drawn from r.
// A draw whose task cannot fit (aggregation records in a short sample) is drawn again.
func (g *Generator) Random(r *rand.Rand, length int) (Sample, error) {
	var err error
	for range 8 {
		f := g.allowed[r.IntN(len(g.allowed))]
		s := Spec{Family: f.name, Task: pick(r, f.tasks), Length: length, Depth: -1, Distractors: -1,
			Question: QuestionAfter + Position(r.IntN(2))}
		var sm Sample
		if sm, err = g.make(f, s, rand.New(rand.NewPCG(r.Uint64(), r.Uint64()))); !errors.Is(err, errTooLong) {
			return sm, err
		}
	}
	return Sample{}, err
}

func (g *Generator) make(f *family, s Spec, r *rand.Rand) (Sample, error) {
	if !slices.Contains(f.tasks, s.Task) {
		return Sample{}, fmt.Errorf("formats: family %s has no task %q (tasks: %v)", f.name, s.Task, f.tasks)
	}
	if s.Depth > 100 {
		return Sample{}, fmt.Errorf("formats: depth %d is over 100 percent", s.Depth)
	}
	var lastErr error
	// A drawn value can occur in the filler by chance: then draw again (a few times). Drawn
	// distractors that leave no room in a short sample are halved until they fit.
	for attempt, nd := 0, -1; attempt < 12; attempt++ {
		sm, err := g.try(f, s, r, nd)
		if err == nil {
			return sm, nil
		}
		lastErr = err
		switch {
		case errors.Is(err, errCollision):
		case errors.Is(err, errTooLong) && s.Distractors < 0 && nd != 0:
			nd = sm.Distractors / 2
		default:
			return Sample{}, err
		}
	}
	return Sample{}, lastErr
}

var (
	errCollision = errors.New("formats: a gold value occurs more than once in the prompt")
	errTooLong   = errors.New("the prompt without filler exceeds the length")
)

// task is the content of a sample before rendering.
type task struct {
	facts  []fact
	target int // index in facts of the fact placed at the controlled depth
	// distractors: how many facts are distractors
	distractors int
	q           query
	gold        []string
	metric      string
}

// try renders one sample; nd >= 0 overrides a drawn number of distractors. On errTooLong
// the returned sample's Distractors says how many it drew.
func (g *Generator) try(f *family, s Spec, r *rand.Rand, nd int) (Sample, error) {
	if nd >= 0 {
		s.Distractors = nd
	}
	t, err := g.content(f, s, r)
	if err != nil {
		return Sample{}, err
	}
	depth := s.Depth
	if depth < 0 {
		depth = r.IntN(101)
	}
	// Scattered facts: the target at the controlled depth, the others anywhere; a block at
	// the controlled depth with its rows in random order.
	order := r.Perm(len(t.facts))
	facts := make([]fact, len(t.facts))
	for i, j := range order {
		facts[i] = t.facts[j]
	}
	snippets := f.render(r, facts)
	depths := make([]int, len(snippets))
	for i := range depths {
		depths[i] = r.IntN(101)
		if f.block || order[i] == t.target {
			depths[i] = depth
		}
	}
	intro, cue := pick(r, f.intro), ""
	if len(f.cue) > 0 {
		cue = pick(r, f.cue)
	}
	question := f.ask(r, t.q)
	system := ""
	if f.chat {
		system = pick(r, chatSystems)
	}
	start := r.IntN(g.cfg.Filler.Len())
	before := s.Question == QuestionBefore
	build := func(h int) Sample {
		paras := make([]string, h)
		for i := range paras {
			k := (start + i) % g.cfg.Filler.Len()
			paras[i] = g.cfg.Filler.Paragraph(k)
			if f.filler != nil {
				paras[i] = f.filler(k, paras[i])
			}
		}
		doc := strings.Join(insertAt(paras, snippets, depths), "\n\n")
		return layout(f, system, intro, doc, question, cue, before, t)
	}
	sm, ok := g.fit(build, s.Length)
	if !ok {
		return Sample{Distractors: t.distractors}, fmt.Errorf("formats: family %s task %s: %w (%d tokens > %d)",
			f.name, s.Task, errTooLong, g.count(sm.Prompt), s.Length)
	}
	sm.Family, sm.Task, sm.HeldOut = f.name, s.Task, heldOut[f.name]
	sm.Gold, sm.Metric, sm.QuestionFirst, sm.Snippets, sm.Query = t.gold, t.metric, before, snippets, question
	sm.MaxNewTokens, sm.Distractors = 64, t.distractors
	if t.q.attr.kind == "uuid" {
		sm.MaxNewTokens = 48 * len(t.gold)
	}
	sm.Depth = -1
	if t.metric == MetricMatchAll && t.q.task != "mostfrequent" {
		for _, v := range t.gold {
			if strings.Count(sm.Prompt, v) != 1 {
				return Sample{}, errCollision
			}
		}
		if t.q.task == "multivalue" { // gold in order of appearance, as RULER orders it
			sort.SliceStable(sm.Gold, func(i, j int) bool {
				return strings.Index(sm.Context, sm.Gold[i]) < strings.Index(sm.Context, sm.Gold[j])
			})
			sm.Answer = answer(f, t.q, sm.Gold)
		}
		if len(sm.Context) > 0 {
			sm.Depth = 100 * strings.Index(sm.Context, sm.Gold[0]) / len(sm.Context)
		}
	}
	return sm, nil
}

// layout assembles the prompt: [intro] context question cue, or [intro] question context cue;
// for the chat family [system turn] user turn (intro, context, question) and the assistant's
// turn opening instead of a cue.
func layout(f *family, system, intro, doc, question, cue string, before bool, t task) Sample {
	var head []string
	if intro != "" {
		head = append(head, intro)
	}
	var ctx, q string
	if before {
		ctx = strings.Join(append(head, question, doc), "\n\n")
	} else {
		ctx = strings.Join(append(head, doc), "\n\n")
		q = "\n\n" + question
	}
	if f.chat {
		ctx = ChatUserPrefix + ctx
		if system != "" {
			ctx = ChatSystemPrefix + system + ChatEndOfTurn + "\n" + ctx
		}
		q += ChatAssistantPrefix
	} else if before {
		q = "\n\n" + cue
	} else {
		q += "\n" + cue
	}
	return Sample{Context: ctx, Question: q, Prompt: ctx + q, Answer: answer(f, t.q, t.gold)}
}

// answer is the training target after the prompt.
func answer(f *family, q query, gold []string) string {
	if f.chat {
		return chatAnswer(q, gold) + ChatEndOfTurn
	}
	return " " + list(gold)
}

// chatAnswer phrases the answer as a sentence, as an assistant would.
func chatAnswer(q query, gold []string) string {
	switch q.task {
	case "single", "multihop":
		return fmt.Sprintf("The %s for %s is %s.", q.attr.phrase, q.keys[0], gold[0])
	case "multikey":
		parts := make([]string, len(gold))
		for i, v := range gold {
			parts[i] = q.keys[i] + ": " + v
		}
		return fmt.Sprintf("The %s are %s.", plural(q.attr.phrase), list(parts))
	case "multivalue":
		return fmt.Sprintf("%s has these %s: %s.", q.keys[0], plural(q.attr.phrase), list(gold))
	case "count":
		if gold[0] == "1" {
			return fmt.Sprintf("1 entry has the status %s.", q.category)
		}
		return fmt.Sprintf("%s entries have the status %s.", gold[0], q.category)
	default: // mostfrequent
		return fmt.Sprintf("The most frequent status is %s.", gold[0])
	}
}

func (g *Generator) count(p string) int {
	if g.cfg.Count != nil {
		return g.cfg.Count(p)
	}
	return int(float64(len(p))/g.cfg.CharsPerToken) + 1
}

// fit finds the largest filler amount h whose prompt has at most budget tokens.
func (g *Generator) fit(build func(int) Sample, budget int) (Sample, bool) {
	s0 := build(0)
	if g.count(s0.Prompt) > budget {
		return s0, false
	}
	lo, hi := 0, 1
	for g.count(build(hi).Prompt) <= budget {
		lo, hi = hi, hi*2
		if hi > 1<<22 {
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

// insertAt places items[i] into base at depths[i] percent of base's bytes (at the paragraph
// boundary nearest that point; items at the same boundary keep their order), so that depth
// means the same on paragraphs of any length.
func insertAt(base, items []string, depths []int) []string {
	cum := make([]int, len(base)+1) // cum[i]: bytes before paragraph i
	for i, p := range base {
		cum[i+1] = cum[i] + len(p)
	}
	type ins struct{ pos, ord int }
	order := make([]ins, len(items))
	for i, d := range depths {
		target := cum[len(base)] * d / 100
		pos := sort.SearchInts(cum, target) // first boundary at or after target
		if pos > 0 && target-cum[pos-1] < cum[min(pos, len(base))]-target {
			pos--
		}
		order[i] = ins{min(pos, len(base)), i}
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

// content draws the facts, query and gold answer of a task.
func (g *Generator) content(f *family, s Spec, r *rand.Rand) (task, error) {
	words := g.cfg.Words
	used := map[string]bool{}
	newKey := func() string {
		for {
			a, b := words[r.IntN(len(words))], words[r.IntN(len(words))]
			k := a + "-" + b
			// A key never contains a status word, so that counting statuses is unambiguous.
			if !used[k] && !strings.Contains(k, ",") && !slices.Contains(categories, a) && !slices.Contains(categories, b) {
				used[k] = true
				return k
			}
		}
	}
	attr := attributes[r.IntN(len(attributes))]
	seenV := map[string]bool{}
	newValue := func() string {
		for {
			var v string
			if attr.kind == "uuid" {
				v = uuid(r)
			} else {
				v = strconv.Itoa(1000000 + r.IntN(9000000))
			}
			if !seenV[v] {
				seenV[v] = true
				return v
			}
		}
	}
	nd := s.Distractors
	if nd < 0 {
		if f.block {
			nd = 2 + r.IntN(40)
		} else {
			nd = r.IntN(7)
		}
	}
	var t task
	t.metric = MetricMatchAll
	switch s.Task {
	case "single", "multikey":
		nq := 1
		if s.Task == "multikey" {
			nq = 2 + r.IntN(3)
		}
		for i := 0; i < nq; i++ {
			k, v := newKey(), newValue()
			t.facts = append(t.facts, fact{key: k, attr: attr, value: v})
			t.q.keys = append(t.q.keys, k)
			t.gold = append(t.gold, v)
		}
	case "multivalue":
		k := newKey()
		for i := 0; i < 2+r.IntN(3); i++ {
			v := newValue()
			t.facts = append(t.facts, fact{key: k, attr: attr, value: v})
			t.gold = append(t.gold, v)
		}
		t.q.keys = []string{k}
	case "multihop":
		hops := 1 + r.IntN(2)
		keys := make([]string, hops+1)
		for i := range keys {
			keys[i] = newKey()
		}
		v := newValue()
		t.facts = append(t.facts, fact{key: keys[hops], attr: attr, value: v})
		for i := hops - 1; i >= 0; i-- {
			t.facts = append(t.facts, fact{key: keys[i], attr: attr, ref: keys[i+1]})
		}
		t.q.keys, t.gold = []string{keys[0]}, []string{v}
	case "count", "mostfrequent":
		return g.aggregate(s.Task, r, newKey), nil
	default:
		return task{}, fmt.Errorf("formats: unknown task %q (tasks: %v)", s.Task, allTasks)
	}
	for i := 0; i < nd; i++ {
		t.facts = append(t.facts, fact{key: newKey(), attr: attr, value: newValue()})
	}
	t.distractors = nd
	t.q.task, t.q.attr = s.Task, attr
	return t, nil
}

// aggregate draws status records: count asks how many have one category, mostfrequent which
// category has strictly the most records.
func (g *Generator) aggregate(kind string, r *rand.Rand, newKey func() string) task {
	cats := slices.Clone(categories)
	r.Shuffle(len(cats), func(i, j int) { cats[i], cats[j] = cats[j], cats[i] })
	cats = cats[:3+r.IntN(3)]
	counts := make([]int, len(cats))
	for i := range counts {
		counts[i] = 1 + r.IntN(8)
	}
	if kind == "mostfrequent" { // cats[0] strictly most frequent
		top := 0
		for _, c := range counts[1:] {
			top = max(top, c)
		}
		counts[0] = top + 1 + r.IntN(3)
	}
	t := task{q: query{task: kind, attr: statusAttr}}
	for i, c := range cats {
		for j := 0; j < counts[i]; j++ {
			t.facts = append(t.facts, fact{key: newKey(), attr: statusAttr, value: c})
		}
	}
	if kind == "count" {
		i := r.IntN(len(cats))
		t.q.category = cats[i]
		t.gold, t.metric = []string{strconv.Itoa(counts[i])}, MetricNumber
	} else {
		t.gold, t.metric = []string{cats[0]}, MetricMatchAll
	}
	t.target = r.IntN(len(t.facts))
	return t
}

func uuid(r *rand.Rand) string {
	var b [16]byte
	for i := range b {
		b[i] = byte(r.UintN(256))
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
