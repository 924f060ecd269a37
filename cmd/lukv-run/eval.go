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
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/schollz/progressbar/v3"

	"github.com/lukv/lukv/eval"
	"github.com/lukv/lukv/eviction"
	"github.com/lukv/lukv/models"
	"github.com/lukv/lukv/report"
)

// evalMethod maps a --methods name to a scorer and allocator: full; a scorer name
// (uniform budgets); pyramidkv (SnapKV scores, as kvpress), adakv or lukv (with
// ExpectedAttention, LU-KV's default scorer); or allocator:scorer (e.g. lukv:keydiff)
// for any other pair.
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
		// PyramidKV is SnapKV's scores with pyramid budgets (kvpress's PyramidKVPress
		// extends SnapKVPress); AdaKV and LU-KV use ExpectedAttention, LU-KV's scorer.
		alloc, scorer = a, "expected-attention"
		if name == "pyramidkv" {
			scorer = "snapkv"
		}
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

// evalItem is one sample of a suite to run: where its cells go and how to make it.
type evalItem struct {
	task          string
	length, index int
	make          func() (eval.Sample, error)
}

func runEval(args []string, stdout, stderr io.Writer) error {
	suite := ""
	if len(args) > 0 {
		suite = args[0]
	}
	switch suite {
	case "report":
		return runEvalReport(args[1:], stdout, stderr)
	case "ruler", "longbench":
	default:
		fmt.Fprintln(stderr, "Usage: lukv-run eval ruler|longbench [flags]   (lukv-run eval report --in DIRS --out DIR merges runs)")
		if suite == "-h" || suite == "--help" {
			return nil
		}
		return errors.New("eval: want the suite name 'ruler' or 'longbench'")
	}
	fs := flag.NewFlagSet("eval "+suite, flag.ContinueOnError)
	fs.SetOutput(stderr)
	modelFlag := fs.String("model", "", "Hugging Face checkpoint folder; empty: the embedded default model")
	methodsFlag := fs.String("methods", "full,snapkv,expected-attention,keydiff,pyramidkv,adakv,lukv", "methods: full, a scorer name (uniform budgets), pyramidkv (snapkv scores), adakv or lukv (expected-attention scores), or allocator:scorer such as lukv:keydiff")
	curveFlag := fs.String("curve", "", "LU-KV curve for lukv methods (default: the default model's curve for the method's scorer)")
	ratios := fs.String("compression", "0.5,0.8,0.9", "compression ratios")
	lengths := fs.String("lengths", "4096", "ruler: sample lengths in tokens; longbench: prompt budgets (the context's middle is cut to fit)")
	samples := fs.Int("samples", 10, "samples per task and length (longbench: the first N of each dataset; 0 = all)")
	out := fs.String("out", "eval-out", "output folder: results.jsonl (resumable), report.md, report.json, PNG plots")
	device := fs.String("device", "cpu", "cpu or cuda")
	threads := fs.Int("threads", 0, "CPU threads (0: all cores)")
	cpuProfile := fs.String("cpuprofile", "", "write a Go CPU profile of the run to this file")
	resumeUnchecked := fs.Bool("resume-unchecked", false, "resume a --out folder whose cells predate run.json (which model made them cannot be checked)")
	hostScoring := fs.Bool("host-scoring", false, "score on the host even where the device can (the device's float32 scores may order near-ties differently)")
	// RULER
	tasksFlag := fs.String("tasks", strings.Join(eval.Tasks(), ","), "ruler: tasks")
	haystack := fs.String("haystack", "", "ruler: essay haystack text, one paragraph per line (default: the embedded evaluation split's The Devil's Dictionary, eval/corpus)")
	wordsFlag := fs.String("words", "", "ruler: key and word vocabulary, one per line (default: the embedded evaluation split's WordNet nouns, eval/corpus)")
	seed := fs.Uint64("seed", 42, "ruler: generator seed")
	squad := fs.String("squad", "", "ruler: SQuAD v2.0 dev json (dev-v2.0.json); adds task qa_1")
	hotpot := fs.String("hotpotqa", "", "ruler: HotpotQA dev distractor json (hotpot_dev_distractor_v1.json); adds task qa_2")
	// LongBench
	lbData := fs.String("data", "", "longbench: folder of LongBench's <dataset>.jsonl files")
	lbConfig := fs.String("config", "", "longbench: folder with LongBench's dataset2prompt.json and dataset2maxlen.json (default: DATA/config, else DATA/../config)")
	lbDatasets := fs.String("datasets", "", "longbench: datasets (default: every one with a jsonl and a prompt); known: "+strings.Join(eval.LongBenchDatasets(), ", "))
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
	if *samples < 0 || (suite == "ruler" && *samples == 0) {
		return fmt.Errorf("--samples %d: want a positive count", *samples)
	}
	var hay, words []string
	var taskList []string
	var qa map[string]*eval.QAData
	if suite == "ruler" {
		if taskList, err = splitList("tasks", *tasksFlag, func(s string) (string, error) { return s, nil }); err != nil {
			return err
		}
		hay, words = eval.DefaultHaystack(), eval.DefaultWords()
		if *haystack != "" {
			if hay, err = eval.ReadLines(*haystack); err != nil {
				return fmt.Errorf("--haystack: %w", err)
			}
		}
		if *wordsFlag != "" {
			if words, err = eval.ReadLines(*wordsFlag); err != nil {
				return fmt.Errorf("--words: %w", err)
			}
		}
		// RULER's qa tasks run from the user's own SQuAD / HotpotQA files (not bundled).
		qa = map[string]*eval.QAData{}
		for _, src := range []struct {
			task, path string
			load       func(string) (*eval.QAData, error)
		}{{"qa_1", *squad, eval.LoadSQuAD}, {"qa_2", *hotpot, eval.LoadHotpotQA}} {
			if src.path == "" {
				continue
			}
			d, err := src.load(src.path)
			if err != nil {
				return err
			}
			qa[src.task] = d
			if !slices.Contains(taskList, src.task) && *tasksFlag == strings.Join(eval.Tasks(), ",") {
				taskList = append(taskList, src.task)
			}
		}
	} else if *lbData == "" {
		return fmt.Errorf("eval longbench: --data FOLDER (LongBench's jsonl files) is required")
	}
	dir, m, tok, err := openModel(*modelFlag, *device, *threads, exactPrecision)
	if err != nil {
		return err
	}
	stopProfile, err := startCPUProfile(*cpuProfile)
	if err != nil {
		return err
	}
	defer stopProfile()
	// LU-KV curves: --curve for every lukv method, else the default model's curve
	// profiled with the method's scorer.
	curveHashes := map[string]string{}
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
		if curveHashes[filepath.Base(path)], err = hashFile(path); err != nil {
			return nil, err
		}
		if err := c.CheckFits(m.Config.NumLayers, m.Config.NumKVHeads); err != nil {
			return nil, fmt.Errorf("lukv curve %s: %w", path, err)
		}
		return c, nil
	}
	methods, err := splitList("methods", *methodsFlag, func(s string) (eval.MethodSpec, error) { return evalMethod(s, curves) })
	if err != nil {
		return err
	}

	// The samples to run, in order.
	var items []evalItem
	if suite == "ruler" {
		gen := &eval.Generator{Tokenizer: tok, Haystack: hay, Words: words, Seed: *seed, QA: qa}
		for _, task := range taskList {
			for _, length := range lengthList {
				for i := 0; i < *samples; i++ {
					items = append(items, evalItem{task, length, i, func() (eval.Sample, error) { return gen.Make(task, length, i) }})
				}
			}
		}
	} else {
		cfgDir := *lbConfig
		if cfgDir == "" {
			cfgDir = filepath.Join(*lbData, "config")
			if _, err := os.Stat(cfgDir); err != nil {
				cfgDir = filepath.Join(filepath.Dir(filepath.Clean(*lbData)), "config")
			}
		}
		var ds []string
		if *lbDatasets != "" {
			if ds, err = splitList("datasets", *lbDatasets, func(s string) (string, error) { return s, nil }); err != nil {
				return err
			}
		}
		for _, length := range lengthList {
			list, err := eval.LoadLongBench(eval.LongBenchOptions{Dir: *lbData, ConfigDir: cfgDir, Datasets: ds, Samples: *samples, MaxTokens: length, Tokenizer: tok})
			if err != nil {
				return err
			}
			index := map[string]int{}
			for _, s := range list {
				items = append(items, evalItem{s.Task, length, index[s.Task], func() (eval.Sample, error) { return s, nil }})
				index[s.Task]++
			}
		}
	}

	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	unlock, err := lockDir(*out)
	if err != nil {
		return err
	}
	defer unlock()
	jsonl := filepath.Join(*out, "results.jsonl")
	cells, err := eval.LoadCells(jsonl)
	if err != nil {
		return err
	}
	run := evalRun{Suite: suite, Curves: curveHashes}
	if run.Model, err = fingerprintModel(dir); err != nil {
		return fmt.Errorf("eval: fingerprinting the model: %w", err)
	}
	if suite == "ruler" {
		run.Seed, run.Haystack, run.Words = *seed, hashLines(hay), hashLines(words)
	}
	if err := checkEvalRun(*out, run, len(cells), *resumeUnchecked, stderr); err != nil {
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

	runner := &eval.Runner{Model: m, Tokenizer: tok, Sink: 4, Window: 1, HostScoring: *hostScoring}
	perSample := 0
	for _, meth := range methods {
		if meth.Scorer == nil {
			perSample++
		} else {
			perSample += len(ratioList)
		}
	}
	total := len(items) * perSample
	bar := progressbar.NewOptions(total, progressbar.OptionSetWriter(stderr), progressbar.OptionSetDescription("eval "+suite),
		progressbar.OptionShowCount(), progressbar.OptionSetPredictTime(true), progressbar.OptionOnCompletion(func() { fmt.Fprintln(stderr) }))
	enc := json.NewEncoder(f)
	// SIGINT/SIGTERM (Ctrl-C, timeout) finish the sample at hand, then write the report
	// of what is done; a rerun with the same --out resumes.
	stop, stopNotify := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopNotify()
	interrupted := false
	for _, it := range items {
		if stop.Err() != nil {
			interrupted = true
			break
		}
		var jobs []eval.Job
		for _, meth := range methods {
			rs := ratioList
			if meth.Scorer == nil {
				rs = []float64{0}
			}
			for _, ratio := range rs {
				if done[eval.Cell{Task: it.task, Length: it.length, Index: it.index, Method: meth.Name, Ratio: ratio}.Key()] {
					bar.Add(1)
					continue
				}
				jobs = append(jobs, eval.Job{Method: meth, Ratio: ratio})
			}
		}
		if len(jobs) == 0 {
			continue
		}
		s, err := it.make()
		if err != nil {
			return err
		}
		// One prefill of the context serves every job of the sample.
		err = runner.RunSample(context.Background(), s, it.index, jobs, func(c eval.Cell) error {
			c.Length = it.length
			cells = append(cells, c)
			bar.Add(1)
			return enc.Encode(c)
		})
		if err != nil {
			return fmt.Errorf("%s length %d sample %d: %w", it.task, it.length, it.index, err)
		}
	}
	if runner.Time.Samples > 0 {
		fmt.Fprintln(stderr, "eval: time:", runner.Time)
	}
	if interrupted {
		fmt.Fprintf(stderr, "eval: interrupted with %d of %d cells done; run the same command again to resume\n", len(cells), total)
	}
	if len(cells) == 0 {
		return fmt.Errorf("eval %s: no cells to report", suite)
	}
	header := fmt.Sprintf("Model %s, %d samples per task and length, lengths %s.\n\nCommand: `lukv-run eval %s`", m.Config.Arch, *samples, *lengths, strings.Join(args, " "))
	if err := writeEvalReport(*out, cells, header); err != nil {
		return err
	}
	eval.WriteTables(stdout, cells)
	return nil
}

