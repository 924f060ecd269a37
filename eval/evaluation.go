package eval

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/lukv/lukv/model"
	"github.com/lukv/lukv/progress"
)

// Item is one sample of a suite to run: the (task, length, index) its cells are filed
// under, and how to make it.
type Item struct {
	Task          string
	Length, Index int
	Make          func() (Sample, error)
}

// Skip is what an evaluation leaves out, and why: one sample (Index >= 0) or every
// sample of a task at a length (Index -1).
type Skip struct {
	Task   string `json:"task"`
	Length int    `json:"length"`
	Index  int    `json:"index"`
	Reason string `json:"reason"`
}

// Options describe an evaluation run (Evaluate).
type Options struct {
	Runner  *Runner
	Methods []MethodSpec
	Ratios  []float64 // compression ratios of every method but the full cache
	Items   []Item    // the samples to run, in order
	// Out is the run's folder: results.jsonl (appended cell by cell, so a rerun
	// resumes) and run.json (Identity); report.WriteEval adds the report there.
	Out             string
	Identity        RunIdentity
	ResumeUnchecked bool // resume cells written before run.json existed
	// Log receives warnings (skipped cells) and progress: a bar on a terminal, plain
	// lines elsewhere; nil: io.Discard.
	Log   io.Writer
	Label string // progress label, e.g. "eval ruler"
	// StopWithin bounds how long Evaluate waits, once ctx is cancelled, for the sample
	// at hand to notice (the forward pass checks ctx per layer, and one layer of a long
	// prefill on a CPU can take seconds); then it writes the partial report and returns
	// while that sample's last layer finishes in the background, its cells dropped.
	// Default DefaultStopWithin.
	StopWithin time.Duration
}

// DefaultStopWithin is Options.StopWithin's default: an interrupt is answered within
// about a second, report included.
const DefaultStopWithin = 500 * time.Millisecond

// Result is what an evaluation did.
type Result struct {
	Cells  []Cell // every cell of the folder: resumed ones and this run's
	Status Status
}

// Status is how complete a run is; the report (report.WriteEval) carries it.
type Status struct {
	Partial bool         `json:"partial"` // stopped before every planned cell was done
	Planned int          `json:"planned_cells"`
	Done    int          `json:"done_cells"`
	Groups  []GroupCount `json:"per_task_length"`
	Skipped []Skip       `json:"skipped,omitempty"`
}

// GroupCount is the planned and done cells of one task at one length.
type GroupCount struct {
	Task    string `json:"task"`
	Length  int    `json:"length"`
	Done    int    `json:"done"`
	Planned int    `json:"planned"`
}

// CheckRatio rejects a compression ratio outside [0, 1) (what eviction's allocators
// accept), naming the flag-style value.
func CheckRatio(r float64) error {
	if r < 0 || r >= 1 || math.IsNaN(r) {
		return fmt.Errorf("compression ratio %v: want 0 <= ratio < 1 (the fraction of the context's KV cache to drop)", r)
	}
	return nil
}

func (o *Options) check() error {
	if o.Runner == nil || o.Runner.Model == nil || o.Runner.Tokenizer == nil {
		return errors.New("eval: Options.Runner needs a model and a tokenizer")
	}
	if len(o.Methods) == 0 {
		return errors.New("eval: no methods")
	}
	if o.Out == "" {
		return errors.New("eval: Options.Out is empty")
	}
	for _, r := range o.Ratios {
		if err := CheckRatio(r); err != nil {
			return err
		}
	}
	for _, m := range o.Methods {
		if m.Scorer != nil && len(o.Ratios) == 0 {
			return fmt.Errorf("eval: method %s needs at least one compression ratio", m.Name)
		}
	}
	return nil
}

// jobs are the (method, ratio) cells of one sample, in order.
func (o *Options) jobs() []Job {
	var js []Job
	for _, m := range o.Methods {
		if m.Scorer == nil {
			js = append(js, Job{Method: m, Ratio: 0})
			continue
		}
		for _, r := range o.Ratios {
			js = append(js, Job{Method: m, Ratio: r})
		}
	}
	return js
}

type groupKey struct {
	task   string
	length int
}

