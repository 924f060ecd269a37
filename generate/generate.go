package generate

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/model"
	"github.com/lukv/lukv/tokenizer"
)

// Options control one generation.
type Options struct {
	MaxNewTokens int     // >= 0
	Temperature  float64 // >= 0; 0: greedy
	TopP         float64 // nucleus mass in [0, 1]; 0 or 1: off
	Seed         uint64
	StopStrings  []string // generation ends before the first occurrence of any
	IgnoreEOS    bool     // keep going past end-of-sequence tokens
	// OnText receives the text as it is produced; every piece is final (text that could
	// still turn into a stop string is held back until it cannot).
	OnText func(piece string)
	// AfterPrefill, when set, runs once the prompt is in the cache and before decoding
	// (eviction compresses the cache here). It gets the prompt's length in tokens.
	AfterPrefill func(cache backend.KVCache, promptTokens int) error
	// ContextTokens, when in (0, len(prompt)), splits the prefill: prompt[:ContextTokens]
	// (the context) is prefilled and handed to AfterPrefill, then the rest (the question)
	// follows. This is query-agnostic compression: eviction cannot see the question.
	ContextTokens int
	// Observer watches every layer during the first prefill (the context, or the whole
	// prompt); eviction scorers read activations through it.
	Observer model.Observer
	// DecodeObserver watches every layer during decode steps (decode-time eviction).
	DecodeObserver model.Observer
	// AfterStep, when set, runs after each decode step with the cache and the number of
	// tokens generated so far (decode-time eviction).
	AfterStep func(cache backend.KVCache, generated int) error
	// Cache, when set, already holds the first Cached tokens of the prompt (a clone of an
	// earlier prefill, possibly compressed): only the rest is prefilled, into Cache. The
	// evaluation runner prefills a context once and reuses it for every method this way.
	Cache  backend.KVCache
	Cached int
	// Chunked, when set, runs the first prefill (the context, or the whole prompt) chunk by
	// chunk (see ChunkedPrefill; its Reserve is set here), evicting as it goes when it has
	// an Evictor. Not with Cache or Observer, and in a batch of one only.
	Chunked *ChunkedPrefill
}

// Result is what a generation produced and what it cost.
type Result struct {
	Text         string        `json:"text"`
	Tokens       []int         `json:"tokens"`
	PromptTokens int           `json:"prompt_tokens"`
	StopReason   string        `json:"stop_reason"` // "eos", "stop_string", "max_tokens", "context"
	PrefillTime  time.Duration `json:"prefill_ns"`
	DecodeTime   time.Duration `json:"decode_ns"`
	// KVBytesPrefill is the cache's memory right after prefill (before any compression);
	// KVBytes is its memory at the end.
	KVBytesPrefill int64 `json:"kv_bytes_prefill"`
	// KVBytesCompressed is its memory right after AfterPrefill ran (eviction).
	KVBytesCompressed int64 `json:"kv_bytes_compressed"`
	// KVLivePrefill and KVLiveCompressed count only the tokens held (no reserved room).
	KVLivePrefill    int64 `json:"kv_live_bytes_prefill"`
	KVLiveCompressed int64 `json:"kv_live_bytes_compressed"`
	KVBytes          int64 `json:"kv_bytes"`
	// Chunks has one entry per chunk of a chunked prefill; KVBytesPrefill and
	// KVLivePrefill are then the peaks over the chunks (before each chunk's eviction).
	Chunks []ChunkStats `json:"chunks,omitempty"`
	// KVLive is the tokens held at the end, in bytes (decode-time eviction keeps it near
	// the compressed size).
	KVLive int64 `json:"kv_live_bytes"`
	// CompressTime is the time AfterPrefill took (scoring, allocation, compaction).
	CompressTime time.Duration `json:"compress_ns"`
}

// PrefillTokensPerSec is the prompt's tokens over the prefill time.
func (r *Result) PrefillTokensPerSec() float64 {
	return float64(r.PromptTokens) / max(r.PrefillTime.Seconds(), 1e-9)
}