// writeEvalReport writes dir/report.md (a table per length and one over all lengths,
// with the plots), dir/report.json (every cell) and the PNG plots: accuracy against
// compression per method, and a task x method heat map per ratio.
func writeEvalReport(dir string, cells []eval.Cell, header string) error {
	if len(cells) == 0 {
		return fmt.Errorf("eval report: no results in %s", dir)
	}
	pts := make([]report.EvalPoint, len(cells))
	ratioSet := map[float64]bool{}
	for i, c := range cells {
		pts[i] = report.EvalPoint{Task: c.Task, Length: c.Length, Method: c.Method, Ratio: c.Ratio, Score: c.Score}
		if c.Method != "full" {
			ratioSet[c.Ratio] = true
		}
	}
	var md strings.Builder
	fmt.Fprintf(&md, "# Long-context evaluation\n\n%s\n\n", header)
	if err := report.AccuracyVsCompression(filepath.Join(dir, "accuracy-vs-compression.png"), pts, "Accuracy vs KV-cache compression"); err != nil {
		return err
	}
	md.WriteString("![accuracy vs compression](accuracy-vs-compression.png)\n\n")
	ratios := make([]float64, 0, len(ratioSet))
	for r := range ratioSet {
		ratios = append(ratios, r)
	}
	sort.Float64s(ratios)
	for _, r := range ratios {
		name := fmt.Sprintf("per-task-%02.0f.png", 100*r)
		if err := report.PerTaskBreakdown(filepath.Join(dir, name), pts, r, fmt.Sprintf("Per-task accuracy at %.0f%% compression (mean over lengths)", 100*r)); err != nil {
			return err
		}
		fmt.Fprintf(&md, "![per-task accuracy at %.0f%%](%s)\n\n", 100*r, name)
	}
	eval.WriteTables(&md, cells)
	if err := os.WriteFile(filepath.Join(dir, "report.md"), []byte(md.String()), 0o644); err != nil {
		return err
	}
	js, err := json.MarshalIndent(cells, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "report.json"), js, 0o644)
}