// plan checks every task x length before anything runs: its first sample is made
// (and kept for the run), and a group whose sample cannot fit the length, or whose
// length passes the model's context, is skipped with a warning instead of failing
// the run halfway. Other errors (an unknown task, a missing data file) fail at once.
func (o *Options) plan(ctx context.Context, log io.Writer) (items []Item, skipped []Skip, err error) {
	maxPos := o.Runner.Model.Config.MaxPositionEmbeddings
	verdict := map[groupKey]*Skip{}
	for _, it := range o.Items {
		g := groupKey{it.Task, it.Length}
		s, seen := verdict[g]
		if !seen {
			if err := ctx.Err(); err != nil {
				return nil, nil, err
			}
			if it.Length > maxPos {
				s = &Skip{Task: it.Task, Length: it.Length, Index: -1,
					Reason: fmt.Sprintf("length %d passes the model's context of %d tokens", it.Length, maxPos)}
			} else if sample, merr := it.Make(); errors.Is(merr, ErrDoesNotFit) {
				s = &Skip{Task: it.Task, Length: it.Length, Index: -1, Reason: merr.Error()}
			} else if merr != nil {
				return nil, nil, fmt.Errorf("%s length %d sample %d: %w", it.Task, it.Length, it.Index, merr)
			} else {
				it.Make = func() (Sample, error) { return sample, nil }
			}
			verdict[g] = s
			if s != nil {
				skipped = append(skipped, *s)
				fmt.Fprintf(log, "eval: warning: skipping %s at length %d: %s\n", it.Task, it.Length, s.Reason)
			}
		}
		if s == nil {
			items = append(items, it)
		}
	}
	return items, skipped, nil
}

