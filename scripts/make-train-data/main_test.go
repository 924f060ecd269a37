package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/lukv/lukv/eval"
	"github.com/lukv/lukv/eval/formats"
)

func testSetup() (formats.Config, []formats.Document) {
	var docs []formats.Document
	for i, t := range eval.DefaultHaystack() {
		docs = append(docs, formats.Document{ID: string(rune('a' + i%26)), Src: "devil", Kind: "prose", Text: t})
	}
	return formats.Config{Filler: formats.SplitDocuments(formats.Texts(docs)), Words: eval.DefaultWords(), Seed: 9}, docs
}

func TestTrainingStream(t *testing.T) {
	cfg, docs := testSetup()
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	o := options{n: 400, minLen: 300, maxLen: 1500, proseFrac: 0.25, seed: 3}
	if err := training(cfg, docs, o, w); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 400 {
		t.Fatalf("%d lines, want 400", len(lines))
	}
	prose, fams := 0, map[string]bool{}
	for i, ln := range lines {
		var l trainLine
		if err := json.Unmarshal([]byte(ln), &l); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		switch {
		case l.Text != "" && l.Prompt == "":
			prose++
		case l.Prompt != "" && l.Answer != "" && l.Family != "" && l.Task != "":
			if formats.HeldOut(l.Family) {
				t.Fatalf("line %d: held-out family %s in the training stream", i, l.Family)
			}
			fams[l.Family] = true
		default:
			t.Fatalf("line %d is neither a document nor a sample: %.80s", i, ln)
		}
	}
	if prose < 60 || prose > 140 {
		t.Errorf("%d prose lines of 400 at -prose-frac 0.25", prose)
	}
	if len(fams) != len(formats.Families(false)) {
		t.Errorf("families seen %v, want all %d trained", fams, len(formats.Families(false)))
	}
	if err := training(cfg, docs, options{minLen: 10, maxLen: 5}, w); err == nil {
		t.Error("bad lengths accepted")
	}
}

func TestEvalSet(t *testing.T) {
	cfg, _ := testSetup()
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	if err := evalSet(cfg, options{n: 2, lengths: "800,1600"}, w); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	held, total := 0, 0
	for _, ln := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var l evalLine
		if err := json.Unmarshal([]byte(ln), &l); err != nil {
			t.Fatal(err)
		}
		if l.HeldOut != formats.HeldOut(l.Family) || len(l.Gold) == 0 || l.Metric == "" {
			t.Fatalf("bad line %+v", l)
		}
		if l.HeldOut {
			held++
		}
		total++
	}
	want := 0
	for _, f := range formats.AllFamilies() {
		want += len(formats.FamilyTasks(f)) * 2 * 2
	}
	if total != want || held == 0 {
		t.Fatalf("%d lines (%d held out), want %d", total, held, want)
	}
	if err := evalSet(cfg, options{n: 1, lengths: "x"}, w); err == nil || !strings.Contains(err.Error(), "-lengths") {
		t.Errorf("bad -lengths: %v", err)
	}
	if err := evalSet(cfg, options{n: 1, lengths: "800", families: "nope"}, w); err == nil || !strings.Contains(err.Error(), "unknown family") {
		t.Errorf("bad -families: %v", err)
	}
}

func TestTrainingCorpusRefusesReservedSplits(t *testing.T) {
	for path, ok := range map[string]bool{"data/broad/train.jsonl.gz": true, "data/broad/haystack.jsonl.gz": false,
		"/x/heldout.jsonl.gz": false, "shard.jsonl": true} {
		if err := trainingCorpus(path); (err == nil) != ok {
			t.Errorf("%s: err %v", path, err)
		}
	}
}
