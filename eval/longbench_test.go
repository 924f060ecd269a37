package eval

import (
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/lukv/lukv/models"
	"github.com/lukv/lukv/tokenizer"
)

// The fixtures in testdata/longbench are handmade: config/ holds prompts of our own
// wording in LongBench's dataset2prompt/dataset2maxlen format, data/ a few jsonl lines per
// dataset in LongBench's format.
var (
	lbData   = filepath.Join("testdata", "longbench", "data")
	lbConfig = filepath.Join("testdata", "longbench", "config")
)

func loadLB(t *testing.T, opt LongBenchOptions) []Sample {
	t.Helper()
	if opt.Dir == "" {
		opt.Dir = lbData
	}
	if opt.ConfigDir == "" {
		opt.ConfigDir = lbConfig
	}
	s, err := LoadLongBench(opt)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestLoadLongBenchPrompts: every fixture dataset with a prompt is loaded in pred.py's
// order, and Context/Question split each template at its context.
func TestLoadLongBenchPrompts(t *testing.T) {
	samples := loadLB(t, LongBenchOptions{})
	var tasks []string
	for _, s := range samples {
		tasks = append(tasks, s.Task)
		if s.Prompt != s.Context+s.Question {
			t.Errorf("%s: Prompt is not Context+Question", s.Task)
		}
	}
	// qasper has a prompt but no data, notes data but no prompt: both left out; the blank
	// line in hotpotqa.jsonl is skipped.
	want := []string{"longbench/hotpotqa", "longbench/hotpotqa", "longbench/hotpotqa", "longbench/musique",
		"longbench/gov_report", "longbench/gov_report", "longbench/trec", "longbench/trec", "longbench/lcc"}
	if !reflect.DeepEqual(tasks, want) {
		t.Fatalf("tasks = %v, want %v", tasks, want)
	}
	check := func(s Sample, ctx, q string, gold []string, gen int) {
		t.Helper()
		if s.Context != ctx || s.Question != q {
			t.Errorf("%s: split\n Context  %q\n Question %q\nwant\n Context  %q\n Question %q", s.Task, s.Context, s.Question, ctx, q)
		}
		if !reflect.DeepEqual(s.Gold, gold) || s.MaxNewTokens != gen {
			t.Errorf("%s: Gold %q MaxNewTokens %d, want %q %d", s.Task, s.Gold, s.MaxNewTokens, gold, gen)
		}
	}
	check(samples[0],
		"Read the passages and reply with a short answer.\n\nPassages:\nPassage 1:\nLyon lies where the Rhone meets the Saone.\nPassage 2:\nParis lies on the Seine.",
		"\n\nQuestion: Which river runs through Lyon?\nShort answer:",
		[]string{"the Rhone", "Rhone and Saone"}, 8)
	// musique's template asks first: the input stays in Context.
	check(samples[3],
		"Question first: Who built the bridge?\n\nPassages:\nPassage 1:\nThe old bridge was built by Ana.",
		"\n\nAnswer:", []string{"Ana"}, 8)
	check(samples[5], "Summarise this report.\n\nA short report: all funds were spent.", "\n\nSummary:",
		[]string{"All funds were spent."}, 16)
	check(samples[6], "Classify the question type. Examples:\n\nQuestion: What is NASA?\nType: Abbreviation\nQuestion: Where is Rome?\nType: Location",
		"\nQuestion: Who wrote Hamlet?\nType:", []string{"Human being"}, 4)
	// Escaped braces in the template become literal; braces in the data stay as they are.
	check(samples[8], "Continue the code {one line}.\ndef add(a, b):\n    \"\"\"Return {a + b}.\"\"\"\n", "Next line:\n",
		[]string{"    return a + b"}, 12)
	if len(samples[6].AllClasses) != 6 || samples[6].AllClasses[3] != "Human being" || samples[0].AllClasses != nil {
		t.Errorf("AllClasses: trec %q, hotpotqa %q", samples[6].AllClasses, samples[0].AllClasses)
	}

	// Samples and Datasets select.
	got := loadLB(t, LongBenchOptions{Datasets: []string{"trec", "hotpotqa"}, Samples: 1})
	if len(got) != 2 || got[0].Task != "longbench/trec" || got[1].Task != "longbench/hotpotqa" || got[1].Question != samples[0].Question {
		t.Errorf("Datasets [trec hotpotqa], Samples 1: got %d samples %v", len(got), got)
	}
}

// TestLoadLongBenchE: a LongBench-E file uses its dataset's prompt and scores with its metric.
func TestLoadLongBenchE(t *testing.T) {
	dir := t.TempDir()
	data, err := os.ReadFile(filepath.Join(lbData, "musique.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "musique_e.jsonl"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	s := loadLB(t, LongBenchOptions{Dir: dir})
	if len(s) != 1 || s[0].Task != "longbench/musique_e" || s[0].MaxNewTokens != 8 || !strings.HasPrefix(s[0].Context, "Question first:") {
		t.Fatalf("musique_e: %+v", s)
	}
	if ScoreSample(s[0], "Ana") != 1 {
		t.Error("musique_e not scored with qa_f1")
	}
}

func lukvTinyTokenizer(t *testing.T) *tokenizer.Tokenizer {
	t.Helper()
	dir, err := models.DefaultDir()
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestLongBenchTruncation: a long context loses its middle so that the prompt as a runner
// tokenizes it fits MaxTokens - MaxNewTokens, with little to spare; its two ends and the
// question stay; a prompt that fits is unchanged. Run with a byte-level tokenizer (the
// default model's) and a SentencePiece-style one.
func TestLongBenchTruncation(t *testing.T) {
	sp, err := tokenizer.Load(filepath.Join("..", "tests", "testdata", "tokenizers", "sp_bytefallback.tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	full := loadLB(t, LongBenchOptions{Datasets: []string{"gov_report"}})
	head := "Summarise this report.\n\n"
	ctx := strings.TrimPrefix(full[0].Context, head)
	for name, tok := range map[string]*tokenizer.Tokenizer{"lukv-tiny": lukvTinyTokenizer(t), "sp_bytefallback": sp} {
		fullN := len(tok.Encode(full[0].Context, true)) + len(tok.Encode(full[0].Question, false))
		const maxTokens = 200
		budget := maxTokens - 16
		if fullN <= maxTokens {
			t.Fatalf("%s: the long fixture has only %d tokens", name, fullN)
		}
		got := loadLB(t, LongBenchOptions{Datasets: []string{"gov_report"}, MaxTokens: maxTokens, Tokenizer: tok})
		long, short := got[0], got[1]
		n := len(tok.Encode(long.Context, true)) + len(tok.Encode(long.Question, false))
		if n > budget || n < budget-4 {
			t.Errorf("%s: truncated prompt has %d tokens, want %d or a few less", name, n, budget)
		}
		if long.Question != full[0].Question || long.Prompt != long.Context+long.Question {
			t.Errorf("%s: question changed: %q", name, long.Question)
		}
		if !strings.HasPrefix(long.Context, head+ctx[:60]) || !strings.HasSuffix(long.Context, ctx[len(ctx)-60:]) {
			t.Errorf("%s: the context's ends are not kept: %q", name, long.Context)
		}
		if strings.Contains(long.Context, "Section 30:") || len(long.Context) >= len(full[0].Context) {
			t.Errorf("%s: the middle was not cut: %q", name, long.Context)
		}
		if !reflect.DeepEqual(short, full[1]) {
			t.Errorf("%s: a prompt that fits was changed: %q", name, short.Context)
		}
		// A budget smaller than the prompt without context cannot be met.
		if _, err := LoadLongBench(LongBenchOptions{Dir: lbData, ConfigDir: lbConfig, Datasets: []string{"gov_report"}, MaxTokens: 20, Tokenizer: tok}); err == nil || !strings.Contains(err.Error(), "gov_report.jsonl:1") {
			t.Errorf("%s: budget 20-16 tokens: error %v, want one naming gov_report.jsonl:1", name, err)
		}
	}
}

// writeLB writes files (name -> content) into a new folder.
func writeLB(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLoadLongBenchErrors(t *testing.T) {
	good := `{"input": "q", "context": "c", "answers": ["a"], "all_classes": null}` + "\n"
	prompt := `{"hotpotqa": "{context} Q: {input}"}`
	maxlen := `{"hotpotqa": 8}`
	cfg := writeLB(t, map[string]string{"dataset2prompt.json": prompt, "dataset2maxlen.json": maxlen})
	cases := []struct {
		name      string
		opt       LongBenchOptions
		data, cfg map[string]string // nil: a good folder
		want      string            // in the error
	}{
		{name: "no config files", cfg: map[string]string{}, want: "dataset2prompt.json is missing"},
		{name: "no maxlen file", cfg: map[string]string{"dataset2prompt.json": prompt}, want: "dataset2maxlen.json is missing"},
		{name: "bad config JSON", cfg: map[string]string{"dataset2prompt.json": "{", "dataset2maxlen.json": maxlen}, want: "dataset2prompt.json"},
		{name: "no maxlen entry", cfg: map[string]string{"dataset2prompt.json": prompt, "dataset2maxlen.json": "{}"}, want: `dataset2maxlen.json has no positive length for dataset "hotpotqa"`},
		{name: "malformed line", data: map[string]string{"hotpotqa.jsonl": good + `{"input": "q", "context":` + "\n"}, want: "hotpotqa.jsonl:2: bad JSON"},
		{name: "missing answers", data: map[string]string{"hotpotqa.jsonl": good + "\n" + `{"input": "q", "context": "c"}`}, want: `hotpotqa.jsonl:3: missing field "answers"`},
		{name: "null context", data: map[string]string{"hotpotqa.jsonl": `{"input": "q", "context": null, "answers": []}`}, want: `hotpotqa.jsonl:1: missing field "context"`},
		{name: "answers not strings", data: map[string]string{"hotpotqa.jsonl": `{"input": "q", "context": "c", "answers": [1]}`}, want: `field "answers"`},
		{name: "unknown field in template", cfg: map[string]string{"dataset2prompt.json": `{"hotpotqa": "{context} {question}"}`, "dataset2maxlen.json": maxlen}, want: "unsupported field {question}"},
		{name: "no context in template", cfg: map[string]string{"dataset2prompt.json": `{"hotpotqa": "Q: {input}"}`, "dataset2maxlen.json": maxlen}, want: "{context} appears 0 times"},
		{name: "single brace", cfg: map[string]string{"dataset2prompt.json": `{"hotpotqa": "{context} }"}`, "dataset2maxlen.json": maxlen}, want: "single '}'"},
		{name: "no data file", opt: LongBenchOptions{Datasets: []string{"hotpotqa"}}, data: map[string]string{}, want: "hotpotqa.jsonl"},
		{name: "no prompt for dataset", opt: LongBenchOptions{Datasets: []string{"qasper"}}, want: `no prompt for dataset "qasper"`},
		{name: "nothing to load", data: map[string]string{"notes.jsonl": good}, want: "no <dataset>.jsonl"},
		{name: "MaxTokens without tokenizer", opt: LongBenchOptions{MaxTokens: 100}, want: "needs a Tokenizer"},
	}
	for _, c := range cases {
		opt := c.opt
		opt.Dir = writeLB(t, map[string]string{"hotpotqa.jsonl": good})
		if c.data != nil {
			opt.Dir = writeLB(t, c.data)
		}
		opt.ConfigDir = cfg
		if c.cfg != nil {
			opt.ConfigDir = writeLB(t, c.cfg)
		}
		_, err := LoadLongBench(opt)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
	// The good folder loads.
	s, err := LoadLongBench(LongBenchOptions{Dir: writeLB(t, map[string]string{"hotpotqa.jsonl": good}), ConfigDir: cfg})
	if err != nil || len(s) != 1 || s[0].Prompt != "c Q: q" {
		t.Errorf("good folder: %v %v", s, err)
	}
	if _, err := LoadLongBench(LongBenchOptions{ConfigDir: cfg}); err == nil {
		t.Error("no Dir: no error")
	}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestQAF1(t *testing.T) {
	for _, c := range []struct {
		pred, gold string
		want       float64
	}{
		{"The cat sat.", "a cat", 2.0 / 3},      // "cat sat" vs "cat": P 1/2, R 1
		{"U.S.A!", "usa", 1},                    // punctuation dropped, lower case
		{"Theater", "theater", 1},               // "the" only as a whole word
		{"an apple", "The Apple", 1},            // articles dropped
		{"the an a", "a", 0},                    // both empty after normalisation
		{"", "cat", 0},                          // empty prediction
		{"cat cat dog", "cat dog dog", 2.0 / 3}, // multiset overlap: 2 of 3 each way
		{"éa", "é", 0},                          // Python's \b is Unicode: "a" after "é" is no word
		{"x\u00a0y\x1cz", "x y z", 1},           // Python's whitespace
		{"Rhone river", "the Rhone", 2.0 / 3},   // P 1/2, R 1
		{"1,000 people", "1000 people!", 1},     // "," dropped inside a number
		{"in 3 days", "three days", 0.4},        // P 1/3, R 1/2: 2(1/6)/(5/6)
	} {
		if got := QAF1(c.pred, c.gold); !near(got, c.want) {
			t.Errorf("QAF1(%q, %q) = %v, want %v", c.pred, c.gold, got, c.want)
		}
	}
}

func TestRougeL(t *testing.T) {
	const eps = 1e-8 // rouge's F = 2PR/(P+R+1e-8)
	f := func(p, r float64) float64 { return 2 * p * r / (p + r + eps) }
	for _, c := range []struct {
		pred, gold string
		want       float64
	}{
		{"the cat sat on the mat", "the cat sat on the mat", f(1, 1)},
		{"the cat", "the cat sat on the mat", f(1, 2.0/5)}, // 5 distinct reference words
		{"The cat", "the cat", f(0.5, 0.5)},                // case-sensitive
		{"cat, sat", "cat sat", f(0.5, 0.5)},               // no punctuation stripping
		// Sentences split at ".": the LCS union covers "cat sat" and "mat" (token-level LCS
		// over the whole text would give 2 of 3).
		{"cat sat. mat", "mat cat sat", f(1, 1)},
		// Word sets: repeated words count once ({a, b} both sides).
		{"a a a b", "a b", f(1, 1)},
		{"a b c d", "d c b a", f(0.25, 0.25)}, // LCS of one word
		{"", "cat", 0},                        // empty: rouge raises, LongBench scores 0
		{"...", "cat", 0},
		{"cat", "", 0},
		{"dog", "cat", 0},
	} {
		if got := RougeL(c.pred, c.gold); !near(got, c.want) {
			t.Errorf("RougeL(%q, %q) = %v, want %v", c.pred, c.gold, got, c.want)
		}
	}
}

func TestClassificationScore(t *testing.T) {
	classes := []string{"Abbreviation", "Entity", "Description", "Human being", "Location", "Numeric value"}
	for _, c := range []struct {
		pred, gold string
		classes    []string
		want       float64
	}{
		{"Entity", "Entity", classes, 1},
		{"Entity or Description", "Entity", classes, 0.5},
		{"Location", "Entity", classes, 0},
		{"entity", "Entity", classes, 0}, // case-sensitive
		{"", "Entity", classes, 0},
		{"Entity", "Entity", nil, 0},
		// "entity" is part of the gold class and dropped.
		{"Other entity", "Other entity", []string{"entity", "Other entity"}, 1},
		// Python removes from the list it iterates: after dropping "a" it skips "b", which
		// stays; LongBench scores 1/2 here, not 1.
		{"ab", "ab", []string{"a", "b", "ab"}, 0.5},
	} {
		if got := ClassificationScore(c.pred, c.gold, c.classes); !near(got, c.want) {
			t.Errorf("ClassificationScore(%q, %q, %q) = %v, want %v", c.pred, c.gold, c.classes, got, c.want)
		}
	}
}

func TestCountAndRetrievalScore(t *testing.T) {
	for _, c := range []struct {
		name       string
		fn         func(string, string) float64
		pred, gold string
		want       float64
	}{
		{"count", CountScore, "There are 7 unique paragraphs out of 12.", "7", 0.5},
		{"count", CountScore, "7", "7", 1},
		{"count", CountScore, "07", "7", 0}, // digit strings compared
		{"count", CountScore, "seven", "7", 0},
		{"count", CountScore, "", "7", 0},
		{"count", CountScore, "7 or ٣", "7", 0.5}, // Python's \d takes any decimal digit
		{"retrieval", RetrievalScore, "Paragraph 12", "Paragraph 12", 1},
		{"retrieval", RetrievalScore, "Paragraph 12 or Paragraph 3", "Paragraph 12", 0.5},
		{"retrieval", RetrievalScore, "The answer is 12.", "Paragraph 12", 1},
		{"retrieval", RetrievalScore, "Paragraph 1", "Paragraph 12", 0},
		{"retrieval", RetrievalScore, "no idea", "Paragraph 12", 0},
		{"retrieval", RetrievalScore, "12", "12", 0}, // gold without "Paragraph N"
		{"retrieval_zh", RetrievalScoreZh, "答案是段落5和段落6", "段落5", 0.5},
		{"retrieval_zh", RetrievalScoreZh, "段落5", "段落5", 1},
	} {
		if got := c.fn(c.pred, c.gold); !near(got, c.want) {
			t.Errorf("%s(%q, %q) = %v, want %v", c.name, c.pred, c.gold, got, c.want)
		}
	}
}

func TestCodeSim(t *testing.T) {
	for _, c := range []struct {
		pred, gold string
		want       float64
	}{
		{"x = 1\ny = 2", "x = 1", 1},
		{"\n\n# a comment\n```python\n// note\nreturn a + b\n", "return a + b", 1}, // skipped lines
		{"# only\n// comments", "x", 0},
		{"", "", 1}, // fuzz.ratio of equal strings
		{"abcd", "abce", 0.75},
		{"abc", "xbc", 0.67}, // 2*2/6 rounded to a percent
		// difflib takes the longest block first ("aa" at the end), leaving M=2 of an LCS of
		// 3: 50, where a Levenshtein ratio would give 75.
		{"aaaa", "abaa", 0.5},
		// M=1 of 16 code points: 12.5 rounds half to even.
		{"abbbbbbb", "accccccc", 0.12},
		// autojunk: in a gold of 200 code points, "a" and "b" are too common to start a
		// match (without autojunk "ab" would match: 0.02) ...
		{"cab", strings.Repeat("ab", 100), 0},
		// ... but they still extend a match at the start of the range.
		{"ab", strings.Repeat("ab", 100), 0.02},
	} {
		if got := CodeSim(c.pred, c.gold); !near(got, c.want) {
			t.Errorf("CodeSim(%q, %q) = %v, want %v", c.pred, c.gold, got, c.want)
		}
	}
}

func TestChineseApproximations(t *testing.T) {
	for _, c := range []struct {
		name       string
		fn         func(string, string) float64
		pred, gold string
		want       float64
	}{
		{"qa_f1_zh", QAF1Zh, "北京", "北京市", 0.8},       // per character: P 1, R 2/3
		{"qa_f1_zh", QAF1Zh, "北京。", "北京", 1},         // punctuation tokens dropped
		{"qa_f1_zh", QAF1Zh, "GPT4 模型", "gpt4", 0.5}, // ASCII runs are one token, lower-cased
		{"rouge_zh", RougeLZh, "北京市", "北京", 2 * (2.0 / 3) / (1 + 2.0/3 + 1e-8)},
		{"rouge_zh", RougeLZh, "", "北京", 0},
	} {
		if got := c.fn(c.pred, c.gold); !near(got, c.want) {
			t.Errorf("%s(%q, %q) = %v, want %v", c.name, c.pred, c.gold, got, c.want)
		}
	}
}

func TestLongBenchScore(t *testing.T) {
	classes := []string{"Entity", "Location"}
	for _, c := range []struct {
		dataset, pred string
		answers       []string
		want          float64
	}{
		// trec, triviaqa, samsum, lsht: only the first line counts.
		{"trec", "\nEntity\nQuestion: Where? Type: Location", []string{"Entity"}, 1},
		{"triviaqa", "Paris\nAnswer: Lyon", []string{"Lyon", "paris"}, 1},
		// Others see the whole prediction.
		{"hotpotqa", "Paris\nLyon", []string{"Paris"}, 2.0 / 3},
		// The max over answers.
		{"hotpotqa", "the cat", []string{"dog", "a cat", "cat food"}, 1},
		{"longbench/qasper_e", "cat", []string{"cat"}, 1},
		{"passage_retrieval_en", "Paragraph 3", []string{"Paragraph 3"}, 1},
		{"lcc", "return x\n", []string{"return x"}, 1},
		{"hotpotqa", "cat", nil, 0},
		{"no_such_dataset", "cat", []string{"cat"}, 0},
	} {
		if got := LongBenchScore(c.dataset, c.pred, c.answers, classes); !near(got, c.want) {
			t.Errorf("LongBenchScore(%s, %q, %q) = %v, want %v", c.dataset, c.pred, c.answers, got, c.want)
		}
	}
	lb := Sample{Task: "longbench/trec", Gold: []string{"Entity"}, AllClasses: classes}
	ruler := Sample{Task: "niah_single_1", Gold: []string{"1234567", "7654321"}}
	if ScoreSample(lb, "Entity or Location") != 0.5 || ScoreSample(ruler, "1234567") != 0.5 {
		t.Error("ScoreSample does not dispatch to LongBench's and RULER's metrics")
	}
}

func TestLongBenchDatasets(t *testing.T) {
	d := LongBenchDatasets()
	if len(d) != 16 || d[0] != "narrativeqa (qa_f1_score)" || d[len(d)-1] != "repobench-p (code_sim_score)" {
		t.Errorf("LongBenchDatasets() = %v", d)
	}
	for _, s := range d {
		if strings.Contains(s, "_zh") || strings.Contains(s, "dureader") {
			t.Errorf("Chinese dataset in the English list: %s", s)
		}
	}
	if LongBenchUsesChat("trec") || LongBenchUsesChat("longbench/lcc") || !LongBenchUsesChat("hotpotqa") {
		t.Error("LongBenchUsesChat wrong")
	}
	if LongBenchMetric("gov_report") != "rouge_score" || LongBenchMetric("longbench/trec_e") != "classification_score" || LongBenchMetric("nope") != "" {
		t.Error("LongBenchMetric wrong")
	}
}
