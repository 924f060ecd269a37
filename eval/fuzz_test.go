package eval

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"unicode/utf8"
)

// addFileSeeds adds each file's bytes to f's seed corpus, and with lines, each of its
// lines too.
func addFileSeeds(f *testing.F, lines bool, paths ...string) {
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		if lines {
			sc := bufio.NewScanner(bytes.NewReader(b))
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				f.Add(append([]byte(nil), sc.Bytes()...))
			}
		}
	}
}

// FuzzLongBenchLine feeds arbitrary bytes as one LongBench jsonl line: no panic, and an
// accepted line is a JSON object with input, context and answers.
func FuzzLongBenchLine(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "longbench", "data", "*.jsonl"))
	addFileSeeds(f, true, files...)
	f.Add([]byte(`{"input": "q", "context": "c", "answers": ["a"], "all_classes": null}`))
	f.Add([]byte(`{"input": 1}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := parseLongBenchLine(line)
		if err != nil {
			return
		}
		var fields map[string]json.RawMessage
		if json.Unmarshal(line, &fields) != nil {
			t.Fatalf("accepted a line that is not a JSON object: %q", line)
		}
		for _, k := range []string{"input", "context", "answers"} {
			if v, ok := fields[k]; !ok || string(v) == "null" {
				t.Fatalf("accepted a line without %q: %q", k, line)
			}
		}
		_ = r
	})
}

// FuzzLongBenchPrompt feeds arbitrary dataset2prompt.json templates: no panic; an
// accepted template has {context} once, and filled with an empty input it is no longer
// than the template less its fields.
func FuzzLongBenchPrompt(f *testing.F) {
	var prompts map[string]string
	b, err := os.ReadFile(filepath.Join("testdata", "longbench", "config", "dataset2prompt.json"))
	if err != nil {
		f.Fatal(err)
	}
	if err := json.Unmarshal(b, &prompts); err != nil {
		f.Fatal(err)
	}
	for _, p := range prompts {
		f.Add(p)
	}
	f.Add("{context}{input}{{}}")
	f.Add("{context")
	f.Fuzz(func(t *testing.T, s string) {
		tm, err := parseTemplate(s)
		if err != nil {
			return
		}
		if n := strings.Count(s, "{context}"); n < 1 {
			t.Fatalf("accepted %q without {context}", s)
		}
		head, tail := tm.fill("")
		if len(head)+len(tail) > len(s)-len("{context}") {
			t.Fatalf("%q filled with nothing gives %d bytes, more than its text", s, len(head)+len(tail))
		}
		h2, t2 := tm.fill("INPUT")
		if strings.Count(s, "{input}") > 0 && len(h2)+len(t2) <= len(head)+len(tail) {
			t.Fatalf("%q: the input is not filled in", s)
		}
	})
}

// FuzzSplitLines feeds arbitrary haystack / words files: every line kept is non-empty,
// trimmed and has no newline, and no non-space text is lost.
func FuzzSplitLines(f *testing.F) {
	addFileSeeds(f, false, filepath.Join("testdata", "haystack.txt"), filepath.Join("testdata", "words.txt"))
	f.Add([]byte(" a \r\n\n\tb\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		lines := splitLines(string(data))
		var kept int
		for _, l := range lines {
			if l == "" || strings.TrimSpace(l) != l || strings.Contains(l, "\n") {
				t.Fatalf("bad line %q", l)
			}
			kept += len(strings.Join(strings.Fields(l), ""))
		}
		if want := len(strings.Join(strings.Fields(string(data)), "")); utf8.Valid(data) && kept != want {
			t.Fatalf("kept %d non-space bytes of %d", kept, want)
		}
	})
}

// checkQA asserts what MakeQA relies on: documents sorted and distinct, every question
// with a query, at least one non-empty answer and gold documents, all indexes in range.
func checkQA(t *testing.T, d *QAData) {
	if !sort.StringsAreSorted(d.Docs) {
		t.Fatal("documents not sorted")
	}
	for i := 1; i < len(d.Docs); i++ {
		if d.Docs[i] == d.Docs[i-1] {
			t.Fatalf("document %q twice", d.Docs[i])
		}
	}
	if len(d.Questions) == 0 {
		t.Fatal("accepted with no questions")
	}
	for qi, q := range d.Questions {
		if strings.TrimSpace(q.Query) == "" || len(q.Answers) == 0 || len(q.Gold) == 0 {
			t.Fatalf("question %d unusable: %+v", qi, q)
		}
		for _, a := range q.Answers {
			if a == "" {
				t.Fatalf("question %d has an empty answer", qi)
			}
		}
		for _, i := range append(append([]int(nil), q.Gold...), q.More...) {
			if i < 0 || i >= len(d.Docs) {
				t.Fatalf("question %d refers to document %d of %d", qi, i, len(d.Docs))
			}
		}
	}
}

// FuzzSQuAD feeds arbitrary bytes as a SQuAD file: no panic, and what is accepted is
// usable by MakeQA.
func FuzzSQuAD(f *testing.F) {
	addFileSeeds(f, false, filepath.Join("testdata", "qa", "squad_dev.json"))
	f.Add([]byte(`{"data": [{"paragraphs": [{"context": "c", "qas": [{"question": "q", "answers": [{"text": "a"}]}]}]}]}`))
	f.Add([]byte(`{"data": [{"paragraphs": [{"qas": []}]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := parseSQuAD(data, "fuzz.json")
		if err != nil {
			return
		}
		checkQA(t, d)
	})
}

// FuzzHotpotQA feeds arbitrary bytes as a HotpotQA file: no panic, and what is accepted
// is usable by MakeQA.
func FuzzHotpotQA(f *testing.F) {
	addFileSeeds(f, false, filepath.Join("testdata", "qa", "hotpotqa_dev_distractor.json"))
	f.Add([]byte(`[{"question": "q", "answer": "a", "context": [["t", ["s1", "s2"]]]}]`))
	f.Add([]byte(`[{"question": "q", "answer": "a", "context": [["t"]]}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := parseHotpotQA(data, "fuzz.json")
		if err != nil {
			return
		}
		checkQA(t, d)
	})
}
