package formats

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/lukv/lukv/eval"
)

// testConfig: the embedded evaluation haystack (one Devil's Dictionary entry a paragraph)
// plus a few code and manual paragraphs, and the embedded evaluation words.
func testConfig(seed uint64) Config {
	docs := append(eval.DefaultHaystack(),
		"func main() {\n\tfmt.Println(\"hello\")\n}",
		"NAME\n       ls - list directory contents\n\nSYNOPSIS\n       ls [OPTION]... [FILE]...")
	return Config{Filler: SplitDocuments(docs), Words: eval.DefaultWords(), Seed: seed}
}

func TestSplitTable(t *testing.T) {
	trained, held := Families(false), Families(true)
	if len(trained) < 6 || len(held) < 3 {
		t.Fatalf("trained %v, held out %v: want at least 6 and 3 families", trained, held)
	}
	for name := range heldOut {
		if familyByName(name) == nil {
			t.Errorf("split.go holds out %q, which is no family", name)
		}
	}
	seen := map[string]bool{}
	for _, f := range families {
		if seen[f.name] {
			t.Errorf("family %q defined twice", f.name)
		}
		seen[f.name] = true
	}
}

// The training generator cannot emit a held-out family: Make refuses each one by name, and
// many random draws (every family and task of the trained side) never produce one.
func TestTrainingNeverRendersHeldOut(t *testing.T) {
	g, err := NewTraining(testConfig(1))
	if err != nil {
		t.Fatal(err)
	}
	if got := g.Families(); !slices.Equal(got, Families(false)) {
		t.Fatalf("training generator families %v, want %v", got, Families(false))
	}
	for _, fam := range Families(true) {
		for _, task := range allTasks {
			_, err := g.Make(Spec{Family: fam, Task: task, Length: 1000, Depth: -1, Distractors: -1})
			if err == nil || !strings.Contains(err.Error(), "held out") {
				t.Errorf("Make(%s/%s) on the training generator: err %v, want a held-out refusal", fam, task, err)
			}
		}
	}
	r := rand.New(rand.NewPCG(7, 7))
	seen := map[string]bool{}
	for i := 0; i < 3000; i++ {
		s, err := g.Random(r, 250+r.IntN(1500))
		if err != nil {
			t.Fatalf("draw %d: %v", i, err)
		}
		if HeldOut(s.Family) || s.HeldOut {
			t.Fatalf("draw %d: training generator rendered held-out family %s", i, s.Family)
		}
		seen[s.Family+"/"+s.Task] = true
	}
	for _, fam := range Families(false) {
		for _, task := range familyByName(fam).tasks {
			if !seen[fam+"/"+task] {
				t.Errorf("3000 draws never rendered %s/%s", fam, task)
			}
		}
	}
}

var wordRE = map[string]*regexp.Regexp{}

func countWord(s, w string) int {
	re, ok := wordRE[w]
	if !ok {
		re = regexp.MustCompile(`\b` + regexp.QuoteMeta(w) + `\b`)
		wordRE[w] = re
	}
	return len(re.FindAllStringIndex(s, -1))
}

// Every family renders every one of its tasks, in both question positions, as a valid sample.
func TestEveryFamilyRenders(t *testing.T) {
	g, err := NewEvaluation(testConfig(2))
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Families()) != len(families) {
		t.Fatalf("evaluation generator has %d families, want all %d", len(g.Families()), len(families))
	}
	n := 0
	for _, fam := range AllFamilies() {
		for _, task := range familyByName(fam).tasks {
			for _, pos := range []Position{QuestionAfter, QuestionBefore} {
				for idx := 0; idx < 6; idx++ {
					length := []int{700, 1500, 4000}[idx%3]
					s, err := g.Make(Spec{Family: fam, Task: task, Length: length, Index: idx, Depth: -1, Distractors: -1, Question: pos})
					if err != nil {
						t.Fatalf("%s/%s: %v", fam, task, err)
					}
					checkSample(t, g, s, length, pos)
					n++
				}
			}
		}
	}
	t.Logf("%d samples checked", n)
}

