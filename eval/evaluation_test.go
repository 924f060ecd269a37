package eval

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testGenerator(t *testing.T, tok interface{ Encode(string, bool) []int }) *Generator {
	t.Helper()
	hay, err := ReadLines(filepath.Join("testdata", "haystack.txt"))
	if err != nil {
		t.Fatal(err)
	}
	words, err := ReadLines(filepath.Join("testdata", "words.txt"))
	if err != nil {
		t.Fatal(err)
	}
	return &Generator{Tokenizer: tok, Haystack: hay, Words: words, Seed: 7}
}

// waitForCell returns once dir/results.jsonl holds a cell (or after a minute).
func waitForCell(dir string) {
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if st, err := os.Stat(filepath.Join(dir, "results.jsonl")); err == nil && st.Size() > 0 {
			return
		}
	}
}

// TestEvaluateInterruptAndResume: a run cancelled after its first cell returns an
// error wrapping context.Canceled, its report says partial with the counts per task
// and length, and the same run again does only the missing cell and is whole.
func TestEvaluateInterruptAndResume(t *testing.T) {
	m, tok := loadDefault(t)
	out := filepath.Join(t.TempDir(), "run")
	opt := Options{
		Runner:  &Runner{Model: m, Tokenizer: tok, Sink: 4, Window: 1},
		Methods: []MethodSpec{{Name: "full"}},
		Items:   RulerItems(testGenerator(t, tok), []string{"niah_single_1"}, []int{512}, 2),
		Out:     out,
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { waitForCell(out); cancel() }()
	res, err := Evaluate(ctx, opt)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "1 of 2 cells") {
		t.Fatalf("interrupted run: error %v, want context.Canceled with 1 of 2 cells", err)
	}
	if res == nil || !res.Status.Partial || res.Status.Done != 1 || res.Status.Planned != 2 {
		t.Fatalf("status %+v, want partial 1 of 2", res)
	}
	if len(res.Cells) != 1 || len(res.Status.Groups) != 1 || res.Status.Groups[0] != (GroupCount{Task: "niah_single_1", Length: 512, Done: 1, Planned: 2}) {
		t.Errorf("cells %d, groups %+v; want 1 cell, niah_single_1 at 512 with 1 of 2 done", len(res.Cells), res.Status.Groups)
	}

	res, err = Evaluate(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status.Partial || res.Status.Done != 2 || len(res.Cells) != 2 {
		t.Errorf("resumed status %+v with %d cells, want whole, 2 of 2", res.Status, len(res.Cells))
	}
	if opt.Runner.Time.Samples != 2 {
		t.Errorf("%d samples prefilled over both runs, want 2 (the resumed one redid a cell)", opt.Runner.Time.Samples)
	}
}

// TestEvaluateSkipsWhatCannotFit: cwe cannot fit 1024 tokens and 20000 passes the
// model's context: both are skipped before anything runs, with a warning in the log
// and in the report, and the rest runs.
func TestEvaluateSkipsWhatCannotFit(t *testing.T) {
	m, tok := loadDefault(t)
	out := t.TempDir()
	var log bytes.Buffer
	g := testGenerator(t, tok)
	items := append(RulerItems(g, []string{"cwe"}, []int{1024}, 1),
		RulerItems(g, []string{"niah_single_1"}, []int{512, 20000}, 1)...)
	res, err := Evaluate(context.Background(), Options{
		Runner:  &Runner{Model: m, Tokenizer: tok, Sink: 4, Window: 1},
		Methods: []MethodSpec{{Name: "full"}},
		Items:   items,
		Out:     out,
		Log:     &log,
		Label:   "eval ruler",
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Cells) != 1 || res.Cells[0].Task != "niah_single_1" || res.Status.Partial {
		t.Errorf("cells %+v status %+v, want niah_single_1's one cell, whole", res.Cells, res.Status)
	}
	for _, want := range []string{"warning: skipping cwe at length 1024", "warning: skipping niah_single_1 at length 20000: length 20000 passes the model's context of 16384", "eval ruler: 1/1 cells, 100%"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, log.String())
		}
	}
	if strings.Contains(log.String(), "\r") {
		t.Errorf("progress wrote carriage returns into a log:\n%q", log.String())
	}
	sk := res.Status.Skipped
	if len(sk) != 2 || sk[0].Task != "cwe" || sk[0].Index != -1 || !strings.Contains(sk[0].Reason, "even the smallest prompt") || sk[1].Length != 20000 {
		t.Errorf("skipped %+v, want cwe at 1024 (does not fit) and niah_single_1 at 20000", sk)
	}
}

