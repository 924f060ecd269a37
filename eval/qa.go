package eval

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"os"
	"sort"
	"strings"
)

// RULER's QA tasks (NVIDIA RULER, scripts/data/synthetic/qa.py, configured in
// scripts/synthetic.yaml as qa_1 = squad, qa_2 = hotpotqa, prompt in
// scripts/data/synthetic/constants.py TASKS['qa']). lukv does not bundle SQuAD or HotpotQA:
// the user passes the files RULER's scripts/data/synthetic/json/download_qa_dataset.sh
// fetches (SQuAD v2.0 dev-v2.0.json, HotpotQA hotpot_dev_distractor_v1.json), read by
// LoadSQuAD and LoadHotpotQA and set in Generator.QA.

// Prompt wording of RULER's constants.py TASKS['qa'] and qa.py's DOCUMENT_PROMPT.
const (
	qaTemplate        = "Answer the question based on the given documents. Only give me the answer and do not output any other words.\n\nThe following are given documents.\n\n{context}\n\nAnswer the question based on the given documents. Only give me the answer and do not output any other words.\n\nQuestion: {query}"
	qaPrefix          = " Answer:"
	qaDocument        = "Document {i}:\n{document}"
	qaTokensGenerated = 32 // constants.py TASKS['qa']['tokens_to_generate']
)

// qaTasks maps a RULER QA task to the data set it reads (synthetic.yaml) and the CLI flag
// suggested to the user when the data is missing.
var qaTasks = map[string]struct{ dataset, flag, file string }{
	"qa_1": {"SQuAD", "--squad", "SQuAD v2.0 dev-v2.0.json"},
	"qa_2": {"HotpotQA", "--hotpotqa", "HotpotQA hotpot_dev_distractor_v1.json"},
}

// QATasks lists RULER's QA task names in synthetic.yaml order. They are not in Tasks()
// because they need user-given data (Generator.QA).
func QATasks() []string { return []string{"qa_1", "qa_2"} }

// QAQuestion is one answerable question of a QA data set.
type QAQuestion struct {
	Query   string
	Answers []string // gold answers; string_match_part scores any of them
	// Gold indexes QAData.Docs: the documents that always go into the question's prompt
	// (SQuAD: the question's paragraph; HotpotQA: all paragraphs listed for the question).
	Gold []int
	// More indexes QAData.Docs: preferred distractors (SQuAD: the other paragraphs of the
	// same article, qa.py's more_context); nil for HotpotQA.
	More []int
}

// QAData is a QA data set in RULER's form: unique documents sorted by their text (Python's
// sorted(set(...)), byte order = code-point order) and the answerable questions in file
// order, so sample index i asks Questions[i % len(Questions)] as qa.py asks QAS[index].
type QAData struct {
	Dataset   string // "SQuAD" or "HotpotQA"
	Docs      []string
	Questions []QAQuestion
}

// docIndex sorts the unique documents and returns them with a text -> index map.
func docIndex(texts []string) ([]string, map[string]int) {
	idx := map[string]int{}
	for _, t := range texts {
		idx[t] = 0
	}
	docs := make([]string, 0, len(idx))
	for t := range idx {
		docs = append(docs, t)
	}
	sort.Strings(docs)
	for i, t := range docs {
		idx[t] = i
	}
	return docs, idx
}

// readFile reads a data file for LoadSQuAD and LoadHotpotQA.
func readFile(path, what string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("eval: %s file: %w", what, err)
	}
	return b, nil
}

// decodeJSON decodes data (the file name) into v.
func decodeJSON(data []byte, name, what string, v any) error {
	d := json.NewDecoder(bytes.NewReader(data))
	if err := d.Decode(v); err != nil {
		return fmt.Errorf("eval: %s file %s: bad JSON: %v", what, name, err)
	}
	return nil
}

// LoadSQuAD reads a SQuAD v2.0 dev file ({"data": [{"paragraphs": [{"context", "qas":
// [{"question", "answers": [{"text"}], "is_impossible"}]}]}]}) as qa.py's read_squad does:
// every distinct paragraph is a document; each possible question with at least one answer
// becomes a question whose gold document is its paragraph and whose preferred distractors
// are the other paragraphs of its article. A SQuAD v1.1 file (no is_impossible) also works.
func LoadSQuAD(path string) (*QAData, error) {
	data, err := readFile(path, "SQuAD")
	if err != nil {
		return nil, err
	}
	return parseSQuAD(data, path)
}