func checkSample(t *testing.T, g *Generator, s Sample, length int, pos Position) {
	t.Helper()
	id := fmt.Sprintf("%s/%s q=%d", s.Family, s.Task, pos)
	if s.Prompt != s.Context+s.Question {
		t.Fatalf("%s: Prompt != Context + Question", id)
	}
	if c := g.count(s.Prompt); c > length {
		t.Fatalf("%s: prompt of %d tokens over length %d", id, c, length)
	}
	if len(s.Gold) == 0 || s.Answer == "" {
		t.Fatalf("%s: no gold (%v) or answer (%q)", id, s.Gold, s.Answer)
	}
	if s.HeldOut != HeldOut(s.Family) {
		t.Fatalf("%s: HeldOut %v", id, s.HeldOut)
	}
	if s.QuestionFirst != (pos == QuestionBefore) {
		t.Fatalf("%s: QuestionFirst %v", id, s.QuestionFirst)
	}
	for _, sn := range s.Snippets {
		if !strings.Contains(s.Context, sn) {
			t.Fatalf("%s: snippet %q not in the context", id, sn)
		}
	}
	// The answer scores 1, an empty and a wrong one 0.
	if sc := s.Score(s.Answer); sc != 1 {
		t.Fatalf("%s: answer %q scores %v against gold %v", id, s.Answer, sc, s.Gold)
	}
	if sc := s.Score(""); sc != 0 {
		t.Fatalf("%s: empty prediction scores %v", id, sc)
	}
	all := strings.Join(s.Snippets, "\n")
	switch s.Task {
	case "count":
		q, asked := s.Query, ""
		for _, c := range categories {
			if countWord(q, c) > 0 {
				asked = c
			}
		}
		want, _ := strconv.Atoi(s.Gold[0])
		if got := countWord(all, asked); asked == "" || got != want {
			t.Fatalf("%s: gold count %d, the snippets hold %d records of status %q (question %q)", id, want, got, asked, q)
		}
		if s.Score("There are "+strconv.Itoa(want+10)+".") != 0 {
			t.Fatalf("%s: a wrong count scores", id)
		}
	case "mostfrequent":
		top := countWord(all, s.Gold[0])
		for _, c := range categories {
			if c != s.Gold[0] && countWord(all, c) >= top {
				t.Fatalf("%s: gold %s (%d records) is not strictly the most frequent (%s: %d)", id, s.Gold[0], top, c, countWord(all, c))
			}
		}
	default:
		for _, v := range s.Gold {
			if c := strings.Count(s.Prompt, v); c != 1 {
				t.Fatalf("%s: gold %q occurs %d times in the prompt, want once", id, v, c)
			}
			if !strings.Contains(all, v) {
				t.Fatalf("%s: gold %q is in no snippet", id, v)
			}
		}
		if s.Score("nothing to see: 123") != 0 {
			t.Fatalf("%s: a wrong answer scores", id)
		}
	}
	if pos == QuestionBefore {
		q := s.Query
		if i := strings.Index(s.Context, q); i < 0 || i > strings.Index(s.Context, s.Snippets[0]) {
			t.Fatalf("%s: question-first sample has the question at %d, after the first fact", id, i)
		}
	}
	f := familyByName(s.Family)
	if f.chat {
		user := strings.Index(s.Prompt, ChatUserPrefix)
		if user < 0 || (user > 0 && !strings.HasPrefix(s.Prompt, ChatSystemPrefix)) || !strings.HasSuffix(s.Prompt, ChatAssistantPrefix) ||
			!strings.HasSuffix(s.Answer, ChatEndOfTurn) {
			t.Fatalf("%s: not in the chat format: %q ... %q, answer %q", id, head(s.Prompt), tail(s.Prompt), s.Answer)
		}
	}
	checkSyntax(t, id, s)
}

func head(s string) string { return s[:min(len(s), 40)] }
func tail(s string) string { return s[max(0, len(s)-40):] }

var (
	iniLine    = regexp.MustCompile(`^(\[[a-z0-9-]+\]|[a-z_]+ = (\S+|\$\{[a-z0-9-]+:[a-z_]+\})|)$`)
	pyAssign   = regexp.MustCompile(`^([A-Z0-9_]+ = ("[a-z0-9-]+"|[0-9]+|[A-Z0-9_]+)|export [A-Z0-9_]+=("[a-z0-9-]+"|[0-9]+|\$[A-Z0-9_]+)|const [A-Za-z0-9]+ = ("[a-z0-9-]+"|[0-9]+|[A-Za-z0-9]+))$`)
	funcDefine = regexp.MustCompile(`^(def [a-z0-9_]+\(\):\n    return \S+|func [A-Za-z0-9]+\(\) (int|string) \{\n\treturn \S+\n\})$`)
)

