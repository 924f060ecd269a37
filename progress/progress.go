// Package progress reports how far a long job has come: a bar redrawn in place on a
// terminal, and plain periodic lines ("eval ruler: 120/440 cells, 27%, eta 3m") where
// the output is a log or a pipe, so a log file gets a few readable lines instead of
// hundreds of carriage-return frames.
package progress

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Options configure a Reporter. Zero values take the defaults.
type Options struct {
	Label string // what runs, e.g. "eval ruler"
	Unit  string // what is counted, e.g. "cells" (default "items")
	// Every and Step bound how often plain lines are printed: a line when Every has
	// passed since the last one (default 10 s) or the count has grown by Step of the
	// total (default 5%), whichever comes first.
	Every time.Duration
	Step  float64
	// Terminal forces the choice between the bar (true) and plain lines (false); nil:
	// the bar when the writer is a terminal.
	Terminal *bool
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// Reporter counts finished units of a job of known size and reports them.
type Reporter struct {
	w     io.Writer
	opt   Options
	total int

	mu        sync.Mutex
	done      int
	start     time.Time
	lastTime  time.Time
	lastCount int
	bar       *progressbar.ProgressBar
	finished  bool
}

// New starts reporting a job of total units to w.
func New(w io.Writer, total int, opt Options) *Reporter {
	if opt.Unit == "" {
		opt.Unit = "items"
	}
	if opt.Every <= 0 {
		opt.Every = 10 * time.Second
	}
	if opt.Step <= 0 {
		opt.Step = 0.05
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	r := &Reporter{w: w, opt: opt, total: total, start: opt.Now()}
	r.lastTime = r.start
	tty := IsTerminal(w)
	if opt.Terminal != nil {
		tty = *opt.Terminal
	}
	if tty {
		r.bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(w), progressbar.OptionSetDescription(opt.Label),
			progressbar.OptionShowCount(), progressbar.OptionSetPredictTime(true),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }))
	}
	return r
}

// IsTerminal reports whether w is a terminal (an *os.File on a tty).
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// Add records n more finished units.
func (r *Reporter) Add(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.done += n
	if r.bar != nil {
		r.bar.Add(n)
		return
	}
	now := r.opt.Now()
	step := int(r.opt.Step * float64(r.total))
	if now.Sub(r.lastTime) >= r.opt.Every || r.done-r.lastCount >= max(1, step) || r.done >= r.total {
		r.line(now)
	}
}

// SetTotal changes the job's size (units dropped from the plan, such as skipped cells).
func (r *Reporter) SetTotal(total int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.total = total
	if r.bar != nil {
		r.bar.ChangeMax(total)
	}
}

// Done is the number of units recorded so far.
func (r *Reporter) Done() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.done
}

// Finish ends the report: a last plain line if the count moved since the previous
// one, or the bar's line break. Later calls do nothing.
func (r *Reporter) Finish() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.finished {
		return
	}
	r.finished = true
	if r.bar != nil {
		if r.done < r.total {
			fmt.Fprintln(r.w) // the bar completes (and breaks its line) only at total
		}
		return
	}
	if r.done != r.lastCount {
		r.line(r.opt.Now())
	}
}

// line prints one plain progress line; the eta extrapolates the mean rate so far.
func (r *Reporter) line(now time.Time) {
	r.lastTime, r.lastCount = now, r.done
	pct := 100.0
	if r.total > 0 {
		pct = 100 * float64(r.done) / float64(r.total)
	}
	s := fmt.Sprintf("%d/%d %s, %.0f%%", r.done, r.total, r.opt.Unit, pct)
	if r.done > 0 && r.done < r.total {
		eta := time.Duration(float64(now.Sub(r.start)) / float64(r.done) * float64(r.total-r.done))
		s += ", eta " + roundETA(eta)
	}
	if r.opt.Label != "" {
		s = r.opt.Label + ": " + s
	}
	fmt.Fprintln(r.w, s)
}

// roundETA keeps two significant units: 45s, 3m10s, 2h5m.
func roundETA(d time.Duration) string {
	switch {
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		d = d.Round(10 * time.Second)
	default:
		d = d.Round(time.Minute)
	}
	s := d.String()
	for _, zero := range []string{"m0s", "h0m"} {
		if len(s) > len(zero) && s[len(s)-len(zero):] == zero {
			s = s[:len(s)-len(zero)+1]
		}
	}
	return s
}
