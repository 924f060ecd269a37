package report

import (
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"

	"github.com/lukv/lukv/eval"
)

// FamilySplit is the formats suite's view of a report (report.json's "families"): per
// length, every template family's score per method and ratio, and the trained and
// held-out families' means. Scores are percentages: a family's is the mean of its tasks'
// (each task weighs the same, as in the task tables), a split's the mean of its families'.
type FamilySplit struct {
	Lengths []FamilyLength `json:"lengths"`
}

// FamilyLength is one length's family scores and split summary.
type FamilyLength struct {
	Length   int           `json:"length"`
	Families []FamilyScore `json:"families"`
	Splits   []SplitScore  `json:"splits"`
}

// FamilyScore is one family's score with one method at one ratio.
type FamilyScore struct {
	Family  string  `json:"family"`
	Split   string  `json:"split"`
	Method  string  `json:"method"`
	Ratio   float64 `json:"ratio"`
	Score   float64 `json:"score"`
	Samples int     `json:"samples"` // scored samples (cells) behind Score
}

// SplitScore is the mean over one side's families with one method at one ratio, and that
// mean as a percentage of the full cache's (absent without a full-cache score above 0).
type SplitScore struct {
	Split     string   `json:"split"`
	Method    string   `json:"method"`
	Ratio     float64  `json:"ratio"`
	Score     float64  `json:"score"`
	Families  int      `json:"families"`
	Samples   int      `json:"samples"`
	PctOfFull *float64 `json:"pct_of_full,omitempty"`
}

// column is one (method, ratio) of the tables.
type column struct {
	method string
	ratio  float64
}

func (c column) String() string {
	if c.method == fullMethod {
		return fullMethod
	}
	return fmt.Sprintf("%s %.0f%%", c.method, 100*c.ratio)
}

// columns orders the (method, ratio) pairs as eval.WriteTable orders its rows: the full
// cache first, then by ratio, then by name.
func columns(cells []eval.Cell) []column {
	seen := map[column]bool{}
	var out []column
	for _, c := range cells {
		k := column{c.Method, c.Ratio}
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if (out[i].method == fullMethod) != (out[j].method == fullMethod) {
			return out[i].method == fullMethod
		}
		if out[i].ratio != out[j].ratio {
			return out[i].ratio < out[j].ratio
		}
		return out[i].method < out[j].method
	})
	return out
}

// splitOrder puts the trained side first.
var splitOrder = []string{eval.SplitTrained, eval.SplitHeldOut}

// FamilyScores computes the family view of cells; nil when no cell has a family (the
// ruler and longbench suites).
func FamilyScores(cells []eval.Cell) *FamilySplit {
	byLen := map[int][]eval.Cell{}
	for _, c := range cells {
		if c.Family != "" {
			byLen[c.Length] = append(byLen[c.Length], c)
		}
	}
	if len(byLen) == 0 {
		return nil
	}
	var lengths []int
	for l := range byLen {
		lengths = append(lengths, l)
	}
	sort.Ints(lengths)
	out := &FamilySplit{}
	for _, l := range lengths {
		out.Lengths = append(out.Lengths, familyLength(l, byLen[l]))
	}
	return out
}

func familyLength(length int, cells []eval.Cell) FamilyLength {
	type key struct {
		family, task string
		col          column
	}
	sum := map[key][2]float64{}
	split := map[string]string{}
	tasks := map[string]map[string]bool{} // family -> tasks
	for _, c := range cells {
		k := key{c.Family, c.Task, column{c.Method, c.Ratio}}
		v := sum[k]
		sum[k] = [2]float64{v[0] + c.Score, v[1] + 1}
		split[c.Family] = c.Split
		if tasks[c.Family] == nil {
			tasks[c.Family] = map[string]bool{}
		}
		tasks[c.Family][c.Task] = true
	}
	var families []string
	for f := range split {
		families = append(families, f)
	}
	// Trained families first, then by name.
	sort.Slice(families, func(i, j int) bool {
		if split[families[i]] != split[families[j]] {
			return split[families[i]] == eval.SplitTrained
		}
		return families[i] < families[j]
	})
	fl := FamilyLength{Length: length}
	cols := columns(cells)
	type acc struct {
		sum              float64
		families, counts int
	}
	splits := map[string]map[column]*acc{}
	for _, f := range families {
		for _, col := range cols {
			var total float64
			var n, samples int
			for t := range tasks[f] {
				if v := sum[key{f, t, col}]; v[1] > 0 {
					total += 100 * v[0] / v[1]
					n++
					samples += int(v[1])
				}
			}
			if n == 0 {
				continue
			}
			fs := FamilyScore{Family: f, Split: split[f], Method: col.method, Ratio: col.ratio, Score: total / float64(n), Samples: samples}
			fl.Families = append(fl.Families, fs)
			if splits[fs.Split] == nil {
				splits[fs.Split] = map[column]*acc{}
			}
			a := splits[fs.Split][col]
			if a == nil {
				a = &acc{}
				splits[fs.Split][col] = a
			}
			a.sum += fs.Score
			a.families++
			a.counts += samples
		}
	}
	for _, sp := range splitOrder {
		full := splits[sp][column{fullMethod, 0}]
		for _, col := range cols {
			a := splits[sp][col]
			if a == nil {
				continue
			}
			s := SplitScore{Split: sp, Method: col.method, Ratio: col.ratio, Score: a.sum / float64(a.families), Families: a.families, Samples: a.counts}
			if full != nil && full.sum > 0 {
				pct := 100 * s.Score / (full.sum / float64(full.families))
				s.PctOfFull = &pct
			}
			fl.Splits = append(fl.Splits, s)
		}
	}
	return fl
}

