// Command answer-errors sorts the wrong answers of an evaluation into kinds, to see what
// a model gets wrong: for each failed cell of the chosen task, length and method it
// regenerates the sample (same seed and evaluation split as `lukv-run eval ruler`) and
// compares each predicted value with the gold values and with every other value of the
// same shape in the context (RULER's distractor needles):
//
//   - other needle: the prediction is another needle's value, exactly;
//
//   - near miss: within 4 edits of a gold value (a garbled character or two);
//
//   - chimera: it shares a run of 8+ characters with a gold value and another with a
//     distractor: the copy jumped from one needle to another on the way;
//
//   - other, in part: a run of 8+ characters from a distractor only;
//
//   - other: none of these (a wrong value of no clear origin);
//
//   - repeated: a gold value given twice (multi-query: the answer to one query repeated
//     for the next).
//
//     go run ./scripts/answer-errors --results results/eval/2026-11-28-lukv-tiny/results.jsonl.gz \
//     --task niah_multikey_3 --length 16384 --method full
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/lukv/lukv/eval"
	"github.com/lukv/lukv/models"
	"github.com/lukv/lukv/tokenizer"
)

// values finds the answer-shaped strings of a text: uuids, or numbers of 5+ digits, or
// (for word-valued tasks) the gold values themselves.
var uuidRE = regexp.MustCompile(`[0-9a-f]{6,9}-[0-9a-f]{3,5}-[0-9a-f]{3,5}-[0-9a-f]{3,5}-[0-9a-f]{8,14}`)
var numRE = regexp.MustCompile(`\d{5,9}`)

func main() {
	results := flag.String("results", "results/eval/2026-11-28-lukv-tiny/results.jsonl.gz", "results.jsonl or .jsonl.gz of lukv-run eval ruler")
	task := flag.String("task", "niah_multikey_3", "task")
	length := flag.Int("length", 16384, "sample length")
	method := flag.String("method", "full", "method")
	ratio := flag.Float64("ratio", 0, "compression ratio of the method (0 for full)")
	seed := flag.Uint64("seed", 42, "generator seed of the run")
	flag.Parse()
	if err := run(*results, *task, *length, *method, *ratio, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "answer-errors:", err)
		os.Exit(1)
	}
}

func run(path, task string, length int, method string, ratio float64, seed uint64) error {
	cells, err := eval.LoadCells(path)
	if err != nil {
		return err
	}
	if cells == nil {
		return fmt.Errorf("%s: no such file", path)
	}
	dir, err := models.DefaultDir()
	if err != nil {
		return err
	}
	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return err
	}
	gen := &eval.Generator{Tokenizer: tok, Haystack: eval.DefaultHaystack(), Words: eval.DefaultWords(), Seed: seed}
	kinds := map[string]int{}
	total, failed := 0, 0
	for _, c := range cells {
		if c.Task != task || c.Length != length || c.Method != method || c.Ratio != ratio {
			continue
		}
		total++
		if c.Score >= 1 {
			continue
		}
		failed++
		s, err := gen.Make(task, length, c.Index)
		if err != nil {
			return err
		}
		re := numRE
		if uuidRE.MatchString(s.Gold[0]) {
			re = uuidRE
		}
		golds := map[string]bool{}
		for _, g := range s.Gold {
			golds[g] = true
		}
		var others []string
		for _, v := range re.FindAllString(s.Context, -1) {
			if !golds[v] {
				others = append(others, v)
			}
		}
		seen := map[string]int{}
		for _, p := range re.FindAllString(c.Pred, -1) {
			if golds[p] {
				if seen[p]++; seen[p] == 2 {
					kinds["repeated"]++
					fmt.Printf("sample %2d  %-14s pred %s  gold %s\n", c.Index, "repeated", p, strings.Join(s.Gold, ","))
				}
				continue
			}
			k := classify(p, s.Gold, others)
			kinds[k]++
			fmt.Printf("sample %2d  %-14s pred %s  gold %s\n", c.Index, k, p, strings.Join(s.Gold, ","))
		}
		for _, g := range s.Gold {
			if seen[g] == 0 {
				kinds["gold missing"]++
			}
		}
	}
	if total == 0 {
		return fmt.Errorf("%s has no cells of %s at %d with %s@%.2f", path, task, length, method, ratio)
	}
	fmt.Printf("\n%s, %d tokens, %s: %d of %d samples not fully right, %d gold values missing from the answers; wrong values by kind:\n",
		task, length, method, failed, total, kinds["gold missing"])
	for _, k := range []string{"other needle", "near miss", "chimera", "other, in part", "other", "repeated"} {
		fmt.Printf("  %-14s %d\n", k, kinds[k])
	}
	return nil
}

func classify(p string, golds, others []string) string {
	for _, o := range others {
		if p == o {
			return "other needle"
		}
	}
	for _, g := range golds {
		if editDistance(p, g) <= 4 {
			return "near miss"
		}
	}
	fromGold, fromOther := false, false
	for _, g := range golds {
		fromGold = fromGold || commonRun(p, g) >= 8
	}
	for _, o := range others {
		fromOther = fromOther || commonRun(p, o) >= 8
	}
	switch {
	case fromGold && fromOther:
		return "chimera"
	case fromOther:
		return "other, in part"
	}
	return "other"
}

// commonRun is the length of the longest substring a and b share.
func commonRun(a, b string) int {
	best := 0
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cur[j] = 0
			if a[i-1] == b[j-1] {
				cur[j] = prev[j-1] + 1
				best = max(best, cur[j])
			}
		}
		prev, cur = cur, prev
	}
	return best
}

func editDistance(a, b string) int {
	d := make([]int, len(b)+1)
	for j := range d {
		d[j] = j
	}
	for i := 1; i <= len(a); i++ {
		prev := d[0]
		d[0] = i
		for j := 1; j <= len(b); j++ {
			cur := d[j]
			sub := prev
			if a[i-1] != b[j-1] {
				sub++
			}
			d[j] = min(d[j]+1, d[j-1]+1, sub)
			prev = cur
		}
	}
	return d[len(b)]
}
