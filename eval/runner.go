package eval

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/eviction"
	"github.com/lukv/lukv/generate"
	"github.com/lukv/lukv/model"
	"github.com/lukv/lukv/tokenizer"
)

// MethodSpec is one evaluated method: full cache (Scorer nil) or a scorer with an
// allocator, applied after the context and before the question (query-agnostic, as
// kvpress and LU-KV evaluate).
type MethodSpec struct {
	Name      string
	Scorer    eviction.Scorer
	Allocator eviction.Allocator
}

// Cell is one (task, length, sample, method, ratio) result.
type Cell struct {
	Task         string  `json:"task"`
	Length       int     `json:"length"`
	Index        int     `json:"index"`
	Method       string  `json:"method"`
	Ratio        float64 `json:"ratio"`
	Score        float64 `json:"score"` // RULER's metric, 0..1
	Pred         string  `json:"pred"`
	PromptTokens int     `json:"prompt_tokens"`
	KVLiveBefore int64   `json:"kv_live_bytes_before"`
	KVLiveAfter  int64   `json:"kv_live_bytes_after"`
	// Family and Split (SplitTrained or SplitHeldOut) file a cell of the formats suite
	// (eval/formats) under its template family; empty for the other suites.
	Family string `json:"family,omitempty"`
	Split  string `json:"split,omitempty"`
}

// The two sides of the formats suite's family split (Cell.Split).
const (
	SplitTrained = "trained"
	SplitHeldOut = "held-out"
)

// Key identifies a cell for resuming.
func (c Cell) Key() string {
	return fmt.Sprintf("%s|%d|%d|%s|%.4f", c.Task, c.Length, c.Index, c.Method, c.Ratio)
}

// Runner evaluates methods on generated samples with one model.
type Runner struct {
	Model        *model.Model
	Tokenizer    *tokenizer.Tokenizer
	Sink, Window int
	// Batch is the most sequences RunSample decodes in one forward pass (0:
	// DefaultBatch).
	Batch int
	// HostScoring scores on the host even where the backend scores on the device
	// (eviction.Collector.HostOnly): the device's float32 scores can order near-ties
	// differently, so this reproduces a host-scored run exactly.
	HostScoring bool
	// Chunk > 0 makes every evicting cell of RunSample prefill its context Chunk tokens
	// at a time, evicting after each chunk (eviction.ChunkedEvictor), instead of once
	// after the shared one-shot prefill; the full cache still clones that prefill.
	Chunk int
	// Time accumulates where RunSample spends its time.
	Time Timing
}

// DefaultBatch keeps decode batches within the GPU's matrix-vector kernel (at most 8
// rows), whose per-row arithmetic is meant not to depend on the batch, so that batched
// and one-at-a-time evaluation give the same answers on the GPU too. On the CPU that is
// tested (TestRunSampleMatchesRunCell); on the GPU backend/cuda's TestGenerateBatchOnGPU
// checks it (it passed on the H200, results/gpu/2026-11-28-h200-run3).
const DefaultBatch = 8

// Timing is the wall time RunSample spent per phase, summed over samples.
type Timing struct {
	Prefill  time.Duration // context prefills, scoring excluded
	Score    time.Duration // building layer views and scoring them
	Clone    time.Duration // copying the prefilled cache for each job
	Compress time.Duration // allocation and compaction
	Generate time.Duration // question prefill and decoding
	Samples  int
	Cells    int
}

func (t Timing) String() string {
	per := func(d time.Duration, n int) string {
		if n == 0 {
			return "-"
		}
		return (d / time.Duration(n)).Round(time.Millisecond).String()
	}
	return fmt.Sprintf("%d samples, %d cells; per sample: prefill %s, scoring %s; per cell: clone %s, compress %s, generate %s",
		t.Samples, t.Cells, per(t.Prefill, t.Samples), per(t.Score, t.Samples), per(t.Clone, t.Cells), per(t.Compress, t.Cells), per(t.Generate, t.Cells))
}

