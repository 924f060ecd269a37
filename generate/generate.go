package generate

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/lukv/lukv/backend"
	"github.com/lukv/lukv/model"
	"github.com/lukv/lukv/tokenizer"
)

// Options control one generation.
type Options struct {
	MaxNewTokens int
	Temperature  float64 // 0: greedy
	TopP         float64 // nucleus mass; 0 or 1: off
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
	// an Evictor. Not with Cache or Observer.
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
	// CompressTime is the time AfterPrefill took (scoring, allocation, compaction).
	CompressTime time.Duration `json:"compress_ns"`
	// Chunks has one entry per chunk of a chunked prefill; KVBytesPrefill and
	// KVLivePrefill are then the peaks over the chunks (before each chunk's eviction).
	Chunks []ChunkStats `json:"chunks,omitempty"`
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

// Generate continues the prompt (token ids) and returns the new text. Cancelling ctx
// stops it within one layer's time with ctx's error.
func (g *Generator) Generate(ctx context.Context, prompt []int, opt Options) (*Result, error) {
	cfg := g.Model.Config
	if len(prompt) == 0 {
		return nil, fmt.Errorf("generate: empty prompt")
	}
	if len(prompt) > cfg.MaxPositionEmbeddings {
		return nil, fmt.Errorf("%w: the prompt has %d tokens, the model's context is %d", model.ErrContextTooLong, len(prompt), cfg.MaxPositionEmbeddings)
	}
	res := &Result{PromptTokens: len(prompt)}
	sampler := NewSampler(opt.Temperature, opt.TopP, opt.Seed)
	stream := newStopStream(g.Tokenizer.NewStreamDecoder(true), opt.StopStrings, opt.OnText)

	start := time.Now()
	first := len(prompt)
	if opt.ContextTokens > 0 && opt.ContextTokens < len(prompt) {
		first = opt.ContextTokens
	}
	var cache backend.KVCache
	var logits []float32
	var err error
	if opt.Cache != nil {
		if opt.Cached <= 0 || opt.Cached >= len(prompt) {
			return nil, fmt.Errorf("generate: %d cached tokens for a %d-token prompt: want at least one token cached and one to prefill", opt.Cached, len(prompt))
		}
		if opt.ContextTokens > 0 || opt.Observer != nil || opt.Chunked != nil {
			return nil, fmt.Errorf("generate: Cache cannot be combined with ContextTokens, Observer or Chunked (the cached part was prefilled elsewhere)")
		}
		cache, first = opt.Cache, opt.Cached
	} else if opt.Chunked != nil {
		if opt.Observer != nil {
			return nil, fmt.Errorf("generate: Chunked cannot be combined with Observer (the chunk evictor observes)")
		}
		if logits, cache, err = g.prefillChunked(ctx, prompt, first, opt, res); err != nil {
			return nil, err
		}
	} else {
		cache = g.Model.NewCache(min(len(prompt)+opt.MaxNewTokens, cfg.MaxPositionEmbeddings))
		logits, err = g.Model.Forward(ctx, prompt[:first], 0, cache, model.ForwardOptions{Observer: opt.Observer})
		if err != nil {
			return nil, err
		}
	}
	if res.Chunks == nil {
		res.KVBytesPrefill, res.KVLivePrefill = cache.Bytes(), cache.LiveBytes()
	}
	if opt.AfterPrefill != nil {
		t := time.Now()
		if err := opt.AfterPrefill(cache, first); err != nil {
			return nil, err
		}
		res.CompressTime = time.Since(t)
	}
	res.KVBytesCompressed, res.KVLiveCompressed = cache.Bytes(), cache.LiveBytes()
	if first < len(prompt) {
		if logits, err = g.Model.Forward(ctx, prompt[first:], first, cache, model.ForwardOptions{}); err != nil {
			return nil, err
		}
	}
	res.PrefillTime = time.Since(start)

	start = time.Now()
	pos := len(prompt)
	res.StopReason = "max_tokens"
	for len(res.Tokens) < opt.MaxNewTokens {
		id := sampler.Sample(logits)
		if !opt.IgnoreEOS && slices.Contains(cfg.EOSTokenIDs, id) {
			res.StopReason = "eos"
			break
		}
		res.Tokens = append(res.Tokens, id)
		if stream.push(id) {
			res.StopReason = "stop_string"
			break
		}
		if len(res.Tokens) == opt.MaxNewTokens {
			break
		}
		if pos+1 > cfg.MaxPositionEmbeddings {
			res.StopReason = "context"
			break
		}
		logits, err = g.Model.Forward(ctx, []int{id}, pos, cache, model.ForwardOptions{Observer: opt.DecodeObserver})
		if err != nil {
			return nil, err
		}
		pos++
		if opt.AfterStep != nil {
			if err := opt.AfterStep(cache, len(res.Tokens)); err != nil {
				return nil, err
			}
		}
	}
	res.DecodeTime = time.Since(start)
	res.Text = stream.finish()
	res.KVBytes = cache.Bytes()
	return res, nil
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