// writeFamilyTables writes, per length, a table of family x (method, ratio) with each
// family's split and sample count, and the trained and held-out families' means (with the
// share of the full cache's) as the last rows.
func writeFamilyTables(w io.Writer, fsplit *FamilySplit, cells []eval.Cell) {
	fmt.Fprintf(w, "## Trained and held-out families\n\n")
	fmt.Fprintf(w, "Accuracy (%%) per template family: the mean of the family's tasks, each task weighing the same. "+
		"Held-out families never appear in training (eval/formats/split.go). The last rows are the means over each side's families, "+
		"with the share of the full cache's mean in parentheses. `samples`: scored samples per method.\n")
	for _, fl := range fsplit.Lengths {
		var lc []eval.Cell
		for _, c := range cells {
			if c.Family != "" && c.Length == fl.Length {
				lc = append(lc, c)
			}
		}
		cols := columns(lc)
		fmt.Fprintf(w, "\n### %d tokens\n\n| family | split | samples |", fl.Length)
		for _, c := range cols {
			fmt.Fprintf(w, " %s |", c)
		}
		fmt.Fprintf(w, "\n|---|---|---|%s\n", strings.Repeat("---|", len(cols)))
		type fk struct {
			family string
			col    column
		}
		score := map[fk]FamilyScore{}
		var order []string
		for _, f := range fl.Families { // trained families first (familyLength's order)
			if len(order) == 0 || order[len(order)-1] != f.Family {
				order = append(order, f.Family)
			}
			score[fk{f.Family, column{f.Method, f.Ratio}}] = f
		}
		for _, fam := range order {
			split, samples := "", 0
			for _, c := range cols {
				if s, ok := score[fk{fam, c}]; ok {
					split, samples = s.Split, max(samples, s.Samples)
				}
			}
			fmt.Fprintf(w, "| %s | %s | %d |", fam, split, samples)
			for _, c := range cols {
				if s, ok := score[fk{fam, c}]; ok {
					fmt.Fprintf(w, " %.1f |", s.Score)
				} else {
					fmt.Fprint(w, " - |")
				}
			}
			fmt.Fprintln(w)
		}
		for _, sp := range splitOrder {
			var row []SplitScore
			for _, s := range fl.Splits {
				if s.Split == sp {
					row = append(row, s)
				}
			}
			if len(row) == 0 {
				continue
			}
			samples := 0
			for _, s := range row {
				samples = max(samples, s.Samples)
			}
			fmt.Fprintf(w, "| **%s families** (%d) | %s | %d |", sp, row[0].Families, sp, samples)
			for _, c := range cols {
				cell := " - |"
				for _, s := range row {
					if s.Method == c.method && s.Ratio == c.ratio {
						pct := "-"
						if s.PctOfFull != nil {
							pct = fmt.Sprintf("%.0f%%", *s.PctOfFull)
						}
						cell = fmt.Sprintf(" **%.1f** (%s) |", s.Score, pct)
					}
				}
				fmt.Fprint(w, cell)
			}
			fmt.Fprintln(w)
		}
	}
	fmt.Fprintln(w)
}

// writeFamilyPlots draws, per compression ratio, a family x method heat map (each family
// the mean of its tasks; held-out families marked "*") and links it from md. Without a
// compressed method there is nothing to compare, and no plot.
func writeFamilyPlots(dir string, md io.Writer, cells []eval.Cell, ratios []float64) error {
	type key struct {
		task   string
		length int
		col    column
	}
	sum := map[key][2]float64{}
	label := map[string]string{}
	var order []key
	for _, c := range cells {
		if c.Family == "" {
			continue
		}
		k := key{c.Task, c.Length, column{c.Method, c.Ratio}}
		if _, ok := sum[k]; !ok {
			order = append(order, k)
		}
		v := sum[k]
		sum[k] = [2]float64{v[0] + c.Score, v[1] + 1}
		label[c.Task] = c.Family
		if c.Split == eval.SplitHeldOut {
			label[c.Task] = c.Family + "*"
		}
	}
	// One point per family, task, length, method and ratio (the task's mean), so that a
	// family's cell weighs its tasks equally; trained families come first.
	sort.SliceStable(order, func(i, j int) bool {
		hi, hj := strings.HasSuffix(label[order[i].task], "*"), strings.HasSuffix(label[order[j].task], "*")
		if hi != hj {
			return !hi
		}
		return label[order[i].task] < label[order[j].task]
	})
	var pts []EvalPoint
	for _, k := range order {
		v := sum[k]
		pts = append(pts, EvalPoint{Task: label[k.task], Length: k.length, Method: k.col.method, Ratio: k.col.ratio, Score: v[0] / v[1]})
	}
	if len(pts) == 0 {
		return nil
	}
	for _, r := range ratios {
		name := fmt.Sprintf("per-family-%02.0f.png", 100*r)
		if err := PerTaskBreakdown(filepath.Join(dir, name), pts, r, fmt.Sprintf("Per-family accuracy at %.0f%% compression (* held out; mean over lengths)", 100*r)); err != nil {
			return err
		}
		fmt.Fprintf(md, "![per-family accuracy at %.0f%%](%s)\n\n", 100*r, name)
	}
	return nil
}
