//go:build unix

package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestEvalSIGINT: a real SIGINT during `lukv-run eval` (as Ctrl-C sends) stops it with
// an error, so the process exits non-zero, and a partial report (eval's
// TestEvaluateInterruptAndResume resumes one).
func TestEvalSIGINT(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	out := t.TempDir()
	args := []string{"ruler", "--tasks", "niah_single_1", "--lengths", "512", "--samples", "2",
		"--methods", "full", "--out", out, "--haystack", testHaystack, "--words", testWords}
	go func() {
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if st, err := os.Stat(filepath.Join(out, "results.jsonl")); err == nil && st.Size() > 0 {
				syscall.Kill(os.Getpid(), syscall.SIGINT) // runEval is listening: it has written a cell
				return
			}
		}
	}()
	// As main does: the signal cancels the command's context.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var stdout, stderr bytes.Buffer
	err := runEval(ctx, args, &stdout, &stderr)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	md, _ := os.ReadFile(filepath.Join(out, "report.md"))
	if !strings.Contains(string(md), "Partial report: 1 of 2 planned cells done") {
		t.Errorf("report.md not marked partial:\n%s", md)
	}
}
