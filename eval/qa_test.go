package eval

import (
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
)

const (
	squadFixture   = "testdata/qa/squad_dev.json"
	hotpotFixture  = "testdata/qa/hotpotqa_dev_distractor.json"
	marrowMill     = "Marrowfield is a small river town built around an old stone mill."
	marrowBridge   = "The Marrowfield bridge has five arches of grey granite."
	marrowWinter   = "Winters in Marrowfield are long and damp."
	ostrelLamp     = "The Ostrel lighthouse stands on a rocky point"
	ostrelNeedle   = "Ships approaching Ostrel from the south"
	pellamDocument = "Pellam Observatory\nThe Pellam Observatory is a hilltop telescope station. At its opening the Saint Brin Choir sang three hymns."
)

// docWith returns the index of the one document of d starting with prefix.
func docWith(t *testing.T, d *QAData, prefix string) int {
	t.Helper()
	found := -1
	for i, doc := range d.Docs {
		if strings.HasPrefix(doc, prefix) {
			if found >= 0 {
				t.Fatalf("two documents start with %q", prefix)
			}
			found = i
		}
	}
	if found < 0 {
		t.Fatalf("no document starts with %q", prefix)
	}
	return found
}

func sortedInts(a []int) []int {
	b := append([]int(nil), a...)
	sort.Ints(b)
	return b
}

func TestLoadSQuAD(t *testing.T) {
	d, err := LoadSQuAD(squadFixture)
	if err != nil {
		t.Fatal(err)
	}
	// 6 paragraphs, one repeated across articles -> 5 documents; 7 questions, 2 impossible.
	if d.Dataset != "SQuAD" || len(d.Docs) != 5 || len(d.Questions) != 5 {
		t.Fatalf("dataset %s, %d docs, %d questions; want SQuAD, 5, 5", d.Dataset, len(d.Docs), len(d.Questions))
	}
	if !sort.StringsAreSorted(d.Docs) {
		t.Error("documents not sorted")
	}
	var queries []string
	for _, q := range d.Questions {
		queries = append(queries, q.Query)
	}
	wantQ := []string{"In what year was the Marrowfield mill raised?", "On which day does the Marrowfield market open?",
		"How many arches does the Marrowfield bridge have?", "Who first lit the Ostrel lamp?",
		"What reefs must ships from the south avoid near Ostrel?"}
	if !reflect.DeepEqual(queries, wantQ) {
		t.Errorf("questions %q, want %q", queries, wantQ)
	}
	mill, bridge, winter := docWith(t, d, marrowMill), docWith(t, d, marrowBridge), docWith(t, d, marrowWinter)
	lamp, needle := docWith(t, d, ostrelLamp), docWith(t, d, ostrelNeedle)
	q0 := d.Questions[0]
	if !reflect.DeepEqual(q0.Answers, []string{"1742", "in 1742"}) || !reflect.DeepEqual(q0.Gold, []int{mill}) {
		t.Errorf("question 0: answers %q gold %v, want [1742 in 1742] [%d]", q0.Answers, q0.Gold, mill)
	}
	if got, want := sortedInts(q0.More), sortedInts([]int{bridge, winter}); !reflect.DeepEqual(got, want) {
		t.Errorf("question 0 more %v, want %v", got, want)
	}
	q3 := d.Questions[3]
	if !reflect.DeepEqual(q3.Gold, []int{lamp}) || !reflect.DeepEqual(sortedInts(q3.More), sortedInts([]int{needle, winter})) {
		t.Errorf("question 3 gold %v more %v, want [%d] and {%d %d}", q3.Gold, q3.More, lamp, needle, winter)
	}
	if !reflect.DeepEqual(d.Questions[2].Gold, []int{bridge}) {
		t.Errorf("question 2 gold %v, want [%d]", d.Questions[2].Gold, bridge)
	}
}

func TestLoadHotpotQA(t *testing.T) {
	d, err := LoadHotpotQA(hotpotFixture)
	if err != nil {
		t.Fatal(err)
	}
	// 13 paragraphs, 2 shared -> 11 listed, Kessa and Greywater twice -> 9 documents; the
	// entry with an empty answer is left out but its paragraph stays a document.
	if d.Dataset != "HotpotQA" || len(d.Docs) != 9 || len(d.Questions) != 3 {
		t.Fatalf("dataset %s, %d docs, %d questions; want HotpotQA, 9, 3", d.Dataset, len(d.Docs), len(d.Questions))
	}
	pellam := docWith(t, d, "Pellam Observatory\n")
	if d.Docs[pellam] != pellamDocument {
		t.Errorf("document %q, want %q", d.Docs[pellam], pellamDocument)
	}
	docWith(t, d, "Vell Spring\n")
	kessa := docWith(t, d, "Kessa Valley\n")
	h1, h2 := d.Questions[0], d.Questions[1]
	if len(h1.Gold) != 4 || h1.Gold[0] != pellam || h1.Gold[2] != kessa || h2.Gold[0] != kessa || len(h2.Gold) != 3 {
		t.Errorf("gold %v / %v; want 4 docs starting at %d with Kessa (%d) third, 3 docs starting with Kessa", h1.Gold, h2.Gold, pellam, kessa)
	}
	if !reflect.DeepEqual(h2.Answers, []string{"no"}) || h1.More != nil || d.Questions[2].Query != "What does the ferry that crosses the estuary near Halt carry?" {
		t.Errorf("questions %+v", d.Questions)
	}
}

func TestLoadQAErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	bad := write("bad.json", `{"data": [`)
	cases := []struct {
		name, path, want string
		load             func(string) (*QAData, error)
	}{
		{"squad missing", filepath.Join(dir, "none.json"), "none.json", LoadSQuAD},
		{"squad bad json", bad, "bad JSON", LoadSQuAD},
		{"squad not squad", write("arr.json", `[1, 2]`), "bad JSON", LoadSQuAD},
		{"squad no data", write("nodata.json", `{"version": "v2.0"}`), `no "data"`, LoadSQuAD},
		{"squad no context", write("noctx.json", `{"data": [{"paragraphs": [{"qas": []}]}]}`), `no "context"`, LoadSQuAD},
		{"squad impossible only", write("imp.json", `{"data": [{"paragraphs": [{"context": "c", "qas": [{"question": "q?", "answers": [], "is_impossible": true}]}]}]}`), "no usable questions", LoadSQuAD},
		{"hotpot missing", filepath.Join(dir, "none.json"), "none.json", LoadHotpotQA},
		{"hotpot bad json", bad, "bad JSON", LoadHotpotQA},
		{"hotpot given squad", squadFixture, "bad JSON", LoadHotpotQA},
		{"hotpot bad context", write("ctx.json", `[{"question": "q?", "answer": "a", "context": [["title"]]}]`), "context[0]", LoadHotpotQA},
		{"hotpot no answers", write("noans.json", `[{"question": "q?", "answer": "", "context": [["t", ["s."]]]}]`), "no usable questions", LoadHotpotQA},
	}
	for _, c := range cases {
		d, err := c.load(c.path)
		if err == nil || d != nil {
			t.Errorf("%s: got %v, %v; want an error", c.name, d, err)
			continue
		}
		if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), filepath.Base(c.path)) {
			t.Errorf("%s: error %q should name the file and contain %q", c.name, err, c.want)
		}
	}
}

func qaGen(t *testing.T, tok interface{ Encode(string, bool) []int }) *Generator {
	t.Helper()
	sq, err := LoadSQuAD(squadFixture)
	if err != nil {
		t.Fatal(err)
	}
	hp, err := LoadHotpotQA(hotpotFixture)
	if err != nil {
		t.Fatal(err)
	}
	return &Generator{Tokenizer: tok, Seed: 7, QA: map[string]*QAData{"qa_1": sq, "qa_2": hp}}
}

// TestMakeQA builds samples with the default model's tokenizer at a length where only some
// documents fit and at one where all documents repeat (qa.py's DOCS * repeats).
func TestMakeQA(t *testing.T) {
	tok := lukvTinyTokenizer(t)
	g := qaGen(t, tok)
	for _, task := range QATasks() {
		d := g.QA[task]
		maxDoc := 0
		for _, doc := range d.Docs {
			maxDoc = max(maxDoc, len(tok.Encode("Document 10:\n"+doc+"\n\n", false)))
		}
		for _, length := range []int{360, 2000} {
			for index := range 4 {
				s, err := g.Make(task, length, index)
				if err != nil {
					t.Fatalf("%s/%d/%d: %v", task, length, index, err)
				}
				q := d.Questions[index%len(d.Questions)]
				if s.Task != task || s.MaxNewTokens != 32 || s.Prompt != s.Context+s.Question || !reflect.DeepEqual(s.Gold, q.Answers) {
					t.Fatalf("%s/%d/%d: sample %+v", task, length, index, s)
				}
				if !strings.HasPrefix(s.Context, "Answer the question based on the given documents.") ||
					!strings.HasSuffix(s.Question, "\n\nQuestion: "+q.Query+" Answer:") ||
					!strings.HasPrefix(s.Question, "\n\nAnswer the question based on the given documents.") {
					t.Errorf("%s: template wrong: %q", task, s.Prompt)
				}
				for _, gi := range q.Gold {
					if !strings.Contains(s.Context, ":\n"+d.Docs[gi]+"\n\n") && !strings.HasSuffix(s.Context, ":\n"+d.Docs[gi]) {
						t.Errorf("%s/%d/%d: gold document %d missing", task, length, index, gi)
					}
				}
				nDocs := strings.Count(s.Context, "\nDocument ")
				if nDocs <= len(q.Gold) {
					t.Errorf("%s/%d/%d: %d documents, no distractor", task, length, index, nDocs)
				}
				for i := 1; i <= nDocs; i++ {
					if !strings.Contains(s.Context, "Document "+strconv.Itoa(i)+":\n") {
						t.Errorf("%s: document %d not numbered", task, i)
					}
				}
				if length == 360 {
					if nDocs >= len(d.Docs) {
						t.Errorf("%s/360: %d documents, want fewer than all %d", task, nDocs, len(d.Docs))
					}
					for _, doc := range d.Docs {
						if strings.Count(s.Context, ":\n"+doc) > 1 {
							t.Errorf("%s/360: document %q repeated", task, doc)
						}
					}
				}
				if length == 2000 && nDocs <= len(d.Docs) {
					t.Errorf("%s/2000: %d documents, want all %d repeated", task, nDocs, len(d.Docs))
				}
				n := len(tok.Encode(s.Prompt, true)) + s.MaxNewTokens
				if n > length || n < length-maxDoc-8 {
					t.Errorf("%s/%d/%d: %d tokens; want in (%d, %d]", task, length, index, n, length-maxDoc-8, length)
				}
				again, err := g.Make(task, length, index)
				if err != nil || !reflect.DeepEqual(s, again) {
					t.Errorf("%s/%d/%d: not deterministic", task, length, index)
				}
				if index > 0 {
					prev, _ := g.Make(task, length, index-1)
					if prev.Question == s.Question {
						t.Errorf("%s/%d: index %d and %d ask the same question", task, length, index-1, index)
					}
				}
			}
		}
		a, _ := g.Make(task, 2000, 0)
		g2 := *g
		g2.Seed = 8
		b, _ := g2.Make(task, 2000, 0)
		if a.Context == b.Context || a.Question != b.Question {
			t.Errorf("%s: another seed should reorder documents, not change the question", task)
		}
	}
}