// RunCell prefills the sample's context, compresses it with the method (unless full),
// feeds the question, generates greedily and scores the answer. It is the plain,
// one-cell reference of RunSample, which shares one prefill among many cells.
func (r *Runner) RunCell(ctx context.Context, s Sample, index int, m MethodSpec, ratio float64) (Cell, error) {
	contextIDs := r.Tokenizer.Encode(s.Context, true)
	prompt := append(append([]int(nil), contextIDs...), r.Tokenizer.Encode(s.Question, false)...)
	// The context is prefilled apart from the question for every method, the full cache
	// too, so KV sizes count the context alone.
	opt := generate.Options{MaxNewTokens: s.MaxNewTokens, ContextTokens: len(contextIDs)}
	cell := Cell{Task: s.Task, Length: len(prompt) + s.MaxNewTokens, Index: index, Method: m.Name, Ratio: ratio, PromptTokens: len(prompt), Family: s.Family, Split: s.Split}
	if m.Scorer != nil {
		method := eviction.Method{Scorer: m.Scorer, Allocator: m.Allocator, Ratio: ratio, Sink: r.Sink, Window: r.Window}
		collector := method.NewCollector(r.Model)
		collector.HostOnly = r.HostScoring
		opt.Observer = collector
		opt.AfterPrefill = func(cache backend.KVCache, _ int) error {
			return method.CompressCollected(cache, collector, len(prompt)-len(contextIDs)+s.MaxNewTokens)
		}
	} else {
		cell.Ratio = 0
	}
	res, err := (&generate.Generator{Model: r.Model, Tokenizer: r.Tokenizer}).Generate(ctx, prompt, opt)
	if err != nil {
		return cell, err
	}
	cell.Pred = res.Text
	cell.Score = ScoreSample(s, res.Text)
	cell.KVLiveBefore, cell.KVLiveAfter = res.KVLivePrefill, res.KVLiveCompressed
	return cell, nil
}

// Job is one (method, ratio) cell of a sample to run; Ratio is ignored for the full cache.
type Job struct {
	Method MethodSpec
	Ratio  float64
}

