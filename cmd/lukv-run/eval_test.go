package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var (
	testHaystack = filepath.Join("..", "..", "eval", "testdata", "haystack.txt")
	testWords    = filepath.Join("..", "..", "eval", "testdata", "words.txt")
)

// TestEvalRejectsBadFlags: every invalid flag is refused before the model loads (the
// --model given does not exist, so a check after loading would name --model instead)
// and before the --out folder is made.
func TestEvalRejectsBadFlags(t *testing.T) {
	for _, c := range []struct {
		flags []string
		want  string
	}{
		{[]string{"--compression", "1.5"}, `--compression "1.5": compression ratio 1.5: want 0 <= ratio < 1`},
		{[]string{"--threads", "-3"}, "--threads -3: want >= 0"},
		{[]string{"--compression", "0.5,-0.1"}, `--compression "-0.1"`},
		{[]string{"--compression", "NaN"}, `--compression "NaN"`},
		{[]string{"--compression", "half"}, `--compression "half"`},
		{[]string{"--lengths", "0"}, `--lengths "0": want a positive number of tokens`},
		{[]string{"--lengths", "512,-4"}, `--lengths "-4"`},
		{[]string{"--samples", "-1"}, "--samples -1"},
		{[]string{"--samples", "0"}, "--samples 0"},
		{[]string{"--methods", "full,bogus"}, "--methods"},
		{[]string{"--methods", "nope:snapkv"}, `unknown allocator "nope"`},
		{[]string{"--tasks", "niah_single_1,nope"}, `--tasks "nope": unknown task`},
		{[]string{"--tasks", "qa_1"}, "--tasks qa_1 needs --squad FILE"},
		{[]string{"--device", "tpu"}, `--device "tpu"`},
		{[]string{"--haystack", "/no/such/file"}, "--haystack"},
		{[]string{"stray"}, `unexpected argument "stray"`},
	} {
		out := filepath.Join(t.TempDir(), "out")
		args := append([]string{"eval", "ruler", "--model", "/no/such/model", "--out", out, "--methods", "full"}, c.flags...)
		_, _, err := runCLI(t, args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want it to contain %q", c.flags, err, c.want)
		}
		if _, serr := os.Stat(out); !errors.Is(serr, os.ErrNotExist) {
			t.Errorf("%v: --out folder created (%v)", c.flags, serr)
		}
	}
}

// TestEvalLeavesNoFolderAfterSetupError: a setup error after the flags (here the
// model) leaves no new --out folder, and an existing one keeps its files.
func TestEvalLeavesNoFolderAfterSetupError(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	if _, _, err := runCLI(t, "eval", "ruler", "--model", "/no/such/model", "--out", out); err == nil || !strings.Contains(err.Error(), "--model") {
		t.Fatalf("error %v, want one naming --model", err)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("--out left behind (%v)", err)
	}
	// A LongBench folder without the data files fails after the model is loaded.
	existing := t.TempDir()
	notes := filepath.Join(existing, "notes.txt")
	if err := os.WriteFile(notes, []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI(t, "eval", "longbench", "--data", t.TempDir(), "--out", existing, "--methods", "full"); err == nil {
		t.Fatal("longbench without data: no error")
	}
	if _, err := os.Stat(notes); err != nil {
		t.Errorf("an existing folder lost its file: %v", err)
	}
}

// TestEvalRulerSkipsCwe1024: cwe cannot fit 1024 tokens; the run warns, does the
// rest, and its report says which cells were skipped and why. Progress goes to a
// non-terminal stderr as plain lines.
func TestEvalRulerSkipsCwe1024(t *testing.T) {
	out := t.TempDir()
	table, stderr, err := runCLI(t, "eval", "ruler", "--tasks", "niah_single_1,cwe", "--lengths", "1024", "--samples", "1",
		"--methods", "full", "--out", out, "--haystack", testHaystack, "--words", testWords)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr, "warning: skipping cwe at length 1024") || !strings.Contains(stderr, "eval ruler: 1/1 cells, 100%") || strings.Contains(stderr, "\r") {
		t.Errorf("stderr lacks the warning or the plain progress line:\n%q", stderr)
	}
	if !strings.Contains(table, "niah_single_1") {
		t.Errorf("table lacks niah_single_1:\n%s", table)
	}
	md, err := os.ReadFile(filepath.Join(out, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), "## Skipped") || !strings.Contains(string(md), "| cwe | 1024 | all |") {
		t.Errorf("report.md does not list the skipped cwe cells:\n%s", md)
	}
}