// Evaluate runs every item with every job into opt.Out, resuming the cells already
// in its results.jsonl. Task x length groups that cannot run are skipped with a
// warning (Status.Skipped) before anything starts. When ctx is cancelled (Ctrl-C) it
// stops within about opt.StopWithin and returns the cells so far, a partial Status
// with the counts, and an error wrapping ctx's; running it again resumes. Whether it
// succeeds or not, a non-nil Result is what report.WriteEval reports. The folder is
// created only once the plan holds, and removed again if it was new and the run failed
// (other than by an interrupt) before writing any cell.
func Evaluate(ctx context.Context, opt Options) (res *Result, err error) {
	if err := opt.check(); err != nil {
		return nil, err
	}
	log := opt.Log
	if log == nil {
		log = io.Discard
	}
	items, skipped, err := opt.plan(ctx, log)
	if err != nil {
		return nil, err
	}
	jobs := opt.jobs()
	if len(items) == 0 {
		return nil, fmt.Errorf("eval: nothing to run: every task x length was skipped (see the warnings above)")
	}

	created, err := makeFolder(opt.Out)
	if err != nil {
		return nil, err
	}
	wrote := false // a cell reached results.jsonl
	defer func() {
		if err != nil && created && !wrote && ctx.Err() == nil {
			os.RemoveAll(opt.Out)
		}
	}()
	unlock, err := LockFolder(opt.Out)
	if err != nil {
		return nil, err
	}
	defer unlock()
	jsonl := filepath.Join(opt.Out, "results.jsonl")
	cells, err := LoadCells(jsonl)
	if err != nil {
		return nil, err
	}
	if err := checkRunIdentity(opt.Out, opt.Identity, len(cells), opt.ResumeUnchecked, log); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(jsonl, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()

	// The plan's counts: every cell of every item, and those already there.
	done := map[string]bool{}
	for _, c := range cells {
		done[c.Key()] = true
	}
	st := Status{Skipped: skipped}
	groupIdx := map[groupKey]int{}
	countGroup := func(it Item, planned, doneN int) {
		g := groupKey{it.Task, it.Length}
		i, ok := groupIdx[g]
		if !ok {
			i = len(st.Groups)
			groupIdx[g] = i
			st.Groups = append(st.Groups, GroupCount{Task: it.Task, Length: it.Length})
		}
		st.Groups[i].Planned += planned
		st.Groups[i].Done += doneN
		st.Planned += planned
		st.Done += doneN
	}
	for _, it := range items {
		n := 0
		for _, j := range jobs {
			if done[it.cell(j).Key()] {
				n++
			}
		}
		countGroup(it, len(jobs), n)
	}
	bar := progress.New(log, st.Planned, progress.Options{Label: opt.Label, Unit: "cells"})
	bar.Add(st.Done)

	// The samples run in a worker, so that a cancelled ctx is answered within
	// StopWithin even when the sample at hand is in a long layer; mu guards what the
	// worker and this goroutine share, and closed drops cells that come too late.
	var mu sync.Mutex
	closed := false
	enc := json.NewEncoder(f)
	worker := make(chan error, 1)
	go func() {
		worker <- func() error {
			for _, it := range items {
				if err := ctx.Err(); err != nil {
					return err
				}
				var todo []Job
				for _, j := range jobs {
					if !done[it.cell(j).Key()] {
						todo = append(todo, j)
					}
				}
				if len(todo) == 0 {
					continue
				}
				skip := func(why error) {
					mu.Lock()
					defer mu.Unlock()
					if closed {
						return
					}
					s := Skip{Task: it.Task, Length: it.Length, Index: it.Index, Reason: why.Error()}
					st.Skipped = append(st.Skipped, s)
					countGroup(it, -len(todo), 0)
					bar.SetTotal(st.Planned)
					fmt.Fprintf(log, "eval: warning: skipping %s length %d sample %d: %s\n", it.Task, it.Length, it.Index, s.Reason)
				}
				s, err := it.Make()
				if errors.Is(err, ErrDoesNotFit) {
					skip(err)
					continue
				}
				if err != nil {
					return fmt.Errorf("%s length %d sample %d: %w", it.Task, it.Length, it.Index, err)
				}
				// One prefill of the context serves every job of the sample.
				err = opt.Runner.RunSample(ctx, s, it.Index, todo, func(c Cell) error {
					mu.Lock()
					defer mu.Unlock()
					if closed {
						return context.Canceled
					}
					c.Length = it.Length
					if err := enc.Encode(c); err != nil {
						return err
					}
					wrote = true
					cells = append(cells, c)
					countGroup(it, 0, 1)
					bar.Add(1)
					return nil
				})
				if errors.Is(err, model.ErrContextTooLong) && ctx.Err() == nil {
					skip(err)
					continue
				}
				if err != nil {
					return fmt.Errorf("%s length %d sample %d: %w", it.Task, it.Length, it.Index, err)
				}
			}
			return nil
		}()
	}()
	var runErr error
	select {
	case runErr = <-worker:
	case <-ctx.Done():
		wait := opt.StopWithin
		if wait <= 0 {
			wait = DefaultStopWithin
		}
		select {
		case runErr = <-worker:
		case <-time.After(wait):
			runErr = ctx.Err()
		}
	}
	mu.Lock()
	closed = true
	mu.Unlock()
	bar.Finish()
	st.Partial = st.Done < st.Planned
	// Runner.Time is the worker's until it has returned (runErr nil: it has).
	if runErr == nil && opt.Runner.Time.Samples > 0 {
		fmt.Fprintln(log, "eval: time:", opt.Runner.Time)
	}
	res = &Result{Cells: cells, Status: st}
	if runErr != nil {
		if ctx.Err() != nil && errors.Is(runErr, ctx.Err()) {
			return res, fmt.Errorf("eval: interrupted with %d of %d cells done; run the same command again to resume: %w", st.Done, st.Planned, runErr)
		}
		return res, fmt.Errorf("eval: stopped with %d of %d cells done: %w", st.Done, st.Planned, runErr)
	}
	return res, nil
}

// cell is the result key of job j on the item.
func (it Item) cell(j Job) Cell {
	r := j.Ratio
	if j.Method.Scorer == nil {
		r = 0
	}
	return Cell{Task: it.Task, Length: it.Length, Index: it.Index, Method: j.Method.Name, Ratio: r}
}

// makeFolder creates dir if it is not there, and says whether it did.
func makeFolder(dir string) (created bool, err error) {
	if _, err := os.Stat(dir); err == nil {
		return false, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, fmt.Errorf("eval: creating the output folder: %w", err)
	}
	return true, nil
}

// RulerItems are samples 0..samples-1 of each task at each length, in that order (task,
// then length, then index), made by g when they run.
func RulerItems(g *Generator, tasks []string, lengths []int, samples int) []Item {
	var items []Item
	for _, task := range tasks {
		for _, length := range lengths {
			for i := 0; i < samples; i++ {
				items = append(items, Item{Task: task, Length: length, Index: i, Make: func() (Sample, error) { return g.Make(task, length, i) }})
			}
		}
	}
	return items
}

// LongBenchItems loads opt's LongBench samples once per prompt budget in lengths
// (opt.MaxTokens is set to each), numbered per dataset.
func LongBenchItems(opt LongBenchOptions, lengths []int) ([]Item, error) {
	var items []Item
	for _, length := range lengths {
		opt.MaxTokens = length
		list, err := LoadLongBench(opt)
		if err != nil {
			return nil, err
		}
		index := map[string]int{}
		for _, s := range list {
			items = append(items, Item{Task: s.Task, Length: length, Index: index[s.Task], Make: func() (Sample, error) { return s, nil }})
			index[s.Task]++
		}
	}
	return items, nil
}
