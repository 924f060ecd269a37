// Package sched is the continuous-batching scheduler of the server: requests join the
// running batch at step boundaries, a new request's prompt is prefilled between decode
// steps of the running ones, and one batched forward pass (model.ForwardBatch) decodes
// every running sequence, each over its own per-head KV cache. Memory is admitted by
// blocks of a kvpool.Pool: a request runs only when the blocks it may need fit beside
// those promised to the running sequences, so a sequence never runs out of memory
// mid-way; eviction after the prefill shrinks that promise to what the compressed cache
// holds, which is how eviction turns into more concurrent sequences.
//
// The scheduler only uses backend.KVCache (through model.NewCache) and model.Forward /
// ForwardBatch, so it runs on any backend whose caches draw from the pool (the CPU's
// PagedBackend now).
package sched

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/eviction"
	"github.com/lukv/lukv/generate"
	"github.com/lukv/lukv/kvpool"
	"github.com/lukv/lukv/model"
)

var (
	// ErrQueueFull is returned when MaxWaiting requests already wait for memory.
	ErrQueueFull = errors.New("sched: queue full")
	// ErrTooLarge is returned for a request that could never fit in the pool.
	ErrTooLarge = errors.New("sched: request needs more KV memory than the pool has")
	// ErrClosed is returned for requests submitted to, or pending in, a closed scheduler.
	ErrClosed = errors.New("sched: scheduler closed")
)

// Config sets up a Scheduler.
type Config struct {
	Model *model.Model
	// Pool is the block pool the model's caches draw from (the backend's).
	Pool *kvpool.Pool
	// MaxRunning is the most sequences decoded together (default 32).
	MaxRunning int
	// MaxWaiting is the most requests waiting for admission; more are refused with
	// ErrQueueFull (default 256).
	MaxWaiting int
	// PrefillChunk, when positive, prefills prompts PrefillChunk tokens at a time, one
	// chunk between two decode steps of the running sequences, so that a long prompt
	// does not stall them for its whole prefill (and its activations stay small). A
	// request with eviction (Method) is prefilled in one pass: its scorer reads the
	// whole prompt's queries, keys and values at once.
	PrefillChunk int
	// OnStep, when set, receives every batched decode step's statistics, on the
	// scheduler's goroutine (it must not block).
	OnStep func(Step)
}

// Step describes one batched decode step.
type Step struct {
	Batch int // sequences decoded
	// Time is the step's forward pass (the logits are on the host at its end).
	Time time.Duration
	// LiveKVBytes is the KV memory the step's caches hold after it, which its attention
	// read (backend.KVCache.LiveBytes summed over the batch).
	LiveKVBytes int64
}

// Request is one generation.
type Request struct {
	Prompt      []int
	MaxTokens   int // at least 1
	Temperature float64
	TopP        float64
	Seed        uint64
	IgnoreEOS   bool
	// Method, when set, compresses the cache once the prompt is prefilled (as
	// generate's AfterPrefill with --compress-at question does). Each request needs its
	// own Method value (scorers may keep state).
	Method *eviction.Method
	// OnToken receives each generated token, on the scheduler's goroutine (it must not
	// block); returning true ends the sequence (a stop string appeared).
	OnToken func(id int) (stop bool)
}

// Result is what a finished sequence produced.
type Result struct {
	Tokens       []int
	PromptTokens int
	// StopReason is "eos", "stop_string", "max_tokens" or "context", as in generate.
	StopReason string
	// EvictedEntries is the number of (token, layer, KV head) cache entries eviction
	// dropped; TokensEvicted is that over layers x KV heads.
	EvictedEntries int
	KVBytesPeak    int64
}

// TokensEvicted is the evicted entries as whole tokens (averaged over layers x heads).
func (r *Result) TokensEvicted(layers, kvHeads int) float64 {
	return float64(r.EvictedEntries) / float64(layers*kvHeads)
}

// seq is one request inside the scheduler.
type seq struct {
	req     Request
	ctx     context.Context
	done    chan struct{}
	res     Result
	err     error
	commit  int // pool blocks promised to this sequence (held and still to come)
	cache   backend.KVCache
	sampler *generate.Sampler
	logits  []float32
	pos     int
	filled  int // prompt tokens prefilled so far (chunked prefill)
}