// TestEvalInterruptStopsFast: cancelling an evaluation of the default model while a
// 4096-token prefill runs (one layer takes seconds on a loaded 2-core CPU) returns
// within a second with a context error, and the report is marked partial.
func TestEvalInterruptStopsFast(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	out := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	cancelled := make(chan time.Time, 1)
	go func() {
		for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if st, err := os.Stat(filepath.Join(out, "results.jsonl")); err == nil && st.Size() > 0 {
				break
			}
		}
		time.Sleep(300 * time.Millisecond) // into the 4096-token prefill
		cancelled <- time.Now()
		cancel()
	}()
	var stdout, stderr bytes.Buffer
	err := runEval(ctx, []string{"ruler", "--tasks", "niah_single_1", "--lengths", "512,4096", "--samples", "1",
		"--methods", "full", "--out", out, "--haystack", testHaystack, "--words", testWords}, &stdout, &stderr)
	returned := time.Now()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	d := returned.Sub(<-cancelled)
	t.Logf("returned %v after the interrupt", d)
	if d > time.Second {
		t.Errorf("returned %v after the interrupt, want at most 1 s", d)
	}
	if !strings.Contains(err.Error(), "interrupted with 1 of 2 cells done") || !strings.Contains(err.Error(), "run the same command again to resume") {
		t.Errorf("error %q does not give the counts and how to resume", err)
	}
	md, rerr := os.ReadFile(filepath.Join(out, "report.md"))
	if rerr != nil {
		t.Fatal(rerr)
	}
	for _, want := range []string{"Partial report: 1 of 2 planned cells done", "| niah_single_1 | 4096 | 0 | 1 |"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report.md lacks %q:\n%s", want, md)
		}
	}
}

// TestEvalFormatsRejectsBadFlags: the formats suite checks its families, tasks and
// lengths before the model loads and before --out is made, naming the known families.
func TestEvalFormatsRejectsBadFlags(t *testing.T) {
	for _, c := range []struct {
		flags []string
		want  string
	}{
		{[]string{"--families", "sentence,limerick"}, `--families: unknown family "limerick" (families: sentence,`},
		{[]string{"--families", ","}, "--families: empty list"},
		{[]string{"--families", "yaml,json,yaml"}, `--families: family "yaml" given twice`},
		{[]string{"--tasks", "single,niah_single_1"}, `--tasks: unknown task "niah_single_1" (tasks: single,`},
		{[]string{"--tasks", "count,count"}, `--tasks: task "count" given twice`},
		{[]string{"--lengths", "abc"}, `--lengths "abc"`},
		{[]string{"--lengths", "0"}, `--lengths "0": want a positive number of tokens`},
		{[]string{"--lengths", "1024,64"}, "--lengths 64: formats samples need more than 64 tokens"},
		{[]string{"--samples", "0"}, "--samples 0"},
		{[]string{"--words", "/no/such/file"}, "--words"},
	} {
		out := filepath.Join(t.TempDir(), "out")
		args := append([]string{"eval", "formats", "--model", "/no/such/model", "--out", out, "--methods", "full"}, c.flags...)
		_, _, err := runCLI(t, args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want it to contain %q", c.flags, err, c.want)
		}
		if _, serr := os.Stat(out); !errors.Is(serr, os.ErrNotExist) {
			t.Errorf("%v: --out folder created (%v)", c.flags, serr)
		}
	}
}

// TestEvalFormatsEndToEnd: the embedded default model runs the formats suite at 512
// tokens (one trained and one held-out family, full cache and SnapKV); every cell names
// its family and split, and the report has the split tables in report.md and report.json.
func TestEvalFormatsEndToEnd(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	out := t.TempDir()
	_, _, err := runCLI(t, "eval", "formats", "--families", "kv_lines,yaml", "--tasks", "single,count", "--lengths", "512",
		"--samples", "1", "--methods", "full,snapkv", "--compression", "0.5", "--out", out)
	if err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(out, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## Trained and held-out families", "### 512 tokens", "| family | split | samples | full | snapkv 50% |",
		"| kv_lines | trained | 2 |", "| yaml | held-out | 2 |", "| **trained families** (1) | trained | 2 |", "| **held-out families** (1) | held-out | 2 |",
		"yaml/count", "per-family-50.png"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report.md lacks %q:\n%s", want, md)
		}
	}
	if _, err := os.Stat(filepath.Join(out, "per-family-50.png")); err != nil {
		t.Error(err)
	}
	var js struct {
		Families struct {
			Lengths []struct {
				Length   int `json:"length"`
				Families []struct {
					Family, Split, Method string
					Samples               int
				} `json:"families"`
				Splits []struct {
					Split, Method string
					Families      int
				} `json:"splits"`
			} `json:"lengths"`
		} `json:"families"`
		Cells []struct {
			Task, Family, Split string
		} `json:"cells"`
	}
	b, err := os.ReadFile(filepath.Join(out, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &js); err != nil {
		t.Fatal(err)
	}
	if len(js.Cells) != 8 {
		t.Errorf("%d cells, want 2 families x 2 tasks x 2 methods", len(js.Cells))
	}
	for _, c := range js.Cells {
		wantSplit := "trained"
		if c.Family == "yaml" {
			wantSplit = "held-out"
		}
		if !strings.HasPrefix(c.Task, c.Family+"/") || c.Split != wantSplit {
			t.Errorf("cell %+v: want the family as the task's prefix and split %s", c, wantSplit)
		}
	}
	if l := js.Families.Lengths; len(l) != 1 || l[0].Length != 512 || len(l[0].Families) != 4 || len(l[0].Splits) != 4 {
		t.Errorf("report.json families: %+v, want one length with 2 families x 2 methods and 2 splits x 2 methods", l)
	}
}