// parseSQuAD is LoadSQuAD of the file's bytes (path names it in errors).
func parseSQuAD(data []byte, path string) (*QAData, error) {
	var f struct {
		Data *[]struct {
			Paragraphs []struct {
				Context *string `json:"context"`
				Qas     []struct {
					Question     string `json:"question"`
					IsImpossible bool   `json:"is_impossible"`
					Answers      []struct {
						Text string `json:"text"`
					} `json:"answers"`
				} `json:"qas"`
			} `json:"paragraphs"`
		} `json:"data"`
	}
	if err := decodeJSON(data, path, "SQuAD", &f); err != nil {
		return nil, err
	}
	if f.Data == nil {
		return nil, fmt.Errorf("eval: SQuAD file %s: no \"data\" array (want SQuAD v2.0 dev JSON)", path)
	}
	var texts []string
	for ai, a := range *f.Data {
		for pi, p := range a.Paragraphs {
			if p.Context == nil {
				return nil, fmt.Errorf("eval: SQuAD file %s: data[%d].paragraphs[%d] has no \"context\"", path, ai, pi)
			}
			texts = append(texts, *p.Context)
		}
	}
	docs, idx := docIndex(texts)
	qa := &QAData{Dataset: "SQuAD", Docs: docs}
	for _, a := range *f.Data {
		for _, p := range a.Paragraphs {
			own := idx[*p.Context]
			var more []int
			for _, o := range a.Paragraphs {
				if j := idx[*o.Context]; j != own {
					more = append(more, j)
				}
			}
			for _, q := range p.Qas {
				var ans []string
				for _, x := range q.Answers {
					if x.Text != "" {
						ans = append(ans, x.Text)
					}
				}
				// An empty gold list would score 0 always and an empty string would match
				// any prediction, so unanswerable questions are left out (qa.py keeps the
				// questions that are not is_impossible, which in SQuAD v2 all have answers).
				if q.IsImpossible || len(ans) == 0 || strings.TrimSpace(q.Question) == "" {
					continue
				}
				qa.Questions = append(qa.Questions, QAQuestion{Query: q.Question, Answers: ans, Gold: []int{own}, More: more})
			}
		}
	}
	if len(qa.Questions) == 0 {
		return nil, fmt.Errorf("eval: SQuAD file %s: no usable questions (none possible with a non-empty answer)", path)
	}
	return qa, nil
}

// LoadHotpotQA reads a HotpotQA dev distractor file ([{"question", "answer", "context":
// [[title, [sentence, ...]], ...]}]) as qa.py's read_hotpotqa does: each distinct paragraph
// "title\n" + concatenated sentences is a document, and every listed paragraph of a question
// (its supporting paragraphs and HotpotQA's own distractors) is a gold document. Questions
// with an empty answer are left out.
func LoadHotpotQA(path string) (*QAData, error) {
	data, err := readFile(path, "HotpotQA")
	if err != nil {
		return nil, err
	}
	return parseHotpotQA(data, path)
}

// parseHotpotQA is LoadHotpotQA of the file's bytes (path names it in errors).
func parseHotpotQA(data []byte, path string) (*QAData, error) {
	var f []struct {
		Question string              `json:"question"`
		Answer   string              `json:"answer"`
		Context  [][]json.RawMessage `json:"context"`
	}
	if err := decodeJSON(data, path, "HotpotQA", &f); err != nil {
		return nil, err
	}
	paras := make([][]string, len(f))
	var texts []string
	for qi, q := range f {
		for ci, c := range q.Context {
			var title string
			var sents []string
			if len(c) != 2 || json.Unmarshal(c[0], &title) != nil || json.Unmarshal(c[1], &sents) != nil {
				return nil, fmt.Errorf("eval: HotpotQA file %s: entry %d context[%d] is not [title, [sentences]]", path, qi, ci)
			}
			paras[qi] = append(paras[qi], title+"\n"+strings.Join(sents, ""))
		}
		texts = append(texts, paras[qi]...)
	}
	docs, idx := docIndex(texts)
	qa := &QAData{Dataset: "HotpotQA", Docs: docs}
	for qi, q := range f {
		if q.Answer == "" || strings.TrimSpace(q.Question) == "" || len(paras[qi]) == 0 {
			continue
		}
		gold := make([]int, len(paras[qi]))
		for i, t := range paras[qi] {
			gold[i] = idx[t]
		}
		qa.Questions = append(qa.Questions, QAQuestion{Query: q.Question, Answers: []string{q.Answer}, Gold: gold})
	}
	if len(qa.Questions) == 0 {
		return nil, fmt.Errorf("eval: HotpotQA file %s: no usable questions (want a JSON array of {question, answer, context})", path)
	}
	return qa, nil
}