// RunSample runs every job on one sample from a single prefill of its context: the
// context is prefilled once while every distinct scorer scores it (query-agnostic: the
// question is not in the cache yet), then each job clones that cache and compresses the
// clone with its scorer's scores, its allocator and ratio, and all jobs feed the
// question and generate together (generate.GenerateBatch). The cells equal RunCell's
// (the tests check it); the repeated prefills and most decode launches are saved. emit
// receives each cell once the sample is done.
func (r *Runner) RunSample(goctx context.Context, s Sample, index int, jobs []Job, emit func(Cell) error) error {
	if len(jobs) == 0 {
		return nil
	}
	ctx := r.Tokenizer.Encode(s.Context, true)
	question := r.Tokenizer.Encode(s.Question, false)
	prompt := append(append([]int(nil), ctx...), question...)
	if len(question) == 0 {
		return fmt.Errorf("eval: %s sample %d has an empty question", s.Task, index)
	}
	// The generator sizes prompt + answer to the length with the whole prompt tokenized
	// at once; context and question tokenized apart can be a token longer. Generation
	// stops at the model's context, as it does in RunCell.
	if len(prompt) >= r.Model.Config.MaxPositionEmbeddings {
		return fmt.Errorf("%w: %s sample %d has a %d-token prompt, the model's context is %d",
			model.ErrContextTooLong, s.Task, index, len(prompt), r.Model.Config.MaxPositionEmbeddings)
	}
	obs := &multiScorer{model: r.Model, hostOnly: r.HostScoring}
	scorerOf := make([]int, len(jobs))
	for i, j := range jobs {
		scorerOf[i] = -1
		if j.Method.Scorer != nil && r.Chunk <= 0 {
			scorerOf[i] = obs.add(eviction.Method{Scorer: j.Method.Scorer, Allocator: j.Method.Allocator})
		}
	}
	reserve := len(question) + s.MaxNewTokens
	var base backend.KVCache // the shared one-shot prefill, unless every job prefills chunked
	for _, j := range jobs {
		if j.Method.Scorer == nil || r.Chunk <= 0 {
			base = r.Model.NewCache(len(ctx))
			defer release(base)
			start := time.Now()
			if _, err := r.Model.Forward(goctx, ctx, 0, base, model.ForwardOptions{Observer: obs}); err != nil {
				return err
			}
			r.Time.Prefill += time.Since(start) - obs.elapsed
			r.Time.Score += obs.elapsed
			break
		}
	}
	r.Time.Samples++
	// Every job gets its own copy of the prefilled cache, compressed by its method.
	cells := make([]Cell, len(jobs))
	reqs := make([]generate.Request, len(jobs))
	defer func() {
		for _, rq := range reqs {
			if rq.Options.Cache != nil {
				release(rq.Options.Cache)
			}
		}
	}()
	for i, j := range jobs {
		cell := Cell{Task: s.Task, Length: len(prompt) + s.MaxNewTokens, Index: index, Method: j.Method.Name, Ratio: j.Ratio, PromptTokens: len(prompt), Family: s.Family, Split: s.Split}
		t0 := time.Now()
		if j.Method.Scorer != nil && r.Chunk > 0 {
			method := eviction.Method{Scorer: j.Method.Scorer, Allocator: j.Method.Allocator, Ratio: j.Ratio, Sink: r.Sink, Window: r.Window}
			cache, live, err := r.prefillChunked(goctx, ctx, method, reserve)
			if cache != nil {
				reqs[i] = generate.Request{Prompt: prompt, Options: generate.Options{MaxNewTokens: s.MaxNewTokens, Cache: cache, Cached: len(ctx)}}
			}
			if err != nil {
				return fmt.Errorf("%s at %.2f, chunked: %w", j.Method.Name, j.Ratio, err)
			}
			cell.KVLiveBefore, cell.KVLiveAfter = live, cache.LiveBytes()
			r.Time.Compress += time.Since(t0)
			cells[i] = cell
			continue
		}
		cache, err := base.Clone(reserve)
		if err != nil {
			return err
		}
		reqs[i] = generate.Request{Prompt: prompt, Options: generate.Options{MaxNewTokens: s.MaxNewTokens, Cache: cache, Cached: len(ctx)}}
		t1 := time.Now()
		r.Time.Clone += t1.Sub(t0)
		cell.KVLiveBefore = cache.LiveBytes()
		if j.Method.Scorer == nil {
			cell.Ratio = 0
		} else {
			method := eviction.Method{Scorer: j.Method.Scorer, Allocator: j.Method.Allocator, Ratio: j.Ratio, Sink: r.Sink, Window: r.Window}
			if err := method.CompressCollected(cache, obs.collectors[scorerOf[i]], reserve); err != nil {
				return fmt.Errorf("%s at %.2f: %w", j.Method.Name, j.Ratio, err)
			}
		}
		cell.KVLiveAfter = cache.LiveBytes()
		r.Time.Compress += time.Since(t1)
		cells[i] = cell
	}
	// Then all of them generate together, in batches (one forward pass per step for
	// the batch): the same text as one at a time, far fewer kernel launches.
	t2 := time.Now()
	batch := r.Batch
	if batch <= 0 {
		batch = DefaultBatch
	}
	res, err := (&generate.Generator{Model: r.Model, Tokenizer: r.Tokenizer}).GenerateBatch(goctx, reqs, batch)
	if err != nil {
		return err
	}
	r.Time.Generate += time.Since(t2)
	for i := range cells {
		cells[i].Pred = res[i].Text
		cells[i].Score = ScoreSample(s, res[i].Text)
		r.Time.Cells++
		if err := emit(cells[i]); err != nil {
			return err
		}
	}
	return nil
}

// prefillChunked prefills the context ids r.Chunk tokens at a time into a new cache,
// evicting with method after every chunk, and returns the cache and its largest live
// bytes during the prefill.
func (r *Runner) prefillChunked(ctx context.Context, ids []int, method eviction.Method, reserve int) (backend.KVCache, int64, error) {
	ev, err := eviction.NewChunkedEvictor(r.Model, method)
	if err != nil {
		return nil, 0, err
	}
	cache := r.Model.NewCache(min(r.Chunk, len(ids)))
	var live int64
	p := generate.ChunkedPrefill{Chunk: r.Chunk, Evictor: ev, Reserve: reserve,
		OnChunk: func(st generate.ChunkStats) { live = max(live, st.LiveBytesPeak) }}
	_, err = p.Run(ctx, r.Model, ids, cache)
	return cache, live, err
}

// release frees a cache's device memory now where the backend can (the CUDA cache);
// elsewhere the garbage collector does it.
func release(c backend.KVCache) {
	if r, ok := c.(interface{ Release() }); ok {
		r.Release()
	}
}

// multiScorer scores a sample's prefill once per distinct scorer of its jobs
// (eviction.Collectors: on the device where the backend can, else from one shared host
// view), and times it.
type multiScorer struct {
	model      *model.Model
	hostOnly   bool
	collectors eviction.Collectors
	elapsed    time.Duration // time spent in ObserveLayer
}

