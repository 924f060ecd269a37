package formats

import (
	"errors"
	"strings"
	"testing"

	"github.com/lukv/lukv/eval"
)

// TestItemsRenderEveryFamily: the evaluation items at small lengths cover every family x
// task it renders, each sample fits its prompt budget (length - AnswerRoom), names its
// family and split, and scores its own answer 1 and a wrong one 0 through eval.ScoreSample
// (count with number_match: "17" is not 7). At 512 tokens the retrieval tasks of every
// family render, and an aggregation task whose records need more room (e-mails) is
// eval.ErrDoesNotFit, which the run skips with a warning; at 1024 every sample renders.
func TestItemsRenderEveryFamily(t *testing.T) {
	g, err := NewEvaluation(testConfig(11))
	if err != nil {
		t.Fatal(err)
	}
	const samples = 4
	items := Items(g, AllFamilies(), Tasks(), []int{512, 1024}, samples)
	want := 0
	for _, f := range AllFamilies() {
		want += 2 * samples * len(FamilyTasks(f))
	}
	if len(items) != want {
		t.Fatalf("%d items, want %d (%d per family x task x length)", len(items), want, samples)
	}
	seen := map[string]bool{}
	for _, it := range items {
		length := it.Length
		fam, task, _ := strings.Cut(it.Task, "/")
		s, err := it.Make()
		if errors.Is(err, eval.ErrDoesNotFit) && length == 512 && (task == "count" || task == "mostfrequent") {
			continue
		}
		if err != nil {
			t.Fatalf("%s length %d index %d: %v", it.Task, length, it.Index, err)
		}
		seen[fam] = true
		wantSplit := eval.SplitTrained
		if HeldOut(fam) {
			wantSplit = eval.SplitHeldOut
		}
		if s.Task != it.Task || s.Family != fam || s.Split != wantSplit {
			t.Errorf("%s: sample task %q family %q split %q", it.Task, s.Task, s.Family, s.Split)
		}
		if n := g.count(s.Prompt); n > length-AnswerRoom {
			t.Errorf("%s: %d prompt tokens, budget %d", it.Task, n, length-AnswerRoom)
		}
		if s.Prompt != s.Context+s.Question || s.Question == "" {
			t.Errorf("%s: prompt is not context + a non-empty question", it.Task)
		}
		if got := eval.ScoreSample(s, strings.Join(s.Gold, ", ")); got != 1 {
			t.Errorf("%s: its gold answer scores %v", it.Task, got)
		}
		if got := eval.ScoreSample(s, "no idea"); got != 0 {
			t.Errorf("%s: a wrong answer scores %v", it.Task, got)
		}
		if task == "count" && s.Gold[0] != "17" {
			if got := eval.ScoreSample(s, "1"+s.Gold[0]); got != 0 {
				t.Errorf("%s: %q for gold %s scores %v, want 0 (number_match)", it.Task, "1"+s.Gold[0], s.Gold[0], got)
			}
		}
	}
	if len(seen) != len(AllFamilies()) {
		t.Errorf("items cover families %v, want all of %v", seen, AllFamilies())
	}
	// A subset: tasks a family lacks are left out, not failed.
	sub := Items(g, []string{"funcdef", "kv_lines"}, []string{"multivalue"}, []int{512, 1024}, 3)
	if len(sub) != 6 || sub[0].Task != "kv_lines/multivalue" {
		t.Errorf("funcdef,kv_lines x multivalue: %d items (first %+v), want kv_lines' 2 lengths x 3", len(sub), sub[0])
	}
}

// TestItemsTooShort: a length with no room for a task is eval.ErrDoesNotFit (the run skips
// it with a warning) rather than another error.
func TestItemsTooShort(t *testing.T) {
	g, err := NewEvaluation(testConfig(12))
	if err != nil {
		t.Fatal(err)
	}
	for _, length := range []int{AnswerRoom, AnswerRoom + 20} {
		it := Items(g, []string{"json"}, []string{"count"}, []int{length}, 1)[0]
		if _, err := it.Make(); !errors.Is(err, eval.ErrDoesNotFit) {
			t.Errorf("length %d: error %v, want eval.ErrDoesNotFit", length, err)
		}
	}
}

// TestCheckFamiliesAndTasks: unknown names are refused with the known ones listed; no
// families means all of them.
func TestCheckFamiliesAndTasks(t *testing.T) {
	if got, err := CheckFamilies(nil); err != nil || len(got) != len(AllFamilies()) {
		t.Errorf("CheckFamilies(nil) = %v, %v; want every family", got, err)
	}
	if _, err := CheckFamilies([]string{"yaml", "sonnet"}); err == nil || !strings.Contains(err.Error(), `unknown family "sonnet"`) || !strings.Contains(err.Error(), "narrative") {
		t.Errorf("CheckFamilies(sonnet): %v", err)
	}
	if err := CheckTasks([]string{"single", "vt"}); err == nil || !strings.Contains(err.Error(), `unknown task "vt"`) || !strings.Contains(err.Error(), "mostfrequent") {
		t.Errorf("CheckTasks(vt): %v", err)
	}
	if _, err := CheckFamilies([]string{"json", "json"}); err == nil || !strings.Contains(err.Error(), `"json" given twice`) {
		t.Errorf("CheckFamilies(json, json): %v", err)
	}
	if err := CheckTasks(Tasks()); err != nil {
		t.Errorf("CheckTasks(all): %v", err)
	}
}