// checkSyntax parses the block of a structured family with a parser of that format.
func checkSyntax(t *testing.T, id string, s Sample) {
	t.Helper()
	f := familyByName(s.Family)
	if !f.block {
		return
	}
	if len(s.Snippets) != 1 {
		t.Fatalf("%s: block family with %d snippets", id, len(s.Snippets))
	}
	b := s.Snippets[0]
	switch s.Family {
	case "json":
		var v any
		if strings.HasPrefix(b, "[") {
			if err := json.Unmarshal([]byte(b), &v); err != nil {
				t.Fatalf("%s: JSON array does not parse: %v\n%s", id, err, b)
			}
		} else {
			for _, ln := range strings.Split(b, "\n") {
				if err := json.Unmarshal([]byte(ln), &v); err != nil {
					t.Fatalf("%s: JSON line %q does not parse: %v", id, ln, err)
				}
			}
		}
	case "yaml":
		var v []map[string]string
		if err := yaml.Unmarshal([]byte(b), &v); err != nil {
			t.Fatalf("%s: YAML does not parse: %v\n%s", id, err, b)
		}
		for _, rec := range v {
			if rec["name"] == "" || len(rec) != 2 {
				t.Fatalf("%s: YAML record %v: want name and one attribute", id, rec)
			}
		}
		if s.Task != "count" && s.Task != "mostfrequent" {
			found := false
			for _, rec := range v {
				for _, val := range rec {
					found = found || val == s.Gold[0]
				}
			}
			if !found {
				t.Fatalf("%s: YAML parses but no record holds the gold %q", id, s.Gold[0])
			}
		}
	case "csv":
		rows, err := csv.NewReader(strings.NewReader(b)).ReadAll()
		if err != nil {
			t.Fatalf("%s: CSV does not parse: %v\n%s", id, err, b)
		}
		if rows[0][0] != "name" || len(rows) < 2 {
			t.Fatalf("%s: CSV header %v, %d rows", id, rows[0], len(rows))
		}
	case "ini":
		for _, ln := range strings.Split(b, "\n") {
			if !iniLine.MatchString(ln) {
				t.Fatalf("%s: not an INI line: %q", id, ln)
			}
		}
	case "code_assign":
		for _, ln := range strings.Split(b, "\n") {
			if !pyAssign.MatchString(ln) {
				t.Fatalf("%s: not an assignment: %q", id, ln)
			}
		}
	case "funcdef":
		for _, d := range strings.Split(b, "\n\n") {
			if !funcDefine.MatchString(d) {
				t.Fatalf("%s: not a function definition: %q", id, d)
			}
		}
	case "kv_lines":
		lines := strings.Split(b, "\n")
		if !strings.HasPrefix(lines[0], "# ") || len(lines) < 2 {
			t.Fatalf("%s: key-value block %q", id, head(b))
		}
	default:
		t.Fatalf("%s: block family without a syntax check", id)
	}
}

// Multi-hop references resolve to the gold value by following the rendered references.
func TestMultihopResolves(t *testing.T) {
	g, err := NewEvaluation(testConfig(3))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		s, err := g.Make(Spec{Family: "json", Task: "multihop", Length: 800, Index: i, Depth: -1, Distractors: 3})
		if err != nil {
			t.Fatal(err)
		}
		var recs []map[string]any
		text := s.Snippets[0]
		if !strings.HasPrefix(text, "[") {
			text = "[" + strings.ReplaceAll(text, "\n", ",") + "]"
		}
		if err := json.Unmarshal([]byte(text), &recs); err != nil {
			t.Fatal(err)
		}
		byName := map[string]any{}
		for _, r := range recs {
			for k, v := range r {
				if k != "name" {
					byName[r["name"].(string)] = v
				}
			}
		}
		// The asked key is the one whose name appears in the question.
		var cur any
		for name := range byName {
			if strings.Contains(s.Query, `"`+name+`"`) {
				cur = byName[name]
			}
		}
		for hops := 0; hops < 4; hops++ {
			m, ok := cur.(map[string]any)
			if !ok {
				break
			}
			cur = byName[m["same_as"].(string)]
		}
		if cur != s.Gold[0] {
			t.Fatalf("sample %d: following the references gives %v, gold %v\n%s\nQ: %s", i, cur, s.Gold, s.Snippets[0], s.Question)
		}
	}
}