// DecodeTokensPerSec is the generated tokens (after the first, which prefill produced)
// over the decode time.
func (r *Result) DecodeTokensPerSec() float64 {
	if len(r.Tokens) <= 1 {
		return 0
	}
	return float64(len(r.Tokens)-1) / max(r.DecodeTime.Seconds(), 1e-9)
}

// Generator runs a model with its tokenizer.
type Generator struct {
	Model     *model.Model
	Tokenizer *tokenizer.Tokenizer
}

// Generate continues the prompt (token ids) and returns the new text. It is a batch of
// one through the same loop as GenerateBatch, with the hooks only one sequence can have
// (ContextTokens, Observer, AfterPrefill, DecodeObserver, AfterStep). Cancelling ctx
// stops it within one layer's time with ctx's error.
func (g *Generator) Generate(ctx context.Context, prompt []int, opt Options) (*Result, error) {
	r := Request{Prompt: prompt, Options: opt}
	if err := g.checkRequest(r, 1); err != nil {
		return nil, err
	}
	res, err := g.run(ctx, []Request{r}, 1)
	if err != nil {
		return nil, err
	}
	return res[0], nil
}

// checkRequest checks one request of a batch of n (Generate's: n = 1): its prompt, its
// options, a given Cache, and hooks that only one sequence can have.
func (g *Generator) checkRequest(r Request, n int) error {
	o := r.Options
	if len(r.Prompt) == 0 {
		return fmt.Errorf("generate: empty prompt")
	}
	if limit := g.Model.Config.ContextLength(); len(r.Prompt) > limit {
		return fmt.Errorf("%w: the prompt has %d tokens, the model's context is %d", model.ErrContextTooLong, len(r.Prompt), limit)
	}
	if err := o.check(); err != nil {
		return err
	}
	if n > 1 && (o.ContextTokens > 0 || o.Observer != nil || o.AfterPrefill != nil || o.DecodeObserver != nil || o.AfterStep != nil) {
		return fmt.Errorf("generate: ContextTokens, Observer, AfterPrefill, DecodeObserver and AfterStep are supported in a batch of one only")
	}
	if n > 1 && o.Chunked != nil {
		return fmt.Errorf("generate: Chunked is supported in a batch of one only")
	}
	if o.Cache != nil {
		if o.Cached <= 0 || o.Cached >= len(r.Prompt) {
			return fmt.Errorf("generate: %d cached tokens for a %d-token prompt: want at least one token cached and one to prefill", o.Cached, len(r.Prompt))
		}
		if o.ContextTokens > 0 || o.Observer != nil || o.Chunked != nil {
			return fmt.Errorf("generate: Cache cannot be combined with ContextTokens, Observer or Chunked (the cached part was prefilled elsewhere)")
		}
	}
	if o.Chunked != nil && o.Observer != nil {
		return fmt.Errorf("generate: Chunked cannot be combined with Observer (the chunk evictor observes)")
	}
	return nil
}

// check rejects sampling settings that would otherwise give garbage (NaN) or be
// silently changed (a negative temperature or top-p outside [0, 1]).
func (o Options) check() error {
	switch {
	case o.MaxNewTokens < 0:
		return fmt.Errorf("generate: MaxNewTokens %d: want >= 0", o.MaxNewTokens)
	case math.IsNaN(o.Temperature) || math.IsInf(o.Temperature, 0) || o.Temperature < 0:
		return fmt.Errorf("generate: Temperature %v: want a number >= 0 (0 is greedy)", o.Temperature)
	case math.IsNaN(o.TopP) || o.TopP < 0 || o.TopP > 1:
		return fmt.Errorf("generate: TopP %v: want 0 <= p <= 1 (0 and 1: off)", o.TopP)
	}
	return nil
}

// sequence is one request in progress.
type sequence struct {
	prompt  []int
	opt     Options
	cache   backend.KVCache
	first   int // prompt tokens in the cache before the rest of the prompt is prefilled
	res     *Result
	sampler *Sampler
	stream  *stopStream
	logits  []float32 // of the last token run
	pos     int       // position of the next token
	done    bool
}