// Scheduler runs requests with continuous batching. Create it with New; stop it with
// Close.
type Scheduler struct {
	cfg  Config
	m    *model.Model
	pool *kvpool.Pool

	mu      sync.Mutex
	waiting []*seq
	closed  bool
	wake    chan struct{}

	running    []*seq // owned by the loop
	prefilling *seq   // the admitted sequence whose prompt is being prefilled in chunks; owned by the loop
	committed  int    // blocks promised to running sequences; owned by the loop
	nRunning   atomic.Int64
	nWaiting   atomic.Int64

	stop   context.CancelFunc
	exited chan struct{}
}

// New starts a scheduler.
func New(cfg Config) (*Scheduler, error) {
	if cfg.Model == nil || cfg.Pool == nil {
		return nil, errors.New("sched: Config needs Model and Pool")
	}
	if cfg.MaxRunning == 0 {
		cfg.MaxRunning = 32
	}
	if cfg.MaxWaiting == 0 {
		cfg.MaxWaiting = 256
	}
	if cfg.MaxRunning < 0 || cfg.MaxWaiting < 0 || cfg.PrefillChunk < 0 {
		return nil, fmt.Errorf("sched: MaxRunning %d, MaxWaiting %d and PrefillChunk %d must not be negative", cfg.MaxRunning, cfg.MaxWaiting, cfg.PrefillChunk)
	}
	ctx, stop := context.WithCancel(context.Background())
	s := &Scheduler{cfg: cfg, m: cfg.Model, pool: cfg.Pool, wake: make(chan struct{}, 1), stop: stop, exited: make(chan struct{})}
	go s.loop(ctx)
	return s, nil
}

// Running is the number of sequences being decoded.
func (s *Scheduler) Running() int { return int(s.nRunning.Load()) }

// Waiting is the number of requests waiting for memory.
func (s *Scheduler) Waiting() int { return int(s.nWaiting.Load()) }

// Pool is the scheduler's block pool.
func (s *Scheduler) Pool() *kvpool.Pool { return s.pool }

// need is the blocks a sequence of n tokens takes in every head of every layer.
func (s *Scheduler) need(n int) int {
	c := s.m.Config
	return c.NumLayers * c.NumKVHeads * s.pool.BlocksFor(n)
}

// Generate runs req and returns its result once it is finished. Cancelling ctx ends the
// sequence at the next step boundary (or layer, during its prefill); Generate returns
// ctx's error only after its blocks are back in the pool.
func (s *Scheduler) Generate(ctx context.Context, req Request) (*Result, error) {
	cfg := s.m.Config
	switch {
	case len(req.Prompt) == 0:
		return nil, errors.New("sched: empty prompt")
	case req.MaxTokens < 1:
		return nil, fmt.Errorf("sched: max tokens %d: want at least 1", req.MaxTokens)
	case len(req.Prompt) >= cfg.MaxPositionEmbeddings:
		return nil, fmt.Errorf("%w: the prompt has %d tokens, the model's context is %d (with room for one generated token)", model.ErrContextTooLong, len(req.Prompt), cfg.MaxPositionEmbeddings)
	}
	sq := &seq{req: req, ctx: ctx, done: make(chan struct{}), pos: len(req.Prompt)}
	sq.res.PromptTokens = len(req.Prompt)
	// The worst case: every head holds the prompt and every generated token but the last.
	sq.commit = s.need(len(req.Prompt) + req.MaxTokens)
	if sq.commit > s.pool.Blocks() {
		return nil, fmt.Errorf("%w: %d prompt + %d new tokens take %d blocks of %d", ErrTooLarge, len(req.Prompt), req.MaxTokens, sq.commit, s.pool.Blocks())
	}
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return nil, ErrClosed
	case len(s.waiting) >= s.cfg.MaxWaiting:
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %d requests wait", ErrQueueFull, len(s.waiting))
	}
	s.waiting = append(s.waiting, sq)
	s.nWaiting.Store(int64(len(s.waiting)))
	s.mu.Unlock()
	s.poke()

	select {
	case <-sq.done:
	case <-ctx.Done():
		s.poke() // the loop notices the cancellation at its next boundary
		<-sq.done
	}
	if sq.err != nil {
		return nil, sq.err
	}
	return &sq.res, nil
}