// TestEvaluateCleansUpAfterSetupError: a run that fails before any cell removes the
// folder it created, and leaves a folder that was there (with its files) alone.
func TestEvaluateCleansUpAfterSetupError(t *testing.T) {
	m, tok := loadDefault(t)
	bad := []Item{{Task: "x", Length: 64, Make: func() (Sample, error) {
		return Sample{Task: "x", Context: "a", Question: "", MaxNewTokens: 1}, nil
	}}}
	opt := Options{Runner: &Runner{Model: m, Tokenizer: tok}, Methods: []MethodSpec{{Name: "full"}}, Items: bad}
	opt.Out = filepath.Join(t.TempDir(), "new")
	if _, err := Evaluate(context.Background(), opt); err == nil || !strings.Contains(err.Error(), "empty question") {
		t.Fatalf("error %v, want the empty question", err)
	}
	if _, err := os.Stat(opt.Out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the new folder is left behind (%v)", err)
	}
	opt.Out = t.TempDir()
	keep := filepath.Join(opt.Out, "notes.txt")
	if err := os.WriteFile(keep, []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Evaluate(context.Background(), opt); err == nil {
		t.Fatal("no error")
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("a file of an existing folder is gone: %v", err)
	}
	// A bad ratio is refused before the folder is made.
	opt.Out = filepath.Join(t.TempDir(), "new")
	opt.Ratios = []float64{1.5}
	if _, err := Evaluate(context.Background(), opt); err == nil || !strings.Contains(err.Error(), "ratio 1.5") {
		t.Errorf("ratio 1.5: %v", err)
	}
	if _, err := os.Stat(opt.Out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused run created its folder (%v)", err)
	}
}

// TestEvaluateSkipsOneSampleMidRun: a later sample that cannot be made at its length
// (its group's first one could) is skipped with a warning, not fatal, and the plan
// shrinks by its cells.
func TestEvaluateSkipsOneSampleMidRun(t *testing.T) {
	m, tok := loadDefault(t)
	ok := Sample{Task: "niah_single_1", Context: "The special magic number is 1234567.", Question: " The number is", Gold: []string{"1234567"}, MaxNewTokens: 4}
	items := []Item{
		{Task: "niah_single_1", Length: 64, Index: 0, Make: func() (Sample, error) { return ok, nil }},
		{Task: "niah_single_1", Length: 64, Index: 1, Make: func() (Sample, error) { return Sample{}, fmt.Errorf("eval: too long: %w", ErrDoesNotFit) }},
		{Task: "niah_single_1", Length: 64, Index: 2, Make: func() (Sample, error) { return ok, nil }},
	}
	var log bytes.Buffer
	res, err := Evaluate(context.Background(), Options{Runner: &Runner{Model: m, Tokenizer: tok}, Methods: []MethodSpec{{Name: "full"}},
		Items: items, Out: t.TempDir(), Log: &log, Label: "eval"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Cells) != 2 || res.Status.Planned != 2 || res.Status.Done != 2 || res.Status.Partial {
		t.Errorf("status %+v with %d cells, want 2 of 2", res.Status, len(res.Cells))
	}
	if len(res.Status.Skipped) != 1 || res.Status.Skipped[0].Index != 1 {
		t.Errorf("skipped %+v, want sample 1", res.Status.Skipped)
	}
	if !strings.Contains(log.String(), "warning: skipping niah_single_1 length 64 sample 1") || !strings.Contains(log.String(), "eval: 2/2 cells, 100%") {
		t.Errorf("log:\n%s", log.String())
	}
}

// TestEvaluateInterruptBeforeFirstCell: interrupted during the first sample, a run
// keeps its new folder (it is not a setup error: the report says 0 done) and its
// status is partial.
func TestEvaluateInterruptBeforeFirstCell(t *testing.T) {
	m, tok := loadDefault(t)
	out := filepath.Join(t.TempDir(), "run")
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
			if _, err := os.Stat(filepath.Join(out, RunFile)); err == nil {
				break
			}
		}
		cancel()
	}()
	res, err := Evaluate(ctx, Options{Runner: &Runner{Model: m, Tokenizer: tok}, Methods: []MethodSpec{{Name: "full"}},
		Items: RulerItems(testGenerator(t, tok), []string{"niah_single_1"}, []int{2048}, 1), Out: out})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if res == nil || !res.Status.Partial || res.Status.Done != 0 || res.Status.Planned != 1 {
		t.Errorf("result %+v, want partial, 0 of 1", res)
	}
	if _, err := os.Stat(out); err != nil {
		t.Errorf("the interrupted run's folder is gone: %v", err)
	}
}