// run is the one generation loop: each request's first prefill (the context, with its
// observer and AfterPrefill; skipped where a Cache is given), then the rest of every
// prompt and every decode step as batched forward passes of at most maxBatch sequences.
// The callers have checked the requests.
func (g *Generator) run(ctx context.Context, reqs []Request, maxBatch int) ([]*Result, error) {
	cfg := g.Model.Config
	start := time.Now()
	seqs := make([]*sequence, len(reqs))
	for i, r := range reqs {
		s, err := g.start(ctx, r)
		if err != nil {
			return nil, err
		}
		seqs[i] = s
	}
	// The rest of every prompt (the question, or what follows a given Cache).
	var rest []*sequence
	var segs []model.Segment
	for _, s := range seqs {
		if s.first < len(s.prompt) {
			rest = append(rest, s)
			segs = append(segs, model.Segment{IDs: s.prompt[s.first:], Pos0: s.first, Cache: s.cache})
		}
	}
	if err := g.forward(ctx, rest, segs, maxBatch, false); err != nil {
		return nil, err
	}
	prefill := time.Since(start)

	// Decode: every sequence still going samples its next token, checks its stops and,
	// unless it stopped, runs that token in the next batched step.
	start = time.Now()
	for {
		var active []*sequence
		segs = segs[:0]
		for _, s := range seqs {
			if s.done {
				continue
			}
			if len(s.res.Tokens) >= s.opt.MaxNewTokens {
				s.done = true
				continue
			}
			id := s.sampler.Sample(s.logits)
			if !s.opt.IgnoreEOS && slices.Contains(cfg.EOSTokenIDs, id) {
				s.res.StopReason, s.done = "eos", true
				continue
			}
			s.res.Tokens = append(s.res.Tokens, id)
			if s.stream.push(id) {
				s.res.StopReason, s.done = "stop_string", true
				continue
			}
			if len(s.res.Tokens) == s.opt.MaxNewTokens {
				s.done = true
				continue
			}
			if s.pos+1 > cfg.ContextLength() {
				s.res.StopReason, s.done = "context", true
				continue
			}
			active = append(active, s)
			segs = append(segs, model.Segment{IDs: []int{id}, Pos0: s.pos, Cache: s.cache})
			s.pos++
		}
		if len(active) == 0 {
			break
		}
		if err := g.forward(ctx, active, segs, maxBatch, true); err != nil {
			return nil, err
		}
		for _, s := range active {
			if s.opt.AfterStep != nil {
				if err := s.opt.AfterStep(s.cache, len(s.res.Tokens)); err != nil {
					return nil, err
				}
			}
		}
	}
	decode := time.Since(start)
	out := make([]*Result, len(seqs))
	for i, s := range seqs {
		s.res.PrefillTime, s.res.DecodeTime = prefill, decode
		s.res.Text = s.stream.finish()
		s.res.KVBytes, s.res.KVLive = s.cache.Bytes(), s.cache.LiveBytes()
		out[i] = s.res
	}
	return out, nil
}