func TestMakeDeterministicAndDepth(t *testing.T) {
	g, err := NewEvaluation(testConfig(4))
	if err != nil {
		t.Fatal(err)
	}
	spec := Spec{Family: "narrative", Task: "single", Length: 3000, Index: 5, Depth: -1, Distractors: -1}
	a, _ := g.Make(spec)
	b, _ := g.Make(spec)
	if a.Prompt != b.Prompt || !slices.Equal(a.Gold, b.Gold) {
		t.Fatal("Make is not deterministic")
	}
	spec.Index = 6
	if c, _ := g.Make(spec); c.Prompt == a.Prompt {
		t.Fatal("different indices gave the same sample")
	}
	for _, d := range []int{0, 50, 100} {
		s, err := g.Make(Spec{Family: "sentence", Task: "single", Length: 4000, Index: 1, Depth: d, Distractors: 0, Question: QuestionAfter})
		if err != nil {
			t.Fatal(err)
		}
		if s.Depth < d-10 || s.Depth > d+10 {
			t.Errorf("depth %d requested, gold at %d%% of the context", d, s.Depth)
		}
	}
}

func TestErrors(t *testing.T) {
	if _, err := NewTraining(Config{Words: eval.DefaultWords()}); err == nil || !strings.Contains(err.Error(), "Filler") {
		t.Errorf("no filler: err %v", err)
	}
	if _, err := NewTraining(Config{Filler: Paragraphs{"x"}, Words: []string{"a"}}); err == nil || !strings.Contains(err.Error(), "Words") {
		t.Errorf("few words: err %v", err)
	}
	g, _ := NewEvaluation(testConfig(5))
	for _, tc := range []struct {
		spec Spec
		want string
	}{
		{Spec{Family: "nope", Task: "single", Length: 500}, "unknown family"},
		{Spec{Family: "json", Task: "nope", Length: 500}, "no task"},
		{Spec{Family: "ini", Task: "multivalue", Length: 500}, "no task"},
		{Spec{Family: "json", Task: "single", Length: 10}, "exceeds the length"},
		{Spec{Family: "json", Task: "single", Length: 500, Depth: 101}, "over 100"},
	} {
		if _, err := g.Make(tc.spec); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err %v, want %q", tc.spec, err, tc.want)
		}
	}
}

func TestSplitDocuments(t *testing.T) {
	long := strings.Repeat("word ", 700) // 3500 bytes, one line
	p := SplitDocuments([]string{"a\n\n\n\nb\nc", "  \n\n" + long})
	if p.Len() < 5 || p.Paragraph(0) != "a" || p.Paragraph(1) != "b\nc" {
		t.Fatalf("paragraphs %q", p)
	}
	for i := 0; i < p.Len(); i++ {
		if len(p.Paragraph(i)) > maxParagraph {
			t.Fatalf("paragraph %d has %d bytes", i, len(p.Paragraph(i)))
		}
	}
}

func TestScoreMetrics(t *testing.T) {
	s := Sample{Gold: []string{"7"}, Metric: MetricNumber}
	for pred, want := range map[string]float64{" 7.": 1, "17": 0, "There are 7 entries.": 1, "seven": 0, "7 or 8": 1} {
		if got := s.Score(pred); got != want {
			t.Errorf("number_match %q: %v, want %v", pred, got, want)
		}
	}
	m := Sample{Gold: []string{"1234567", "7654321"}, Metric: MetricMatchAll}
	if got := m.Score("1234567 and 7654321"); got != 1 {
		t.Errorf("match_all both: %v", got)
	}
	if got := m.Score("1234567"); got != 0.5 {
		t.Errorf("match_all one of two: %v", got)
	}
	e := m.EvalSample()
	if e.Task != "/" || len(e.Gold) != 2 {
		t.Errorf("EvalSample %+v", e)
	}
}