func (s *Scheduler) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Close stops the scheduler; running and waiting requests end with ErrClosed.
func (s *Scheduler) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.stop()
	<-s.exited
}

// finish ends a running or admitted sequence: its cache goes back to the pool.
func (s *Scheduler) finish(sq *seq, err error) {
	if sq.cache != nil {
		// A cache that holds device memory of its own (the GPU paged cache's block tables)
		// frees it now; the blocks go back to the pool either way.
		if r, ok := sq.cache.(interface{ Release() }); ok {
			r.Release()
		} else {
			sq.cache.Reset()
		}
		sq.cache = nil
	}
	s.committed -= sq.commit
	sq.err = err
	close(sq.done)
}

func (s *Scheduler) loop(ctx context.Context) {
	defer close(s.exited)
	defer func() {
		for _, sq := range s.running {
			s.finish(sq, ErrClosed)
		}
		if s.prefilling != nil {
			s.finish(s.prefilling, ErrClosed)
			s.prefilling = nil
		}
		s.mu.Lock()
		for _, sq := range s.waiting {
			sq.err = ErrClosed
			close(sq.done)
		}
		s.waiting = nil
		s.mu.Unlock()
	}()
	for {
		s.dropCancelled()
		var admitted *seq
		if s.prefilling == nil {
			admitted = s.admit()
		}
		if len(s.running) == 0 && admitted == nil && s.prefilling == nil {
			select {
			case <-s.wake:
				continue
			case <-ctx.Done():
				return
			}
		}
		if ctx.Err() != nil {
			if admitted != nil {
				s.finish(admitted, ErrClosed)
			}
			return
		}
		if admitted != nil {
			sq := admitted
			sq.cache = s.m.NewCache(0)
			sq.sampler = generate.NewSampler(sq.req.Temperature, sq.req.TopP, sq.req.Seed)
			if s.cfg.PrefillChunk > 0 && sq.req.Method == nil && len(sq.req.Prompt) > s.cfg.PrefillChunk {
				s.prefilling = sq
			} else {
				s.prefill(sq)
			}
		}
		if s.prefilling != nil {
			s.prefillChunk()
		}
		s.decode(ctx)
		s.nRunning.Store(int64(len(s.running)))
	}
}

// dropCancelled ends running sequences whose request was cancelled.
func (s *Scheduler) dropCancelled() {
	s.running = slices.DeleteFunc(s.running, func(sq *seq) bool {
		if err := sq.ctx.Err(); err != nil {
			s.finish(sq, err)
			return true
		}
		return false
	})
	s.nRunning.Store(int64(len(s.running)))
}

// admit takes the first waiting request when a sequence slot and its blocks are free
// (first come, first served: a large request at the head is not overtaken), dropping
// cancelled ones. One request per step, so prefills interleave with decode steps.
func (s *Scheduler) admit() *seq {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer func() { s.nWaiting.Store(int64(len(s.waiting))) }()
	for len(s.waiting) > 0 {
		sq := s.waiting[0]
		if err := sq.ctx.Err(); err != nil {
			s.waiting = s.waiting[1:]
			sq.err = err
			close(sq.done)
			continue
		}
		if len(s.running) >= s.cfg.MaxRunning || s.committed+sq.commit > s.pool.Blocks() {
			return nil
		}
		s.waiting = s.waiting[1:]
		s.committed += sq.commit
		return sq
	}
	return nil
}

// prefillChunk runs the next chunk of the sequence being prefilled in chunks; after the
// last one the sequence joins the running batch.
func (s *Scheduler) prefillChunk() {
	sq := s.prefilling
	if err := sq.ctx.Err(); err != nil {
		s.prefilling = nil
		s.finish(sq, err)
		return
	}
	p := sq.req.Prompt
	n := min(s.cfg.PrefillChunk, len(p)-sq.filled)
	logits, err := s.m.Forward(sq.ctx, p[sq.filled:sq.filled+n], sq.filled, sq.cache, model.ForwardOptions{})
	if err != nil {
		s.prefilling = nil
		s.finish(sq, fmt.Errorf("sched: prefill: %w", err))
		return
	}
	sq.filled += n
	if sq.filled < len(p) {
		return
	}
	s.prefilling = nil
	sq.res.KVBytesPeak = sq.cache.Bytes()
	sq.logits = logits
	s.running = append(s.running, sq)
	s.nRunning.Store(int64(len(s.running)))
}