// TestMakeQAPrefersArticle: with room for two distractors, a SQuAD question gets the other
// paragraphs of its own article (qa.py's more_context) before random documents.
func TestMakeQAPrefersArticle(t *testing.T) {
	g := qaGen(t, wsTok{})
	d := g.QA["qa_1"]
	seen := false
	for length := 100; length < 400; length += 2 {
		s, err := g.Make("qa_1", length, 0)
		if err != nil {
			continue
		}
		if strings.Count(s.Context, "\nDocument ") != 3 {
			continue
		}
		seen = true
		for _, p := range []string{marrowMill, marrowBridge, marrowWinter} {
			if !strings.Contains(s.Context, p) {
				t.Errorf("length %d: %q missing from a 3-document prompt", length, p)
			}
		}
		if strings.Contains(s.Context, "Ostrel") {
			t.Errorf("length %d: another article's paragraph chosen before the question's own article", length)
		}
	}
	if !seen {
		t.Fatalf("no length gave exactly 3 documents (%d docs)", len(d.Docs))
	}
}

func TestMakeQAErrors(t *testing.T) {
	g := newGen(t, wsTok{})
	for task, flag := range map[string]string{"qa_1": "--squad", "qa_2": "--hotpotqa"} {
		if _, err := g.Make(task, 2048, 0); err == nil || !strings.Contains(err.Error(), flag) || !strings.Contains(err.Error(), task) {
			t.Errorf("%s without data: error %v, want one naming %s", task, err, flag)
		}
	}
	g = qaGen(t, wsTok{})
	if _, err := g.Make("qa_1", 40, 0); err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Errorf("qa_1 at 40 tokens: error %v, want prompt too long", err)
	}
	if _, err := g.Make("qa_1", 20, 0); err == nil {
		t.Error("qa_1 at 20 tokens (below the 32 new tokens): no error")
	}
	if _, err := g.MakeQA("qa_3", 2048, 0); err == nil {
		t.Error("qa_3: no error")
	}
	if _, err := g.Make("qa_2", 2048, -1); err == nil {
		t.Error("negative index: no error")
	}
	g.Tokenizer = nil
	if _, err := g.Make("qa_1", 2048, 0); err == nil {
		t.Error("nil tokenizer: no error")
	}
}

// TestScoreQA: a QA sample is scored with string_match_part, so matching one of two gold
// answers gives 1 where string_match_all would give 0.5.
func TestScoreQA(t *testing.T) {
	g := qaGen(t, wsTok{})
	s, err := g.Make("qa_1", 600, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Gold) != 2 {
		t.Fatalf("gold %q, want two answers", s.Gold)
	}
	if Metric(s.Task) != "string_match_part" || ScoreSample(s, " It was 1742.\n") != 1 || ScoreSample(s, "1800") != 0 {
		t.Errorf("qa_1 scoring: metric %s, scores %v %v", Metric(s.Task), ScoreSample(s, " It was 1742.\n"), ScoreSample(s, "1800"))
	}
	if StringMatchAll("It was 1742.", s.Gold) != 0.5 {
		t.Error("fixture no longer distinguishes part from all")
	}
}
