package report

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/lukv/lukv/eval"
)

// evalJSON is report.json: the run's status (absent for a merge of finished runs)
// and every cell.
type evalJSON struct {
	Status *eval.Status `json:"status,omitempty"`
	// Families: the formats suite's trained and held-out families (FamilyScores).
	Families *FamilySplit `json:"families,omitempty"`
	Cells    []eval.Cell  `json:"cells"`
}

// WriteEval writes dir/report.md (a table per length and one over all lengths, with
// the plots), dir/report.json (the status and every cell) and the PNG plots: accuracy
// against compression per method, and a task x method heat map per ratio. A partial
// status heads report.md with the counts done and planned per task and length, and
// skipped cells are listed with the reason; st may be nil (a merge of finished runs).
// Cells of the formats suite (with a Family) add a table per length of family x method
// with the trained and held-out families' means, in report.md and report.json, and a
// family x method heat map per ratio.
func WriteEval(dir string, cells []eval.Cell, header string, st *eval.Status) error {
	if len(cells) == 0 && (st == nil || !st.Partial) {
		return fmt.Errorf("eval report: no results in %s", dir)
	}
	var md strings.Builder
	fmt.Fprintf(&md, "# Long-context evaluation\n\n")
	if st != nil && st.Partial {
		fmt.Fprintf(&md, "**Partial report: %d of %d planned cells done** (the run stopped early; the same command resumes it).\n\n", st.Done, st.Planned)
		md.WriteString("| task | length | cells done | planned |\n|---|---|---|---|\n")
		for _, g := range st.Groups {
			fmt.Fprintf(&md, "| %s | %d | %d | %d |\n", g.Task, g.Length, g.Done, g.Planned)
		}
		md.WriteString("\n")
	}
	fmt.Fprintf(&md, "%s\n\n", header)
	if st != nil && len(st.Skipped) > 0 {
		writeSkipped(&md, st.Skipped)
	}
	fam := FamilyScores(cells)
	if len(cells) > 0 {
		if err := writePlots(dir, &md, cells); err != nil {
			return err
		}
		if fam != nil {
			writeFamilyTables(&md, fam, cells)
		}
		eval.WriteTables(&md, cells)
	}
	if err := os.WriteFile(filepath.Join(dir, "report.md"), []byte(md.String()), 0o644); err != nil {
		return err
	}
	if cells == nil {
		cells = []eval.Cell{}
	}
	js, err := json.MarshalIndent(evalJSON{Status: st, Families: fam, Cells: cells}, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "report.json"), js, 0o644)
}

// writeSkipped lists the skipped cells: whole task x length groups, then single samples.
func writeSkipped(w io.Writer, skipped []eval.Skip) {
	fmt.Fprintf(w, "## Skipped\n\nThese cells were not run (they are not in the tables):\n\n| task | length | samples | reason |\n|---|---|---|---|\n")
	for _, s := range skipped {
		which := "all"
		if s.Index >= 0 {
			which = fmt.Sprint(s.Index)
		}
		fmt.Fprintf(w, "| %s | %d | %s | %s |\n", s.Task, s.Length, which, strings.ReplaceAll(s.Reason, "|", `\|`))
	}
	fmt.Fprintln(w)
}

// writePlots draws the accuracy-vs-compression plot and a per-task plot per ratio into
// dir and links them from md.
func writePlots(dir string, md io.Writer, cells []eval.Cell) error {
	pts := make([]EvalPoint, len(cells))
	ratioSet := map[float64]bool{}
	for i, c := range cells {
		pts[i] = EvalPoint{Task: c.Task, Length: c.Length, Method: c.Method, Ratio: c.Ratio, Score: c.Score}
		if c.Method != "full" {
			ratioSet[c.Ratio] = true
		}
	}
	if err := AccuracyVsCompression(filepath.Join(dir, "accuracy-vs-compression.png"), pts, "Accuracy vs KV-cache compression"); err != nil {
		return err
	}
	fmt.Fprint(md, "![accuracy vs compression](accuracy-vs-compression.png)\n\n")
	ratios := make([]float64, 0, len(ratioSet))
	for r := range ratioSet {
		ratios = append(ratios, r)
	}
	sort.Float64s(ratios)
	for _, r := range ratios {
		name := fmt.Sprintf("per-task-%02.0f.png", 100*r)
		if err := PerTaskBreakdown(filepath.Join(dir, name), pts, r, fmt.Sprintf("Per-task accuracy at %.0f%% compression (mean over lengths)", 100*r)); err != nil {
			return err
		}
		fmt.Fprintf(md, "![per-task accuracy at %.0f%%](%s)\n\n", 100*r, name)
	}
	return writeFamilyPlots(dir, md, cells, ratios)
}
