package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lukv/lukv/eviction"
)

// TestBadFlagsBeforeLoading: every bad value is refused with a message naming its flag,
// before any model is loaded (--model names a folder that does not exist, so an error
// about the model would mean the flag was checked too late).
func TestBadFlagsBeforeLoading(t *testing.T) {
	noModel := filepath.Join(t.TempDir(), "no-such-model")
	empty := filepath.Join(t.TempDir(), "empty.txt")
	os.WriteFile(empty, nil, 0o644)
	badUTF8 := filepath.Join(t.TempDir(), "latin1.txt")
	os.WriteFile(badUTF8, []byte("caf\xe9 au lait"), 0o644)
	cal := filepath.Join(t.TempDir(), "cal.json")
	os.WriteFile(cal, []byte(`{"context": "The grass is green.", "questions": ["What colour?"]}`), 0o644)
	gen := func(args ...string) []string {
		return append([]string{"generate", "--model", noModel, "--prompt", "Hello"}, args...)
	}
	cases := []struct {
		args []string
		want []string
	}{
		{gen("--temperature", "NaN"), []string{"--temperature", "NaN"}},
		{gen("--temperature", "-1"), []string{"--temperature", "-1", ">= 0"}},
		{gen("--temperature", "+Inf"), []string{"--temperature"}},
		{gen("--top-p", "2"), []string{"--top-p", "2", "0 < p <= 1"}},
		{gen("--top-p", "0"), []string{"--top-p", "0"}},
		{gen("--top-p", "-1"), []string{"--top-p", "-1"}},
		{gen("--top-p", "NaN"), []string{"--top-p", "NaN"}},
		{gen("--threads", "-3"), []string{"--threads", "-3"}},
		{gen("--max-new-tokens", "-1"), []string{"--max-new-tokens", "-1"}},
		{gen("--method", "snapkv", "--compression", "1.5"), []string{"--compression", "1.5"}},
		{gen("--method", "snapkv", "--compression", "NaN"), []string{"--compression", "NaN"}},
		{gen("--method", "snapkv", "--allocator", "nope"), []string{"--allocator", "nope"}},
		{gen("--method", "snapkv", "--compress-at", "later"), []string{"--compress-at", "later"}},
		{gen("--method", "snapkv", "--compress-at", "decode", "--every", "4", "--buffer", "8"), []string{"--every", "--buffer"}},
		{gen("--method", "snapkv", "--sink", "-1"), []string{"--sink"}},
		{gen("--method", "nope"), []string{"--method", "nope"}},
		{[]string{"generate", "--model", noModel, "--prompt-file", empty}, []string{"--prompt-file", "empty"}},
		{[]string{"generate", "--model", noModel, "--prompt-file", badUTF8}, []string{"--prompt-file", "invalid UTF-8", "byte offset 3", "0xe9"}},
		{gen("--question", "ok \xff"), []string{"--question", "invalid UTF-8", "byte offset 3"}},
		{[]string{"generate", "--model", noModel, "--prompt", "a\x80b"}, []string{"--prompt", "invalid UTF-8", "byte offset 1"}},
		{[]string{"profile", "--model", noModel, "--calibration", cal, "--horizon", "0"}, []string{"--horizon", "0", ">= 1"}},
		{[]string{"profile", "--model", noModel, "--calibration", cal, "--horizon", "-1"}, []string{"--horizon", "-1"}},
		{[]string{"profile", "--model", noModel, "--calibration", cal, "--threads", "-2"}, []string{"--threads", "-2"}},
		{[]string{"profile", "--model", noModel, "--calibration", cal, "--temperature", "NaN"}, []string{"--temperature"}},
		{[]string{"bench", "--model", noModel, "--threads", "-1"}, []string{"--threads", "-1"}},
		{[]string{"bench", "--model", noModel, "--bandwidth", "NaN"}, []string{"--bandwidth"}},
		{gen("--weights", "int4"), []string{"--weights", "int4"}},
		{[]string{"bench", "--model", noModel, "--weights", "q4"}, []string{"--weights", "q4"}},
		{[]string{"profile", "--model", noModel, "--calibration", cal, "--weights", "fp8"}, []string{"--weights", "fp8"}},
		{[]string{"eval", "ruler", "--model", noModel, "--out", filepath.Join(t.TempDir(), "out"), "--weights", "half"}, []string{"--weights", "half"}},
		{[]string{"serve", "--model", noModel, "--weights", "int2"}, []string{"--weights", "int2"}},
	}
	for _, c := range cases {
		_, _, err := runCLI(t, c.args...)
		if err == nil {
			t.Errorf("%q: no error", c.args)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: error %q, want one mentioning %q", c.args, err, w)
			}
		}
		if strings.Contains(err.Error(), "no-such-model") {
			t.Errorf("%q: the model was looked at before the flags were checked: %v", c.args, err)
		}
	}
}

// TestGenerateValidFlagEdges: the edges of the valid ranges run (top-p 1 and just above
// 0, temperature 0 and above, an empty --max-new-tokens 0 generation).
func TestGenerateValidFlagEdges(t *testing.T) {
	for _, args := range [][]string{
		{"--top-p", "1", "--temperature", "0.5"},
		{"--top-p", "1e-9", "--temperature", "2"},
		{"--max-new-tokens", "0"},
		{"--weights", "int8"},
		{"--weights", "bf16"},
		{"--weights", "F32"},
	} {
		all := append([]string{"generate", "--prompt", "Hello", "--max-new-tokens", "3", "--json"}, args...)
		if _, _, err := runCLI(t, all...); err != nil {
			t.Errorf("%q: %v", args, err)
		}
	}
}

