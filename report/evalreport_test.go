package report

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lukv/lukv/eval"
)

// TestWriteEvalPartialAndSkipped: a partial status heads report.md with the counts
// per task and length, skipped cells are listed with their reason, and report.json
// carries the same status; a whole run's report says neither.
func TestWriteEvalPartialAndSkipped(t *testing.T) {
	dir := t.TempDir()
	cells := []eval.Cell{{Task: "niah_single_1", Length: 512, Method: "full", Score: 1}}
	st := &eval.Status{Partial: true, Planned: 4, Done: 1,
		Groups:  []eval.GroupCount{{Task: "niah_single_1", Length: 512, Done: 1, Planned: 2}, {Task: "niah_single_1", Length: 4096, Done: 0, Planned: 2}},
		Skipped: []eval.Skip{{Task: "cwe", Length: 1024, Index: -1, Reason: "eval: task cwe: even the smallest prompt (1200 tokens) exceeds 904"}, {Task: "vt", Length: 512, Index: 3, Reason: "a|b"}}}
	if err := WriteEval(dir, cells, "header", st); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(dir, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"**Partial report: 1 of 4 planned cells done**", "| niah_single_1 | 4096 | 0 | 2 |",
		"## Skipped", "| cwe | 1024 | all | eval: task cwe: even the smallest prompt (1200 tokens) exceeds 904 |", `| vt | 512 | 3 | a\|b |`, "## 512 tokens"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report.md lacks %q:\n%s", want, md)
		}
	}
	var js struct {
		Status *eval.Status `json:"status"`
		Cells  []eval.Cell  `json:"cells"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &js); err != nil {
		t.Fatal(err)
	}
	if js.Status == nil || !js.Status.Partial || js.Status.Done != 1 || len(js.Status.Skipped) != 2 || len(js.Cells) != 1 {
		t.Errorf("report.json: status %+v, %d cells", js.Status, len(js.Cells))
	}

	// Interrupted before any cell: still a report, saying so.
	empty := t.TempDir()
	if err := WriteEval(empty, nil, "header", &eval.Status{Partial: true, Planned: 2, Groups: []eval.GroupCount{{Task: "t", Length: 1, Planned: 2}}}); err != nil {
		t.Fatal(err)
	}
	if md, _ := os.ReadFile(filepath.Join(empty, "report.md")); !strings.Contains(string(md), "0 of 2 planned cells done") {
		t.Errorf("empty partial report:\n%s", md)
	}

	whole := t.TempDir()
	if err := WriteEval(whole, cells, "header", &eval.Status{Planned: 1, Done: 1}); err != nil {
		t.Fatal(err)
	}
	if md, _ := os.ReadFile(filepath.Join(whole, "report.md")); strings.Contains(string(md), "Partial") || strings.Contains(string(md), "Skipped") {
		t.Errorf("a whole run's report says partial or skipped:\n%s", md)
	}
	if err := WriteEval(t.TempDir(), nil, "header", nil); err == nil {
		t.Error("a report of no cells, not partial: no error")
	}
}
