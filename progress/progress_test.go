package progress

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestPlainLines: off a terminal the reporter prints whole lines, no carriage returns,
// one per 5% of the total or per 10 s, with the count, the share and an eta.
func TestPlainLines(t *testing.T) {
	var buf bytes.Buffer
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	r := New(&buf, 440, Options{Label: "eval ruler", Unit: "cells", Now: clock})
	for i := 0; i < 120; i++ {
		now = now.Add(time.Second / 2) // 60 s for 120 cells: 160 s left for 320
		r.Add(1)
	}
	lines := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
	if strings.Contains(buf.String(), "\r") {
		t.Fatalf("carriage return in plain output: %q", buf.String())
	}
	// 120 cells in 60 s: a line every 22 cells (5%) or 10 s (20 cells), whichever first.
	if len(lines) < 5 || len(lines) > 7 {
		t.Errorf("%d lines for 120 of 440 cells over 60 s, want 5 to 7:\n%s", len(lines), buf.String())
	}
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "eval ruler: 120/440 cells, 27%, eta ") {
		t.Errorf("last line %q", last)
	}
	if want := "eta 2m40s"; !strings.HasSuffix(last, want) {
		t.Errorf("last line %q, want it to end %q", last, want)
	}
	buf.Reset()
	r.Finish()
	if buf.Len() != 0 {
		t.Errorf("Finish repeated an unchanged count: %q", buf.String())
	}
	r.SetTotal(430) // ten cells dropped from the plan
	r.Add(310)
	r.Finish()
	if got := buf.String(); got != "eval ruler: 430/430 cells, 100%\n" {
		t.Errorf("final line %q", got)
	}
}

// TestTimeBound: a slow job still prints a line every 10 s although 5% takes longer.
func TestTimeBound(t *testing.T) {
	var buf bytes.Buffer
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := New(&buf, 10000, Options{Unit: "cells", Now: func() time.Time { return now }})
	for i := 0; i < 30; i++ {
		now = now.Add(time.Second)
		r.Add(1)
	}
	if n := strings.Count(buf.String(), "\n"); n != 3 {
		t.Errorf("%d lines in 30 s, want 3:\n%s", n, buf.String())
	}
}

// TestBarOnTerminal: with Terminal forced on, the bar is drawn in place (carriage
// returns), so the plain-line path is the one a log gets.
func TestBarOnTerminal(t *testing.T) {
	var buf bytes.Buffer
	on := true
	r := New(&buf, 4, Options{Label: "x", Terminal: &on})
	r.Add(4)
	r.Finish()
	if !strings.Contains(buf.String(), "\r") {
		t.Errorf("terminal output has no carriage return: %q", buf.String())
	}
	if IsTerminal(&buf) {
		t.Error("a buffer is not a terminal")
	}
}