// start sets a request up: its cache (Options.Cache, or a new one holding the first
// prefill: the context, or the whole prompt, watched by Observer) and AfterPrefill's
// compression, with the cache's sizes before and after it.
func (g *Generator) start(ctx context.Context, r Request) (*sequence, error) {
	opt := r.Options
	s := &sequence{prompt: r.Prompt, opt: opt, pos: len(r.Prompt),
		res:     &Result{PromptTokens: len(r.Prompt), StopReason: "max_tokens"},
		sampler: NewSampler(opt.Temperature, opt.TopP, opt.Seed),
		stream:  newStopStream(g.Tokenizer.NewStreamDecoder(true), opt.StopStrings, opt.OnText),
	}
	if opt.Cache != nil {
		s.cache, s.first = opt.Cache, opt.Cached
	} else {
		s.first = len(r.Prompt)
		if opt.ContextTokens > 0 && opt.ContextTokens < len(r.Prompt) {
			s.first = opt.ContextTokens
		}
		var err error
		if opt.Chunked != nil {
			s.logits, s.cache, err = g.prefillChunked(ctx, r.Prompt, s.first, opt, s.res)
		} else {
			s.cache = g.Model.NewCache(min(len(r.Prompt)+opt.MaxNewTokens, g.Model.Config.ContextLength()))
			s.logits, err = g.Model.Forward(ctx, r.Prompt[:s.first], 0, s.cache, model.ForwardOptions{Observer: opt.Observer})
		}
		if err != nil {
			return nil, err
		}
	}
	if s.res.Chunks == nil { // a chunked prefill recorded its peaks
		s.res.KVBytesPrefill, s.res.KVLivePrefill = s.cache.Bytes(), s.cache.LiveBytes()
	}
	if opt.AfterPrefill != nil {
		t := time.Now()
		if err := opt.AfterPrefill(s.cache, s.first); err != nil {
			return nil, err
		}
		s.res.CompressTime = time.Since(t)
	}
	s.res.KVBytesCompressed, s.res.KVLiveCompressed = s.cache.Bytes(), s.cache.LiveBytes()
	return s, nil
}

// forward runs one segment per sequence, maxBatch sequences at a time, and stores each
// sequence's last logits. A pass of one sequence goes through Model.Forward, so that
// during decode (decoding true) its DecodeObserver watches it.
func (g *Generator) forward(ctx context.Context, seqs []*sequence, segs []model.Segment, maxBatch int, decoding bool) error {
	for lo := 0; lo < len(segs); lo += maxBatch {
		hi := min(lo+maxBatch, len(segs))
		if hi-lo == 1 {
			var obs model.Observer
			if decoding {
				obs = seqs[lo].opt.DecodeObserver
			}
			sg := segs[lo]
			logits, err := g.Model.Forward(ctx, sg.IDs, sg.Pos0, sg.Cache, model.ForwardOptions{Observer: obs})
			if err != nil {
				return err
			}
			seqs[lo].logits = logits
			continue
		}
		logits, err := g.Model.ForwardBatch(ctx, segs[lo:hi])
		if err != nil {
			return err
		}
		for j, l := range logits {
			seqs[lo+j].logits = l
		}
	}
	return nil
}

// stopStream decodes tokens to text, cuts it at the first stop string and streams the
// parts that can no longer become one.
type stopStream struct {
	dec     *tokenizer.StreamDecoder
	stops   []string
	onText  func(string)
	text    strings.Builder
	emitted int
	stopped bool
}

func newStopStream(dec *tokenizer.StreamDecoder, stops []string, onText func(string)) *stopStream {
	var nonEmpty []string
	for _, s := range stops {
		if s != "" {
			nonEmpty = append(nonEmpty, s)
		}
	}
	return &stopStream{dec: dec, stops: nonEmpty, onText: onText}
}

// push adds a token; it reports whether a stop string has appeared.
func (s *stopStream) push(id int) bool {
	s.text.WriteString(s.dec.Next(id))
	return s.emit(false)
}

// emit streams what is safe; with final, everything left (up to a stop string).
func (s *stopStream) emit(final bool) bool {
	text := s.text.String()
	end := len(text)
	for _, st := range s.stops {
		if i := strings.Index(text, st); i >= 0 && i < end {
			end, s.stopped = i, true
		}
	}
	safe := end
	if !s.stopped && !final {
		// Hold back a tail that is a prefix of a stop string.
		for _, st := range s.stops {
			for k := min(len(st)-1, len(text)); k > 0; k-- {
				if strings.HasSuffix(text, st[:k]) {
					safe = min(safe, len(text)-k)
					break
				}
			}
		}
	}
	if safe > s.emitted {
		if s.onText != nil {
			s.onText(text[s.emitted:safe])
		}
		s.emitted = safe
	}
	return s.stopped
}

// finish flushes the decoder and returns the whole text, cut at any stop string.
func (s *stopStream) finish() string {
	if !s.stopped {
		s.text.WriteString(s.dec.Flush())
	}
	s.emit(true)
	return s.text.String()[:s.emitted]
}
