package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"

	"github.com/schollz/progressbar/v3"

	"github.com/lukv/lukv/eval"
	"github.com/lukv/lukv/eviction"
	"github.com/lukv/lukv/models"
)

// evalMethod maps a --methods name to a scorer and allocator: full; a scorer name
// (uniform budgets); pyramidkv, adakv or lukv (that allocator with ExpectedAttention,
// LU-KV's default scorer); or allocator:scorer (e.g. lukv:keydiff) for any other pair.
// lukv reads curves[scorer], the budget curve profiled with the same scorer.
func evalMethod(name string, curves func(scorer string) (*eviction.BudgetCurve, error)) (eval.MethodSpec, error) {
	if name == "full" {
		return eval.MethodSpec{Name: "full"}, nil
	}
	allocNames := map[string]string{"pyramidkv": "pyramid", "adakv": "adakv", "lukv": "lukv"}
	alloc, scorer := "uniform", name
	if a, sc, ok := strings.Cut(name, ":"); ok {
		if allocNames[a] == "" {
			return eval.MethodSpec{}, fmt.Errorf("--methods %s: unknown allocator %q (want pyramidkv, adakv or lukv before the colon)", name, a)
		}
		alloc, scorer = allocNames[a], sc
	} else if a := allocNames[name]; a != "" {
		alloc, scorer = a, "expected-attention"
	}
	s, err := eviction.NewScorer(scorer)
	if err != nil {
		return eval.MethodSpec{}, fmt.Errorf("--methods %s: %w", name, err)
	}
	var curve *eviction.BudgetCurve
	if alloc == "lukv" {
		if curve, err = curves(scorer); err != nil {
			return eval.MethodSpec{}, fmt.Errorf("--methods %s: %w", name, err)
		}
	}
	a, err := eviction.NewAllocator(alloc, curve)
	if err != nil {
		return eval.MethodSpec{}, fmt.Errorf("--methods %s: %w", name, err)
	}
	return eval.MethodSpec{Name: name, Scorer: s, Allocator: a}, nil
}

func splitList[T any](flagName, v string, parse func(string) (T, error)) ([]T, error) {
	var out []T
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		x, err := parse(f)
		if err != nil {
			return nil, fmt.Errorf("--%s %q: %w", flagName, f, err)
		}
		out = append(out, x)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--%s: empty list", flagName)
	}
	return out, nil
}