// prefill runs an admitted request's prompt in one pass, compresses its cache when it
// has a Method, and adds it to the running batch.
func (s *Scheduler) prefill(sq *seq) {
	r := sq.req
	var opt model.ForwardOptions
	var col *eviction.Collector
	if r.Method != nil {
		col = r.Method.NewCollector(s.m) // scores stay on a device that can select there
		opt.Observer = col
	}
	logits, err := s.m.Forward(sq.ctx, r.Prompt, 0, sq.cache, opt)
	if err != nil {
		s.finish(sq, fmt.Errorf("sched: prefill: %w", err))
		return
	}
	sq.res.KVBytesPeak = sq.cache.Bytes()
	if r.Method != nil {
		before := entries(sq.cache)
		// Room for every token still to come (at most MaxTokens-1 enter the cache).
		err := r.Method.CompressCollected(sq.cache, col, r.MaxTokens)
		col.Release()
		if err != nil {
			s.finish(sq, fmt.Errorf("sched: eviction: %w", err))
			return
		}
		sq.res.EvictedEntries = before - entries(sq.cache)
		// The cache now holds every block it will need: promise exactly that.
		held := int(sq.cache.Bytes() / s.pool.BlockBytes())
		s.committed += held - sq.commit
		sq.commit = held
	}
	sq.logits = logits
	s.running = append(s.running, sq)
	s.nRunning.Store(int64(len(s.running)))
}

// entries counts the cache's (token, layer, head) entries.
func entries(c backend.KVCache) int {
	n := 0
	for l := 0; l < c.Layers(); l++ {
		for h := 0; h < c.KVHeads(); h++ {
			n += c.Len(l, h)
		}
	}
	return n
}

// decode samples every running sequence's next token from its logits (the same steps,
// in the same order, as generate.Generate), ends the finished ones and runs the rest one
// token further in one batched pass.
func (s *Scheduler) decode(ctx context.Context) {
	eos := s.m.Config.EOSTokenIDs
	maxPos := s.m.Config.MaxPositionEmbeddings
	var active []*seq
	var segs []model.Segment
	s.running = slices.DeleteFunc(s.running, func(sq *seq) bool {
		r, res := &sq.req, &sq.res
		id := sq.sampler.Sample(sq.logits)
		reason := ""
		switch {
		case !r.IgnoreEOS && slices.Contains(eos, id):
			reason = "eos"
		default:
			res.Tokens = append(res.Tokens, id)
			switch {
			case r.OnToken != nil && r.OnToken(id):
				reason = "stop_string"
			case len(res.Tokens) >= r.MaxTokens:
				reason = "max_tokens"
			case sq.pos+1 > maxPos:
				reason = "context"
			}
		}
		if reason != "" {
			res.StopReason = reason
			s.finish(sq, nil)
			return true
		}
		active = append(active, sq)
		segs = append(segs, model.Segment{IDs: []int{id}, Pos0: sq.pos, Cache: sq.cache})
		sq.pos++
		return false
	})
	if len(segs) == 0 {
		return
	}
	start := time.Now()
	logits, err := s.m.ForwardBatch(ctx, segs)
	took := time.Since(start)
	if err != nil {
		// A failed step (the server stopping, or a backend error) ends every sequence in it.
		for _, sq := range active {
			s.finish(sq, fmt.Errorf("sched: decode: %w", err))
		}
		s.running = slices.DeleteFunc(s.running, func(sq *seq) bool { return slices.Contains(active, sq) })
		return
	}
	var live int64
	for i, sq := range active {
		sq.logits = logits[i]
		sq.res.KVBytesPeak = max(sq.res.KVBytesPeak, sq.cache.Bytes())
		if s.cfg.OnStep != nil {
			live += sq.cache.LiveBytes()
		}
	}
	if s.cfg.OnStep != nil {
		s.cfg.OnStep(Step{Batch: len(active), Time: took, LiveKVBytes: live})
	}
}
