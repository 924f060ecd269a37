package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/lukv/lukv/eval"
	"github.com/lukv/lukv/eval/formats"
	"github.com/lukv/lukv/eviction"
	"github.com/lukv/lukv/models"
	"github.com/lukv/lukv/report"
)

// evalMethod maps a --methods name (eviction.MethodNames) to a scorer and allocator.
// lukv reads curves[scorer], the budget curve profiled with the same scorer.
func evalMethod(name string, curves func(scorer string) (*eviction.BudgetCurve, error)) (eval.MethodSpec, error) {
	if name == "full" {
		return eval.MethodSpec{Name: "full"}, nil
	}
	scorer, alloc, err := eviction.MethodNames(name)
	if err != nil {
		return eval.MethodSpec{}, fmt.Errorf("--methods: %w", err)
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

// evalSetup is what runEval builds from its flags before anything runs.
type evalSetup struct {
	suite   string
	samples int
	lengths []int
	ratios  []float64
	tasks   []string
}

// runEval is `lukv-run eval ruler|longbench|formats`. Cancelling ctx (main cancels it on Ctrl-C
// or SIGTERM) stops it within about a second (eval.DefaultStopWithin), with a partial
// report and a non-zero exit.
// evalSink and evalWindow are the tokens every evaluated method protects.
const evalSink, evalWindow = 4, 1

func runEval(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	suite := ""
	if len(args) > 0 {
		suite = args[0]
	}
	switch suite {
	case "report":
		return runEvalReport(args[1:], stdout, stderr)
	case "ruler", "longbench", "formats":
	default:
		fmt.Fprintln(stderr, "Usage: lukv-run eval ruler|longbench|formats [flags]   (lukv-run eval report --in DIRS --out DIR merges runs)")
		if suite == "-h" || suite == "--help" {
			return nil
		}
		return errors.New("eval: want the suite name 'ruler', 'longbench' or 'formats'")
	}
	fs := flag.NewFlagSet("eval "+suite, flag.ContinueOnError)
	fs.SetOutput(stderr)
	modelFlag := fs.String("model", "", "Hugging Face checkpoint folder; empty: the embedded default model")
	methodsFlag := fs.String("methods", "full,snapkv,expected-attention,keydiff,pyramidkv,adakv,lukv", "methods: full, a scorer name (uniform budgets), pyramidkv (snapkv scores), adakv or lukv (expected-attention scores), or allocator:scorer such as lukv:keydiff")
	curveFlag := fs.String("curve", "", "LU-KV curve for lukv methods (default: the default model's curve for the method's scorer)")
	ratios := fs.String("compression", "0.5,0.8,0.9", "compression ratios, each in [0, 1)")
	lengths := fs.String("lengths", "4096", "ruler, formats: sample lengths in tokens; longbench: prompt budgets (the context's middle is cut to fit)")
	samples := fs.Int("samples", 10, "samples per task and length (formats: per family, task and length; longbench: the first N of each dataset; 0 = all)")
	out := fs.String("out", "eval-out", "output folder: results.jsonl (resumable), report.md, report.json, PNG plots")
	device := fs.String("device", "cpu", "cpu or cuda")
	threads := fs.Int("threads", 0, "CPU threads (0: all cores)")
	weightsF := addWeightsFlag(fs)
	cpuProfile := fs.String("cpuprofile", "", "write a Go CPU profile of the run to this file")
	resumeUnchecked := fs.Bool("resume-unchecked", false, "resume a --out folder whose cells predate run.json (which model made them cannot be checked)")
	hostScoring := fs.Bool("host-scoring", false, "score on the host even where the device can (the device's float32 scores may order near-ties differently)")
	// RULER
	tasksFlag := fs.String("tasks", strings.Join(eval.Tasks(), ","), "ruler: tasks; formats: task kinds (default "+strings.Join(formats.Tasks(), ",")+")")
	haystack := fs.String("haystack", "", "ruler, formats: essay haystack text, one paragraph per line (default: the embedded evaluation split's The Devil's Dictionary, eval/corpus)")
	wordsFlag := fs.String("words", "", "ruler, formats: key and word vocabulary, one per line (default: the embedded evaluation split's WordNet nouns, eval/corpus)")
	seed := fs.Uint64("seed", 42, "ruler, formats: generator seed")
	// formats
	familiesFlag := fs.String("families", "", "formats: template families (default: all); known: "+strings.Join(formats.AllFamilies(), ", ")+"; held out of training: "+strings.Join(formats.Families(true), ", "))
	squad := fs.String("squad", "", "ruler: SQuAD v2.0 dev json (dev-v2.0.json); adds task qa_1")
	hotpot := fs.String("hotpotqa", "", "ruler: HotpotQA dev distractor json (hotpot_dev_distractor_v1.json); adds task qa_2")
	// LongBench
	lbData := fs.String("data", "", "longbench: folder of LongBench's <dataset>.jsonl files")
	lbConfig := fs.String("config", "", "longbench: folder with LongBench's dataset2prompt.json and dataset2maxlen.json (default: DATA/config, else DATA/../config)")
	lbDatasets := fs.String("datasets", "", "longbench: datasets (default: every one with a jsonl and a prompt); known: "+strings.Join(eval.LongBenchDatasets(), ", "))
	cf := addEvalChunkFlags(fs)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("eval %s: unexpected argument %q (flags only)", suite, fs.Arg(0))
	}

	// Every flag is checked before anything is loaded or created.
	ratioList, err := splitList("compression", *ratios, func(s string) (float64, error) {
		r, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return 0, err
		}
		return r, eval.CheckRatio(r)
	})
	if err != nil {
		return err
	}
	lengthList, err := splitList("lengths", *lengths, func(s string) (int, error) {
		n, err := strconv.Atoi(s)
		if err == nil && n <= 0 {
			err = errors.New("want a positive number of tokens")
		}
		return n, err
	})
	if err != nil {
		return err
	}
	if *samples < 0 || (suite != "longbench" && *samples == 0) {
		return fmt.Errorf("--samples %d: want a positive count", *samples)
	}
	if err := checkThreads(*threads); err != nil {
		return err
	}
	weights, err := weightsF.format()
	if err != nil {
		return err
	}
	if *device != "cpu" && *device != "cuda" {
		return fmt.Errorf("--device %q: want cpu or cuda", *device)
	}
	var loaded []loadedCurve
	methods, err := splitList("methods", *methodsFlag, func(s string) (eval.MethodSpec, error) {
		return evalMethod(s, func(scorer string) (*eviction.BudgetCurve, error) {
			c, err := readEvalCurve(*curveFlag, *modelFlag, scorer)
			if err != nil {
				return nil, err
			}
			loaded = append(loaded, c)
			return c.curve, nil
		})
	})
	if err != nil {
		return err
	}
	chunk, budgetRatios, err := cf.resolve(*modelFlag, lengthList, methods, evalSink, evalWindow)
	if err != nil {
		return err
	}
	if budgetRatios != nil {
		ratioList = budgetRatios
	}
	var hay, words []string
	var taskList, familyList []string
	var qa map[string]*eval.QAData
	if suite == "formats" {
		tasks := strings.Join(formats.Tasks(), ",")
		fs.Visit(func(f *flag.Flag) {
			if f.Name == "tasks" {
				tasks = *tasksFlag
			}
		})
		if taskList, err = splitList("tasks", tasks, func(s string) (string, error) { return s, nil }); err != nil {
			return err
		}
		if err := formats.CheckTasks(taskList); err != nil {
			return fmt.Errorf("--tasks: %w", err)
		}
		if *familiesFlag != "" {
			if familyList, err = splitList("families", *familiesFlag, func(s string) (string, error) { return s, nil }); err != nil {
				return err
			}
		}
		if familyList, err = formats.CheckFamilies(familyList); err != nil {
			return fmt.Errorf("--families: %w", err)
		}
		for _, l := range lengthList {
			if l <= formats.AnswerRoom {
				return fmt.Errorf("--lengths %d: formats samples need more than %d tokens (the answer's room)", l, formats.AnswerRoom)
			}
		}
		if hay, words, err = haystackAndWords(*haystack, *wordsFlag); err != nil {
			return err
		}
	} else if suite == "ruler" {
		known := append(eval.Tasks(), eval.QATasks()...)
		if taskList, err = splitList("tasks", *tasksFlag, func(s string) (string, error) {
			if !slices.Contains(known, s) {
				return "", fmt.Errorf("unknown task (want one of %s)", strings.Join(known, ", "))
			}
			return s, nil
		}); err != nil {
			return err
		}
		if hay, words, err = haystackAndWords(*haystack, *wordsFlag); err != nil {
			return err
		}
		// RULER's qa tasks run from the user's own SQuAD / HotpotQA files (not bundled).
		qa = map[string]*eval.QAData{}
		for _, src := range []struct {
			task, flag, path string
			load             func(string) (*eval.QAData, error)
		}{{"qa_1", "--squad", *squad, eval.LoadSQuAD}, {"qa_2", "--hotpotqa", *hotpot, eval.LoadHotpotQA}} {
			if src.path == "" {
				if slices.Contains(taskList, src.task) {
					return fmt.Errorf("--tasks %s needs %s FILE (lukv does not bundle that data set)", src.task, src.flag)
				}
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
	} else if st, err := os.Stat(*lbData); err != nil || !st.IsDir() {
		return fmt.Errorf("--data %s: want the folder of LongBench's <dataset>.jsonl files (%v)", *lbData, err)
	}

	dir, m, tok, err := openModel(*modelFlag, *device, *threads, exactPrecision, weights)
	if err != nil {
		return err
	}
	curveHashes := map[string]string{}
	for _, c := range loaded {
		if err := c.curve.CheckFits(m.Config.NumLayers, m.Config.NumKVHeads); err != nil {
			return fmt.Errorf("lukv curve %s: %w", c.path, err)
		}
		curveHashes[filepath.Base(c.path)] = c.hash
	}
	stopProfile, err := startCPUProfile(*cpuProfile)
	if err != nil {
		return err
	}
	defer stopProfile()

	// The samples to run, in order.
	var items []eval.Item
	switch suite {
	case "ruler":
		items = eval.RulerItems(&eval.Generator{Tokenizer: tok, Haystack: hay, Words: words, Seed: *seed, QA: qa}, taskList, lengthList, *samples)
	case "formats":
		g, err := formats.NewEvaluation(formats.HaystackConfig(hay, words, func(p string) int { return len(tok.Encode(p, true)) }, *seed))
		if err != nil {
			return err
		}
		items = formats.Items(g, familyList, taskList, lengthList, *samples)
	default:
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
		if items, err = eval.LongBenchItems(eval.LongBenchOptions{Dir: *lbData, ConfigDir: cfgDir, Datasets: ds, Samples: *samples, Tokenizer: tok}, lengthList); err != nil {
			return err
		}
	}

	id := eval.RunIdentity{Suite: suite, Curves: curveHashes, Chunk: chunk}
	if id.Model, err = eval.FingerprintModel(dir); err != nil {
		return fmt.Errorf("eval: fingerprinting the model: %w", err)
	}
	if suite == "ruler" || suite == "formats" {
		id.Seed, id.Haystack, id.Words = *seed, eval.HashLines(hay), eval.HashLines(words)
	}
	res, err := eval.Evaluate(ctx, eval.Options{
		Runner:          &eval.Runner{Model: m, Tokenizer: tok, Sink: evalSink, Window: evalWindow, HostScoring: *hostScoring, Chunk: chunk},
		Methods:         methods,
		Ratios:          ratioList,
		Items:           items,
		Out:             *out,
		Identity:        id,
		ResumeUnchecked: *resumeUnchecked,
		Log:             stderr,
		Label:           "eval " + suite,
	})
	if res == nil || (len(res.Cells) == 0 && !res.Status.Partial) {
		return err
	}
	// The report is written also when the run stopped early: marked partial.
	header := fmt.Sprintf("Model %s, %d samples per task and length, lengths %s.\n\nCommand: `lukv-run eval %s`", m.Config.Arch, *samples, *lengths, strings.Join(args, " "))
	if suite == "formats" {
		header = fmt.Sprintf("Model %s, %d samples per family, task and length, lengths %s; families %s (held out of training: %s); filler: the evaluation haystack.\n\nCommand: `lukv-run eval %s`",
			m.Config.Arch, *samples, *lengths, strings.Join(familyList, ", "), strings.Join(formats.Families(true), ", "), strings.Join(args, " "))
	}
	if werr := report.WriteEval(*out, res.Cells, header, &res.Status); werr != nil {
		return errors.Join(err, werr)
	}
	if res.Status.Partial {
		fmt.Fprintf(stderr, "eval: %s/report.md is marked partial (%d of %d cells)\n", *out, res.Status.Done, res.Status.Planned)
	}
	eval.WriteTables(stdout, res.Cells)
	return err
}

// haystackAndWords reads --haystack and --words, or gives the embedded evaluation split's.
func haystackAndWords(haystackFlag, wordsFlag string) (hay, words []string, err error) {
	hay, words = eval.DefaultHaystack(), eval.DefaultWords()
	if haystackFlag != "" {
		if hay, err = eval.ReadLines(haystackFlag); err != nil {
			return nil, nil, fmt.Errorf("--haystack: %w", err)
		}
	}
	if wordsFlag != "" {
		if words, err = eval.ReadLines(wordsFlag); err != nil {
			return nil, nil, fmt.Errorf("--words: %w", err)
		}
	}
	return hay, words, nil
}

// loadedCurve is a LU-KV curve read for a method, with its file's path and sha256.
type loadedCurve struct {
	path, hash string
	curve      *eviction.BudgetCurve
}

// readEvalCurve reads --curve for every lukv method, else the default model's curve
// profiled with the method's scorer. Whether it fits the model is checked once the
// model is loaded.
func readEvalCurve(curveFlag, modelFlag, scorer string) (loadedCurve, error) {
	path := curveFlag
	if path == "" {
		if modelFlag != "" {
			return loadedCurve{}, fmt.Errorf("lukv needs --curve FILE.npy for a --model other than the default (make one with lukv-run profile)")
		}
		var err error
		if path, err = models.DefaultCurve(scorer); err != nil {
			return loadedCurve{}, err
		}
	}
	c, err := eviction.ReadNPY(path)
	if err != nil {
		return loadedCurve{}, fmt.Errorf("lukv curve: %w", err)
	}
	h, err := eval.HashFile(path)
	if err != nil {
		return loadedCurve{}, err
	}
	return loadedCurve{path: path, hash: h, curve: c}, nil
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
	cells, err := eval.Merge(dirs, *out, *mixed)
	if err != nil {
		return err
	}
	header := *title
	if header == "" {
		header = fmt.Sprintf("Merged from %s.", strings.Join(dirs, ", "))
	}
	if err := report.WriteEval(*out, cells, header, nil); err != nil {
		return err
	}
	eval.WriteTables(stdout, cells)
	return nil
}
