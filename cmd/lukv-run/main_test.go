package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lukv/lukv/eval"
)

func runCLI(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	return runCLIContext(t, context.Background(), args...)
}

// runCLIContext runs the command line with ctx as the signal context (cancelling it is
// Ctrl-C).
func runCLIContext(t *testing.T, ctx context.Context, args ...string) (string, string, error) {
	t.Helper()
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	var out, errOut bytes.Buffer
	err := run(ctx, args, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestGenerateDefaultModel(t *testing.T) {
	out, stats, err := runCLI(t, "generate", "--prompt", "The lighthouse keeper", "--max-new-tokens", "8")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) == "" {
		t.Error("no text printed")
	}
	for _, want := range []string{"prompt ", "prefill ", "decode 8 tokens", "tok/s", "KV cache"} {
		if !strings.Contains(stats, want) {
			t.Errorf("stats line %q lacks %q", stats, want)
		}
	}
}

func TestGenerateJSON(t *testing.T) {
	out, _, err := runCLI(t, "generate", "--prompt", "Hello", "--max-new-tokens", "5", "--json", "--temperature", "0.8", "--seed", "7")
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Text         string `json:"text"`
		Tokens       []int  `json:"tokens"`
		PromptTokens int    `json:"prompt_tokens"`
		KVBytes      int64  `json:"kv_bytes"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("--json output is not JSON: %v\n%s", err, out)
	}
	if len(res.Tokens) == 0 || res.PromptTokens < 2 || res.KVBytes <= 0 {
		t.Errorf("implausible result: %+v", res)
	}
	// Same seed, same sample.
	out2, _, _ := runCLI(t, "generate", "--prompt", "Hello", "--max-new-tokens", "5", "--json", "--temperature", "0.8", "--seed", "7")
	var res2 struct{ Tokens []int }
	json.Unmarshal([]byte(out2), &res2)
	if !slices.Equal(res.Tokens, res2.Tokens) {
		t.Errorf("seeded sampling not reproducible: %v vs %v", res.Tokens, res2.Tokens)
	}
}

func TestGenerateErrors(t *testing.T) {
	long := strings.Repeat("lighthouse keeper ", 400)
	tiny := filepath.Join("..", "..", "tests", "testdata", "models", "llama3") // 256-token context
	notDir := filepath.Join(t.TempDir(), "file")
	os.WriteFile(notDir, []byte("x"), 0o644)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"generate"}, "no prompt"},
		{[]string{"generate", "--prompt", "x", "--device", "cuda"}, "without GPU support"},
		{[]string{"generate", "--prompt", "x", "--device", "tpu"}, "want cpu or cuda"},
		{[]string{"generate", "--prompt", long, "--model", tiny}, "context too long"},
		{[]string{"generate", "--prompt", "x", "--model", "/nonexistent/model"}, "no such file"},
		{[]string{"generate", "--prompt", "x", "--model", notDir}, "not a folder"},
		{[]string{"generate", "--prompt", "x", "--model", t.TempDir()}, "config.json"},
		{[]string{"frobnicate"}, "unknown command"},
	}
	for _, c := range cases {
		_, _, err := runCLI(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want one mentioning %q", c.args, err, c.want)
		}
	}
}

func TestHelp(t *testing.T) {
	out, _, err := runCLI(t, "--help")
	if err != nil || !strings.Contains(out, "generate") {
		t.Errorf("--help: %v %q", err, out)
	}
	_, stderr, err := runCLI(t, "generate", "--help")
	if err != nil || !strings.Contains(stderr, "-max-new-tokens") || !strings.Contains(stderr, "embedded default model") {
		t.Errorf("generate --help: %v %q", err, stderr)
	}
}

// TestEvalSmoke runs a CI-sized RULER evaluation twice: the second run resumes (no cell
// is redone) and the report lists every method.
func TestEvalSmoke(t *testing.T) {
	out := t.TempDir()
	args := []string{"eval", "ruler", "--tasks", "niah_single_1", "--lengths", "640", "--samples", "2",
		"--methods", "full,keydiff,lukv", "--compression", "0.5", "--out", out,
		"--haystack", filepath.Join("..", "..", "eval", "testdata", "haystack.txt"),
		"--words", filepath.Join("..", "..", "eval", "testdata", "words.txt"),
		"--curve", filepath.Join("..", "..", "models", "lukv-tiny", "curves", "expected-attention.npy")}
	table, _, err := runCLI(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| full | 0% | 100.0 |", "| keydiff | 50% |", "| lukv | 50% |"} {
		if !strings.Contains(table, want) {
			t.Errorf("report lacks %q:\n%s", want, table)
		}
	}
	data, err := os.ReadFile(filepath.Join(out, "results.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), "\n"); n != 6 {
		t.Errorf("results.jsonl has %d cells, want 6", n)
	}
	if _, _, err := runCLI(t, args...); err != nil {
		t.Fatal(err)
	}
	again, _ := os.ReadFile(filepath.Join(out, "results.jsonl"))
	if len(again) != len(data) {
		t.Errorf("resumed run redid cells: %d -> %d bytes", len(data), len(again))
	}
}

// TestEvalDefaultSplit: without --haystack and --words, eval ruler runs on the embedded
// evaluation split (a fresh clone needs no data folder), and the essay haystack is there.
func TestEvalDefaultSplit(t *testing.T) {
	out := t.TempDir()
	table, _, err := runCLI(t, "eval", "ruler", "--tasks", "niah_single_2", "--lengths", "512", "--samples", "1",
		"--methods", "full", "--out", out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table, "| full | 0% |") {
		t.Errorf("report lacks the full-cache row:\n%s", table)
	}
	data, err := os.ReadFile(filepath.Join(out, "results.jsonl"))
	if err != nil || strings.Count(string(data), "\n") != 1 {
		t.Fatalf("results.jsonl: %v, %q; want one cell", err, data)
	}
}

// TestEvalSmokeArtifacts: a RULER run writes the plots and a per-length report, and
// `eval report` merges two runs into one report without a model.
func TestEvalSmokeArtifacts(t *testing.T) {
	a, b, merged := t.TempDir(), t.TempDir(), t.TempDir()
	common := []string{"eval", "ruler", "--tasks", "niah_single_1", "--samples", "1",
		"--methods", "full,snapkv", "--compression", "0.5",
		"--haystack", filepath.Join("..", "..", "eval", "testdata", "haystack.txt"),
		"--words", filepath.Join("..", "..", "eval", "testdata", "words.txt")}
	if _, _, err := runCLI(t, append(common, "--lengths", "512", "--out", a)...); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI(t, append(common, "--lengths", "640", "--out", b)...); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"accuracy-vs-compression.png", "per-task-50.png", "report.md", "report.json"} {
		if st, err := os.Stat(filepath.Join(a, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	table, _, err := runCLI(t, "eval", "report", "--in", a+","+b, "--out", merged)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## 512 tokens", "## 640 tokens", "## All lengths"} {
		if !strings.Contains(table, want) {
			t.Errorf("merged report lacks %q:\n%s", want, table)
		}
	}
	if _, _, err := runCLI(t, "eval", "report", "--in", a+","+a, "--out", merged); err == nil || !strings.Contains(err.Error(), "in both") {
		t.Errorf("merging a run with itself: %v, want a duplicate-cell error", err)
	}
}

// TestEvalRunIdentity: a folder remembers what produced its cells (run.json). Resuming it
// with another seed or model is refused, naming what differs, as is merging two such
// folders in a report (unless --allow-mixed-runs); a matching rerun resumes.
func TestEvalRunIdentity(t *testing.T) {
	a, b, merged := t.TempDir(), t.TempDir(), t.TempDir()
	common := []string{"eval", "ruler", "--tasks", "niah_single_1", "--samples", "1", "--lengths", "512",
		"--methods", "full", "--haystack", filepath.Join("..", "..", "eval", "testdata", "haystack.txt"),
		"--words", filepath.Join("..", "..", "eval", "testdata", "words.txt")}
	if _, _, err := runCLI(t, append(common, "--out", a)...); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(a, "run.json")); err != nil {
		t.Fatalf("no run.json: %v", err)
	}
	if _, _, err := runCLI(t, append(common, "--out", a)...); err != nil {
		t.Fatalf("matching rerun: %v", err)
	}
	_, _, err := runCLI(t, append(common, "--out", a, "--seed", "7")...)
	if err == nil || !strings.Contains(err.Error(), "another run") || !strings.Contains(err.Error(), "seed 7 vs 42") {
		t.Errorf("rerun with another seed: %v, want a refusal naming the seed", err)
	}
	// Another model: the same folder with one byte of the weights' header changed.
	run, err := os.ReadFile(filepath.Join(a, "run.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(a, "run.json"), []byte(strings.Replace(string(run), `"model": "`, `"model": "0`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI(t, append(common, "--out", a)...); err == nil || !strings.Contains(err.Error(), "model ") {
		t.Errorf("rerun after the model changed: %v, want a refusal naming the model", err)
	}
	// Cells from before run.json existed: refused, unless --resume-unchecked.
	if err := os.Remove(filepath.Join(a, "run.json")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI(t, append(common, "--out", a)...); err == nil || !strings.Contains(err.Error(), "cannot be checked") {
		t.Errorf("cells without run.json: %v, want a refusal", err)
	}
	if _, _, err := runCLI(t, append(common, "--out", a, "--resume-unchecked")...); err != nil {
		t.Errorf("--resume-unchecked: %v", err)
	}
	if _, err := os.Stat(filepath.Join(a, "run.json")); err != nil {
		t.Errorf("--resume-unchecked did not record run.json: %v", err)
	}
	if _, _, err := runCLI(t, append(common, "--out", b, "--lengths", "640", "--seed", "7")...); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI(t, "eval", "report", "--in", a+","+b, "--out", merged); err == nil || !strings.Contains(err.Error(), "different runs") {
		t.Errorf("merging runs of two models and seeds: %v, want a refusal", err)
	}
	// A merge of one run keeps its run.json; a mixed merge into the same folder removes it.
	if _, _, err := runCLI(t, "eval", "report", "--in", a, "--out", merged); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(merged, "run.json")); err != nil {
		t.Errorf("merging one run: no run.json: %v", err)
	}
	if _, _, err := runCLI(t, "eval", "report", "--in", a+","+b, "--out", merged, "--allow-mixed-runs"); err != nil {
		t.Errorf("--allow-mixed-runs: %v", err)
	}
	if _, err := os.Stat(filepath.Join(merged, "run.json")); !os.IsNotExist(err) {
		t.Errorf("a mixed merge kept a run.json (%v)", err)
	}
}

// TestEvalLongBenchSmoke: LongBench-format files (handmade fixtures) run through the
// same runner and are scored with LongBench's metrics.
func TestEvalLongBenchSmoke(t *testing.T) {
	out := t.TempDir()
	data := filepath.Join("..", "..", "eval", "testdata", "longbench", "data")
	table, _, err := runCLI(t, "eval", "longbench", "--data", data, "--datasets", "hotpotqa,trec", "--samples", "1",
		"--lengths", "600", "--methods", "full,keydiff", "--compression", "0.5", "--out", out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"longbench/hotpotqa", "longbench/trec", "| keydiff | 50% |"} {
		if !strings.Contains(table, want) {
			t.Errorf("report lacks %q:\n%s", want, table)
		}
	}
	if _, _, err := runCLI(t, "eval", "longbench", "--out", out); err == nil || !strings.Contains(err.Error(), "--data") {
		t.Errorf("no --data: %v", err)
	}
}

// TestEvalLocksItsFolder: a second evaluation into a folder another one holds is refused.
func TestEvalLocksItsFolder(t *testing.T) {
	dir := t.TempDir()
	unlock, err := eval.LockFolder(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	_, _, err = runCLI(t, "eval", "ruler", "--tasks", "niah_single_1", "--lengths", "512", "--samples", "1", "--methods", "full",
		"--haystack", filepath.Join("..", "..", "eval", "testdata", "haystack.txt"),
		"--words", filepath.Join("..", "..", "eval", "testdata", "words.txt"), "--out", dir)
	if err == nil || !strings.Contains(err.Error(), "another lukv-run eval") {
		t.Errorf("second writer: %v, want a lock error", err)
	}
}

// TestEvalRulerQA: with --squad and --hotpotqa (handmade fixtures in RULER's input
// formats) the suite gains qa_1 and qa_2, scored with string_match_part.
func TestEvalRulerQA(t *testing.T) {
	out := t.TempDir()
	qa := filepath.Join("..", "..", "eval", "testdata", "qa")
	table, _, err := runCLI(t, "eval", "ruler", "--tasks", "qa_1,qa_2", "--lengths", "600", "--samples", "1",
		"--methods", "full,keydiff", "--compression", "0.5", "--out", out,
		"--squad", filepath.Join(qa, "squad_dev.json"), "--hotpotqa", filepath.Join(qa, "hotpotqa_dev_distractor.json"),
		"--haystack", filepath.Join("..", "..", "eval", "testdata", "haystack.txt"),
		"--words", filepath.Join("..", "..", "eval", "testdata", "words.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"qa_1", "qa_2", "| keydiff | 50% |"} {
		if !strings.Contains(table, want) {
			t.Errorf("report lacks %q:\n%s", want, table)
		}
	}
	_, _, err = runCLI(t, "eval", "ruler", "--tasks", "qa_1", "--lengths", "600", "--samples", "1", "--methods", "full", "--out", t.TempDir(),
		"--haystack", filepath.Join("..", "..", "eval", "testdata", "haystack.txt"),
		"--words", filepath.Join("..", "..", "eval", "testdata", "words.txt"))
	if err == nil || !strings.Contains(err.Error(), "--squad") {
		t.Errorf("qa_1 without --squad: %v, want an error naming --squad", err)
	}
}

// TestEvalReportGzip: `eval report` reads a folder whose cells are compressed, as
// results/ keeps them.
func TestEvalReportGzip(t *testing.T) {
	in, out := t.TempDir(), t.TempDir()
	text := `{"task":"vt","length":4096,"index":0,"method":"full","ratio":0,"score":1,"pred":"x"}` + "\n" +
		`{"task":"vt","length":4096,"index":0,"method":"lukv","ratio":0.8,"score":0.5,"pred":"y"}` + "\n"
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write([]byte(text))
	zw.Close()
	if err := os.WriteFile(filepath.Join(in, "results.jsonl.gz"), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	table, _, err := runCLI(t, "eval", "report", "--in", in, "--out", out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table, "| lukv | 80% | 50.0 |") {
		t.Errorf("report lacks the lukv row:\n%s", table)
	}
	merged, err := os.ReadFile(filepath.Join(out, "results.jsonl"))
	if err != nil || strings.Count(string(merged), "\n") != 2 {
		t.Errorf("merged results: %v, %q; want both cells", err, merged)
	}
}