// MakeQA builds sample index of RULER QA task qa_1 (SQuAD) or qa_2 (HotpotQA) at total length
// `length` (prompt tokens + 32 new tokens), deterministic in (Seed, task, length, index).
// As in qa.py's generate_input_output, the prompt holds the question's gold documents plus
// distractors (its article's other paragraphs first, then random documents; when more
// documents are wanted than exist, all documents repeated), shuffled and numbered
// "Document i:". The number of distractors is the largest whose prompt fits, found by
// binary search per sample (qa.py searches once with question 0, then steps down by 10
// documents per sample that does not fit).
func (g *Generator) MakeQA(task string, length, index int) (Sample, error) {
	spec, ok := qaTasks[task]
	if !ok {
		return Sample{}, fmt.Errorf("eval: unknown QA task %q (want one of %v)", task, QATasks())
	}
	d := g.QA[task]
	if d == nil || len(d.Questions) == 0 || len(d.Docs) == 0 {
		return Sample{}, fmt.Errorf("eval: task %s needs the %s data set, which lukv does not bundle: pass %s with %s FILE",
			task, spec.dataset, spec.file, spec.flag)
	}
	if g.Tokenizer == nil {
		return Sample{}, fmt.Errorf("eval: Generator.Tokenizer is nil")
	}
	budget := length - qaTokensGenerated
	if budget <= 0 {
		return Sample{}, fmt.Errorf("eval: length %d too small for task %s: %w", length, task, ErrDoesNotFit)
	}
	if index < 0 {
		return Sample{}, fmt.Errorf("eval: task %s: negative sample index %d", task, index)
	}
	q := d.Questions[index%len(d.Questions)]
	for _, i := range append(append([]int(nil), q.Gold...), q.More...) {
		if i < 0 || i >= len(d.Docs) {
			return Sample{}, fmt.Errorf("eval: task %s: question %d refers to document %d of %d", task, index%len(d.Questions), i, len(d.Docs))
		}
	}
	h := crc32.ChecksumIEEE([]byte(fmt.Sprintf("%s:%d:%d", task, length, index)))
	r := newRand(g.Seed, uint64(h))

	// extra: the distractor order, preferred ones first, each group in random order; taking
	// its first k is a uniform sample like qa.py's random.sample, and a prefix keeps the
	// prompt growing with k so the binary search is sound.
	inGold := map[int]bool{}
	for _, i := range q.Gold {
		inGold[i] = true
	}
	taken := map[int]bool{}
	var more []int
	for _, i := range q.More {
		if !inGold[i] && !taken[i] {
			taken[i] = true
			more = append(more, i)
		}
	}
	var rest []int
	for i := range d.Docs {
		if !inGold[i] && !taken[i] {
			rest = append(rest, i)
		}
	}
	r.Shuffle(len(more), func(i, j int) { more[i], more[j] = more[j], more[i] })
	r.Shuffle(len(rest), func(i, j int) { rest[i], rest[j] = rest[j], rest[i] })
	extra := append(more, rest...)
	shuffleSeed := r.Uint64()

	kv := []string{"{query}", q.Query}
	build := func(k int) Sample {
		n := len(q.Gold) + k
		var sel []int
		if n < len(d.Docs) {
			sel = append(append(sel, q.Gold...), extra[:min(k, len(extra))]...)
		} else { // qa.py: (DOCS * repeats)[:num_docs]
			sel = make([]int, n)
			for i := range sel {
				sel[i] = i % len(d.Docs)
			}
		}
		sr := newRand(g.Seed^shuffleSeed, uint64(n))
		sr.Shuffle(len(sel), func(i, j int) { sel[i], sel[j] = sel[j], sel[i] })
		parts := make([]string, len(sel))
		for i, di := range sel {
			parts[i] = fill(qaDocument, "{i}", fmt.Sprint(i+1), "{document}", d.Docs[di])
		}
		c, qu := split(qaTemplate, strings.Join(parts, "\n\n"), kv, qaPrefix)
		return Sample{Prompt: c + qu, Context: c, Question: qu, Gold: append([]string(nil), q.Answers...)}
	}
	s, ok := g.fit(build, budget)
	if !ok {
		return Sample{}, fmt.Errorf("eval: task %s: even the prompt with only the gold documents (%d tokens) exceeds %d: %w",
			task, g.count(s.Prompt), budget, ErrDoesNotFit)
	}
	s.Task = task
	s.MaxNewTokens = qaTokensGenerated
	return s, nil
}