// runEvalReport merges the results.jsonl of finished (or sharded) runs and writes the
// report from them, without loading a model: lukv-run eval report --in A,B --out DIR.
func runEvalReport(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("eval report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	in := fs.String("in", "", "comma-separated run folders (each with results.jsonl or results.jsonl.gz)")
	out := fs.String("out", "eval-report", "output folder: results.jsonl (merged), report.md, report.json, PNG plots")
	title := fs.String("title", "", "text under the report's heading (e.g. model, samples, commands)")
	mixed := fs.Bool("allow-mixed-runs", false, "merge folders whose run.json differ (another model, seed, haystack or curve)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	dirs, err := splitList("in", *in, func(s string) (string, error) { return s, nil })
	if err != nil {
		return err
	}
	seen := map[string]string{}
	var cells []eval.Cell
	var first *evalRun
	firstDir := ""
	sameRun := true // every folder has a run.json, and they agree
	for _, d := range dirs {
		r, err := readEvalRun(d)
		if err != nil {
			return err
		}
		switch {
		case r == nil:
			sameRun = false
		case first == nil:
			first, firstDir = r, d
		default:
			if diffs := r.diff(*first); len(diffs) > 0 {
				if !*mixed {
					return fmt.Errorf("--in %s and %s come from different runs (%s); --allow-mixed-runs merges them anyway", firstDir, d, strings.Join(diffs, "; "))
				}
				sameRun = false
			}
		}
		path := filepath.Join(d, "results.jsonl")
		if _, err := os.Stat(path); err != nil {
			// results/ keeps its cells compressed.
			if _, zerr := os.Stat(path + ".gz"); zerr != nil {
				return fmt.Errorf("--in %s: %w", d, err)
			}
			path += ".gz"
		}
		cs, err := eval.LoadCells(path)
		if err != nil {
			return err
		}
		for _, c := range cs {
			if prev, ok := seen[c.Key()]; ok {
				return fmt.Errorf("cell %s is in both %s and %s", c.Key(), prev, path)
			}
			seen[c.Key()] = path
			cells = append(cells, c)
		}
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(*out, "results.jsonl"))
	if err != nil {
		return err
	}
	enc := json.NewEncoder(f)
	for _, c := range cells {
		if err := enc.Encode(c); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	// The merged folder keeps the runs' identity when they all share one; otherwise a
	// run.json left there by an earlier merge would misname its cells.
	if sameRun && first != nil {
		err = writeEvalRun(*out, *first)
	} else {
		err = os.Remove(filepath.Join(*out, evalRunFile))
		if errors.Is(err, os.ErrNotExist) {
			err = nil
		}
	}
	if err != nil {
		return err
	}
	header := *title
	if header == "" {
		header = fmt.Sprintf("Merged from %s.", strings.Join(dirs, ", "))
	}
	if err := writeEvalReport(*out, cells, header); err != nil {
		return err
	}
	eval.WriteTables(stdout, cells)
	return nil
}