// add registers method's scorer (once per distinct scorer: same name and
// configuration) and returns its index. A scorer's device scores stay on the device
// when some method using it can select from there (the others copy them on demand).
func (m *multiScorer) add(method eviction.Method) int {
	s, keep := method.Scorer, method.SelectsOnDevice()
	for i, c := range m.collectors {
		if c.Scorer.Name() == s.Name() && reflect.DeepEqual(c.Scorer, s) {
			c.KeepOnDevice = c.KeepOnDevice || keep
			return i
		}
	}
	c := eviction.NewCollector(m.model, s)
	c.HostOnly = m.hostOnly
	c.KeepOnDevice = keep
	m.collectors = append(m.collectors, c)
	return len(m.collectors) - 1
}

func (m *multiScorer) ObserveLayer(layer int, positions []int, x, q, k, v backend.Tensor) {
	start := time.Now()
	m.collectors.ObserveLayer(layer, positions, x, q, k, v)
	m.elapsed += time.Since(start)
}

// LoadCells reads a results .jsonl, or .jsonl.gz as results/ keeps them (missing file:
// none), for resuming and for reports.
func LoadCells(path string) ([]Cell, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		r = zr
	}
	var cells []Cell
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for line := 1; sc.Scan(); line++ {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var c Cell
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			return nil, fmt.Errorf("%s:%d: %w (delete the line to redo that cell)", path, line, err)
		}
		cells = append(cells, c)
	}
	return cells, sc.Err()
}

// WriteTables writes one WriteTable per length (heading "## N tokens") and, when there
// are several lengths, one over all of them (each task's mean over its samples of every
// length).
func WriteTables(w io.Writer, cells []Cell) {
	byLen := map[int][]Cell{}
	for _, c := range cells {
		byLen[c.Length] = append(byLen[c.Length], c)
	}
	lengths := make([]int, 0, len(byLen))
	for l := range byLen {
		lengths = append(lengths, l)
	}
	sort.Ints(lengths)
	for _, l := range lengths {
		fmt.Fprintf(w, "\n## %d tokens\n\n", l)
		WriteTable(w, byLen[l])
	}
	if len(lengths) > 1 {
		fmt.Fprintf(w, "\n## All lengths\n\n")
		WriteTable(w, cells)
	}
}

// WriteTable writes a Markdown table: one row per (method, ratio), one column per task,
// plus the mean and the mean as a share of the full cache's.
func WriteTable(w io.Writer, cells []Cell) {
	type row struct {
		method string
		ratio  float64
	}
	sum := map[row]map[string][2]float64{}
	taskSet := map[string]bool{}
	for _, c := range cells {
		r := row{c.Method, c.Ratio}
		if sum[r] == nil {
			sum[r] = map[string][2]float64{}
		}
		v := sum[r][c.Task]
		sum[r][c.Task] = [2]float64{v[0] + c.Score, v[1] + 1}
		taskSet[c.Task] = true
	}
	var tasks []string
	for t := range taskSet {
		tasks = append(tasks, t)
	}
	sort.Strings(tasks)
	var rows []row
	for r := range sum {
		rows = append(rows, r)
	}
	sort.Slice(rows, func(i, j int) bool {
		if (rows[i].method == "full") != (rows[j].method == "full") {
			return rows[i].method == "full"
		}
		if rows[i].ratio != rows[j].ratio {
			return rows[i].ratio < rows[j].ratio
		}
		return rows[i].method < rows[j].method
	})
	mean := func(r row) float64 {
		var s float64
		for _, t := range tasks {
			v := sum[r][t]
			if v[1] > 0 {
				s += 100 * v[0] / v[1]
			}
		}
		return s / float64(len(tasks))
	}
	full := mean(row{"full", 0})
	fmt.Fprintf(w, "| method | compression | %s | mean | %% of full |\n|---|---|%s---|---|\n", strings.Join(tasks, " | "), strings.Repeat("---|", len(tasks)))
	for _, r := range rows {
		fmt.Fprintf(w, "| %s | %.0f%% |", r.method, 100*r.ratio)
		for _, t := range tasks {
			v := sum[r][t]
			if v[1] == 0 {
				fmt.Fprint(w, " - |")
				continue
			}
			fmt.Fprintf(w, " %.1f |", 100*v[0]/v[1])
		}
		m := mean(r)
		share := "-"
		if _, ok := sum[row{"full", 0}]; ok && full > 0 {
			share = fmt.Sprintf("%.1f%%", 100*m/full)
		}
		fmt.Fprintf(w, " %.1f | %s |\n", m, share)
	}
}