func runEval(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "ruler" {
		fmt.Fprintln(stderr, "Usage: lukv-run eval ruler [flags]   (LongBench is not implemented yet)")
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return nil
		}
		return errors.New("eval: want the suite name 'ruler'")
	}
	fs := flag.NewFlagSet("eval ruler", flag.ContinueOnError)
	fs.SetOutput(stderr)
	modelFlag := fs.String("model", "", "Hugging Face checkpoint folder; empty: the embedded default model")
	methodsFlag := fs.String("methods", "full,snapkv,expected-attention,keydiff,pyramidkv,adakv,lukv", "methods: full, a scorer name (uniform budgets), pyramidkv, adakv or lukv (with expected-attention scores), or allocator:scorer such as lukv:keydiff")
	curveFlag := fs.String("curve", "", "LU-KV curve for lukv methods (default: the default model's curve for the method's scorer, models/lukv-tiny/curves/<scorer>.npy)")
	ratios := fs.String("compression", "0.5,0.8,0.9", "compression ratios")
	lengths := fs.String("lengths", "4096", "sample lengths in tokens")
	tasksFlag := fs.String("tasks", strings.Join(eval.Tasks(), ","), "tasks")
	samples := fs.Int("samples", 10, "samples per task and length")
	haystack := fs.String("haystack", "data/corpus/eval_haystack_devil.txt", "essay haystack text, one paragraph per line (lukv-tiny's reserved evaluation prose)")
	wordsFlag := fs.String("words", "data/corpus/words_eval_noun.txt", "key and word vocabulary, one per line (lukv-tiny's evaluation split)")
	seed := fs.Uint64("seed", 42, "generator seed")
	out := fs.String("out", "eval-out", "output folder: results.jsonl (resumable), report.md, report.json")
	device := fs.String("device", "cpu", "cpu or cuda")
	threads := fs.Int("threads", 0, "CPU threads (0: all cores)")
	cpuProfile := fs.String("cpuprofile", "", "write a Go CPU profile of the run to this file")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	ratioList, err := splitList("compression", *ratios, func(s string) (float64, error) { return strconv.ParseFloat(s, 64) })
	if err != nil {
		return err
	}
	lengthList, err := splitList("lengths", *lengths, strconv.Atoi)
	if err != nil {
		return err
	}
	taskList, err := splitList("tasks", *tasksFlag, func(s string) (string, error) { return s, nil })
	if err != nil {
		return err
	}
	hay, err := eval.ReadLines(*haystack)
	if err != nil {
		return fmt.Errorf("--haystack: %w", err)
	}
	words, err := eval.ReadLines(*wordsFlag)
	if err != nil {
		return fmt.Errorf("--words: %w", err)
	}
	_, m, tok, err := openModel(*modelFlag, *device, *threads)
	if err != nil {
		return err
	}
	if *cpuProfile != "" {
		pf, err := os.Create(*cpuProfile)
		if err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	// LU-KV curves: --curve for every lukv method, else the default model's curve
	// profiled with the method's scorer.
	curves := func(scorer string) (*eviction.BudgetCurve, error) {
		path := *curveFlag
		if path == "" {
			if *modelFlag != "" {
				return nil, fmt.Errorf("lukv needs --curve FILE.npy for a --model other than the default (make one with lukv-run profile)")
			}
			var err error
			if path, err = models.DefaultCurve(scorer); err != nil {
				return nil, err
			}
		}
		c, err := eviction.ReadNPY(path)
		if err != nil {
			return nil, fmt.Errorf("lukv curve: %w", err)
		}
		return c, nil
	}
	methods, err := splitList("methods", *methodsFlag, func(s string) (eval.MethodSpec, error) { return evalMethod(s, curves) })
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	jsonl := filepath.Join(*out, "results.jsonl")
	cells, err := eval.LoadCells(jsonl)
	if err != nil {
		return err
	}
	done := map[string]bool{}
	for _, c := range cells {
		done[c.Key()] = true
	}
	f, err := os.OpenFile(jsonl, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()

	gen := &eval.Generator{Tokenizer: tok, Haystack: hay, Words: words, Seed: *seed}
	runner := &eval.Runner{Model: m, Tokenizer: tok, Sink: 4, Window: 1}
	perSample := 0
	for _, meth := range methods {
		if meth.Scorer == nil {
			perSample++
		} else {
			perSample += len(ratioList)
		}
	}
	total := len(taskList) * len(lengthList) * *samples * perSample
	bar := progressbar.NewOptions(total, progressbar.OptionSetWriter(stderr), progressbar.OptionSetDescription("eval ruler"),
		progressbar.OptionShowCount(), progressbar.OptionSetPredictTime(true), progressbar.OptionOnCompletion(func() { fmt.Fprintln(stderr) }))
	enc := json.NewEncoder(f)
	// SIGINT/SIGTERM (Ctrl-C, timeout) finish the sample at hand, then write the report
	// of what is done; a rerun with the same --out resumes.
	stop, stopNotify := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopNotify()
	interrupted := false
samples:
	for _, task := range taskList {
		for _, length := range lengthList {
			for i := 0; i < *samples; i++ {
				if stop.Err() != nil {
					interrupted = true
					break samples
				}
				var jobs []eval.Job
				for _, meth := range methods {
					rs := ratioList
					if meth.Scorer == nil {
						rs = []float64{0}
					}
					for _, ratio := range rs {
						if done[eval.Cell{Task: task, Length: length, Index: i, Method: meth.Name, Ratio: ratio}.Key()] {
							bar.Add(1)
							continue
						}
						jobs = append(jobs, eval.Job{Method: meth, Ratio: ratio})
					}
				}
				if len(jobs) == 0 {
					continue
				}
				s, err := gen.Make(task, length, i)
				if err != nil {
					return err
				}
				// One prefill of the context serves every job of the sample.
				err = runner.RunSample(s, i, jobs, func(c eval.Cell) error {
					c.Length = length
					cells = append(cells, c)
					bar.Add(1)
					return enc.Encode(c)
				})
				if err != nil {
					return fmt.Errorf("%s length %d sample %d: %w", task, length, i, err)
				}
			}
		}
	}
	if runner.Time.Samples > 0 {
		fmt.Fprintln(stderr, "eval: time:", runner.Time)
	}
	if interrupted {
		fmt.Fprintf(stderr, "eval: interrupted with %d of %d cells done; run the same command again to resume\n", len(cells), total)
	}
	rep, err := os.Create(filepath.Join(*out, "report.md"))
	if err != nil {
		return err
	}
	fmt.Fprintf(rep, "# RULER-style evaluation\n\nModel %s, %d samples per task and length, lengths %s, command: `lukv-run eval %s`\n\n", m.Config.Arch, *samples, *lengths, strings.Join(args, " "))
	eval.WriteTable(rep, cells)
	if err := rep.Close(); err != nil {
		return err
	}
	eval.WriteTable(stdout, cells)
	js, err := json.MarshalIndent(cells, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(*out, "report.json"), js, 0o644)
}
