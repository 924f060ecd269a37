package report

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lukv/lukv/eval"
)

// familyCells: at 1024 tokens two trained families (a with two tasks, b with one) and a
// held-out one (c), each with the full cache and snapkv at 50%; at 2048 only c.
func familyCells() []eval.Cell {
	var cells []eval.Cell
	add := func(fam, split, task string, length int, method string, ratio float64, scores ...float64) {
		for i, s := range scores {
			cells = append(cells, eval.Cell{Task: fam + "/" + task, Length: length, Index: i, Method: method, Ratio: ratio, Score: s, Family: fam, Split: split})
		}
	}
	tr, ho := eval.SplitTrained, eval.SplitHeldOut
	add("a", tr, "single", 1024, "full", 0, 1, 0) // 50
	add("a", tr, "count", 1024, "full", 0, 1)     // 100 -> a: 75
	add("a", tr, "single", 1024, "snapkv", 0.5, 0, 0)
	add("a", tr, "count", 1024, "snapkv", 0.5, 1) // a: 50
	add("b", tr, "single", 1024, "full", 0, 1)    // b: 100
	add("b", tr, "single", 1024, "snapkv", 0.5, 0.5)
	add("c", ho, "single", 1024, "full", 0, 0.5, 0.5) // c: 50
	add("c", ho, "single", 1024, "snapkv", 0.5, 0, 0) // c: 0
	add("c", ho, "single", 2048, "full", 0, 1)
	return cells
}

// TestFamilyScores: a family's score is the mean of its tasks' (not of its samples'), a
// side's the mean of its families', and the share of the full cache is per side.
func TestFamilyScores(t *testing.T) {
	fs := FamilyScores(familyCells())
	if fs == nil || len(fs.Lengths) != 2 || fs.Lengths[0].Length != 1024 || fs.Lengths[1].Length != 2048 {
		t.Fatalf("lengths: %+v", fs)
	}
	want := map[string]float64{"a full": 75, "a snapkv": 50, "b full": 100, "b snapkv": 50, "c full": 50, "c snapkv": 0}
	l := fs.Lengths[0]
	if len(l.Families) != len(want) {
		t.Errorf("%d family scores, want %d", len(l.Families), len(want))
	}
	for i, f := range l.Families {
		k := f.Family + " " + f.Method
		if w, ok := want[k]; !ok || math.Abs(f.Score-w) > 1e-9 {
			t.Errorf("%s: %v, want %v", k, f.Score, w)
		}
		if i > 0 && l.Families[i-1].Split == eval.SplitHeldOut && f.Split == eval.SplitTrained {
			t.Errorf("family %s (trained) after a held-out one", f.Family)
		}
	}
	type sw struct {
		score, pct float64
		families   int
	}
	wantSplit := map[string]sw{
		"trained full": {87.5, 100, 2}, "trained snapkv": {50, 100 * 50 / 87.5, 2},
		"held-out full": {50, 100, 1}, "held-out snapkv": {0, 0, 1},
	}
	if len(l.Splits) != 4 || l.Splits[0].Split != eval.SplitTrained {
		t.Fatalf("splits %+v: want trained first, 2 sides x 2 methods", l.Splits)
	}
	for _, s := range l.Splits {
		w := wantSplit[s.Split+" "+s.Method]
		if math.Abs(s.Score-w.score) > 1e-9 || s.PctOfFull == nil || math.Abs(*s.PctOfFull-w.pct) > 1e-9 || s.Families != w.families {
			t.Errorf("%s %s: score %v, %% of full %v, %d families; want %+v", s.Split, s.Method, s.Score, s.PctOfFull, s.Families, w)
		}
	}
	if l2 := fs.Lengths[1]; len(l2.Families) != 1 || len(l2.Splits) != 1 || l2.Splits[0].Split != eval.SplitHeldOut || l2.Splits[0].Score != 100 {
		t.Errorf("2048: %+v", l2)
	}
}

// TestWriteEvalFamilies: formats cells give the split tables in report.md and report.json
// and a per-family heat map; RULER cells give a report without any of it, and their cells
// carry no family or split in report.json.
func TestWriteEvalFamilies(t *testing.T) {
	dir := t.TempDir()
	if err := WriteEval(dir, familyCells(), "header", nil); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(dir, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"## Trained and held-out families", "### 1024 tokens", "| family | split | samples | full | snapkv 50% |",
		"| a | trained | 3 | 75.0 | 50.0 |", "| b | trained | 1 | 100.0 | 50.0 |", "| c | held-out | 2 | 50.0 | 0.0 |",
		"| **trained families** (2) | trained | 4 | **87.5** (100%) | **50.0** (57%) |",
		"| **held-out families** (1) | held-out | 2 | **50.0** (100%) | **0.0** (0%) |",
		"### 2048 tokens", "| c | held-out | 1 | 100.0 |", "![per-family accuracy at 50%](per-family-50.png)", "## 1024 tokens",
	} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report.md lacks %q:\n%s", want, md)
		}
	}
	if strings.Index(string(md), "| a | trained") > strings.Index(string(md), "| c | held-out") {
		t.Error("a held-out family comes before a trained one")
	}
	if _, err := os.Stat(filepath.Join(dir, "per-family-50.png")); err != nil {
		t.Error(err)
	}
	var js struct {
		Families *FamilySplit `json:"families"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &js); err != nil || js.Families == nil || len(js.Families.Lengths) != 2 || len(js.Families.Lengths[0].Splits) != 4 {
		t.Errorf("report.json families: %+v (%v)", js.Families, err)
	}

	ruler := t.TempDir()
	cells := []eval.Cell{{Task: "niah_single_1", Length: 512, Method: "full", Score: 1}, {Task: "niah_single_1", Length: 512, Method: "snapkv", Ratio: 0.5, Score: 0}}
	if err := WriteEval(ruler, cells, "header", nil); err != nil {
		t.Fatal(err)
	}
	md, _ = os.ReadFile(filepath.Join(ruler, "report.md"))
	b, _ = os.ReadFile(filepath.Join(ruler, "report.json"))
	for _, s := range []string{"families", "Trained and held-out", "per-family"} {
		if strings.Contains(string(md), s) {
			t.Errorf("a RULER report.md has %q:\n%s", s, md)
		}
	}
	for _, s := range []string{`"families"`, `"family"`, `"split"`} {
		if strings.Contains(string(b), s) {
			t.Errorf("a RULER report.json has %s", s)
		}
	}
	if _, err := os.Stat(filepath.Join(ruler, "per-family-50.png")); err == nil {
		t.Error("a RULER run has a per-family plot")
	}
}