// TestInterrupted: a cancelled context (Ctrl-C) stops generate, profile and bench with
// an error that says interrupted (main exits non-zero on it), and bench's JSON keeps
// what it measured before.
func TestInterrupted(t *testing.T) {
	cal := filepath.Join(t.TempDir(), "cal.json")
	os.WriteFile(cal, []byte(`{"context": "The grass is green. The sky is blue. The sun is bright. Here we go again and again.", "questions": ["What colour is the grass?"]}`), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, args := range [][]string{
		{"generate", "--prompt", "The lighthouse keeper"},
		{"profile", "--calibration", cal, "--horizon", "4", "--out", filepath.Join(t.TempDir(), "c.npy")},
		{"bench", "--contexts", "32", "--decode-steps", "1", "--warmup", "8"},
	} {
		_, _, err := runCLIContext(t, ctx, args...)
		if !errors.Is(err, errInterrupted) || !strings.Contains(err.Error(), args[0]+" interrupted") || !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: %v, want an interruption", args[0], err)
		}
	}
	if _, _, err := runCLIContext(t, ctx, "generate", "--top-p", "2", "--prompt", "x"); errors.Is(err, errInterrupted) {
		t.Errorf("a flag error reported as an interruption: %v", err)
	}
}

// TestProfileRecordsHorizon: a short profile of the default model writes a curve whose
// sidecar JSON records the horizon, as does the summary.
func TestProfileRecordsHorizon(t *testing.T) {
	dir := t.TempDir()
	cal := filepath.Join(dir, "cal.json")
	os.WriteFile(cal, []byte(`{"context": "The grass is green. One of the special magic numbers for apple is: 482910. The sky is blue. The sun is bright.", "questions": ["What is the special magic number for apple?", "What colour is the sky?"]}`), 0o644)
	out := filepath.Join(dir, "curve.npy")
	summary, _, err := runCLI(t, "profile", "--calibration", cal, "--horizon", "3", "--out", out)
	if err != nil {
		t.Fatal(err)
	}
	var s struct{ Horizon int }
	if err := json.Unmarshal([]byte(summary), &s); err != nil || s.Horizon != 3 {
		t.Errorf("summary %s: horizon %d (%v), want 3", summary, s.Horizon, err)
	}
	data, err := os.ReadFile(out + ".json")
	if err != nil {
		t.Fatal(err)
	}
	var meta eviction.CurveMeta
	if err := json.Unmarshal(data, &meta); err != nil || meta.Horizon != 3 || meta.Questions != 2 {
		t.Errorf("sidecar %s: %+v (%v), want horizon 3 and 2 questions", data, meta, err)
	}
}

// TestBenchDefaultsFollowModel: with no --contexts, bench measures the contexts the
// model's context holds (the default model's is 16k: 8192 only), so the default run
// starts instead of failing; the time budget of 1 ns skips the measurement itself.
func TestBenchDefaultsFollowModel(t *testing.T) {
	js := filepath.Join(t.TempDir(), "bench.json")
	if _, _, err := runCLI(t, "bench", "--warmup", "8", "--max-seconds", "1e-9", "--json", js); err != nil {
		t.Fatal(err)
	}
	rep := readBench(t, js)
	if got := rep.Settings.Contexts; len(got) != 1 || got[0] != 8192 || rep.Model.MaxContext != 16384 {
		t.Errorf("default contexts %v on a model of %d positions, want [8192] on 16384", got, rep.Model.MaxContext)
	}
	tiny := filepath.Join("..", "..", "tests", "testdata", "models", "llama3") // 256 positions
	if _, _, err := runCLI(t, "bench", "--model", tiny, "--warmup", "8", "--max-seconds", "1e-9", "--json", js); err != nil {
		t.Fatal(err)
	}
	if got := readBench(t, js).Settings.Contexts; len(got) != 1 || got[0] != 128 {
		t.Errorf("default contexts on a 256-position model: %v, want [128]", got)
	}
}

// TestMain runs the command line itself when LUKV_RUN_AS_MAIN is set, so that a test can
// start lukv-run as a process (the test binary) and signal it.
func TestMain(m *testing.M) {
	if os.Getenv("LUKV_RUN_AS_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestCtrlCStopsBench: SIGINT during a bench's decode rows stops the process within a
// second or two, with exit status 130 and a message saying it was interrupted; the
// JSON file keeps the context, marked interrupted.
func TestCtrlCStopsBench(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a process")
	}
	js := filepath.Join(t.TempDir(), "bench.json")
	cmd := exec.Command(os.Args[0], "bench", "--contexts", "256", "--decode-steps", "16000", "--warmup", "8",
		"--compression", "0.5", "--overhead-contexts", "none", "--json", js)
	cmd.Env = append(os.Environ(), "LUKV_RUN_AS_MAIN=1", "XDG_CACHE_HOME="+t.TempDir())
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait for the decode of the full cache to start, then press Ctrl-C.
	var log strings.Builder
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		log.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), "context 256: prefill") {
			break
		}
	}
	time.Sleep(200 * time.Millisecond)
	sent := time.Now()
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(stderr)
	log.Write(rest)
	err = cmd.Wait()
	took := time.Since(sent)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 130 {
		t.Fatalf("exit %v, want status 130; stderr:\n%s", err, log.String())
	}
	if !strings.Contains(log.String(), "lukv-run: bench interrupted") {
		t.Errorf("stderr does not say interrupted:\n%s", log.String())
	}
	if took > 5*time.Second {
		t.Errorf("stopped %v after the signal", took)
	}
	t.Logf("stopped %v after SIGINT", took)
	rep := readBench(t, js)
	if len(rep.Contexts) != 1 || rep.Contexts[0].Status != "interrupted" || rep.Contexts[0].Prefill == nil {
		t.Errorf("JSON after the interruption: %+v, want the context, its prefill and status interrupted", rep.Contexts)
	}
}
