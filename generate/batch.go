package generate

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/lukv/lukv/model"
)

// Request is one sequence of a batched generation. Its Options must carry Cache with the
// first Cached prompt tokens already in it (a prefilled, possibly compressed cache);
// hooks that watch or change the cache during generation (ContextTokens, Observer,
// AfterPrefill, DecodeObserver, AfterStep) are not supported in a batch.
type Request struct {
	Prompt  []int
	Options Options
}

// GenerateBatch continues several prefilled sequences together: each step runs the
// active sequences through one batched forward pass (model.ForwardBatch) of at most
// maxBatch sequences, so the weights are read once per step for the batch instead of
// once per sequence. Each sequence stops on its own (end of sequence, stop string, token
// limit, context) exactly as Generate would stop it, and each result equals Generate's
// for the same request when the backend computes a row the same way whatever the number
// of rows (the CPU backend does; the tests check it). PrefillTime and DecodeTime are the
// batch's, shared by its sequences.
func (g *Generator) GenerateBatch(ctx context.Context, reqs []Request, maxBatch int) ([]*Result, error) {
	cfg := g.Model.Config
	if maxBatch <= 0 {
		return nil, fmt.Errorf("generate: batch size %d: want at least 1", maxBatch)
	}
	type seq struct {
		opt     Options
		res     *Result
		sampler *Sampler
		stream  *stopStream
		logits  []float32
		pos     int
		done    bool
	}
	seqs := make([]*seq, len(reqs))
	for i, r := range reqs {
		o := r.Options
		switch {
		case o.Cache == nil:
			return nil, fmt.Errorf("generate: batch request %d has no prefilled Cache", i)
		case o.Cached <= 0 || o.Cached >= len(r.Prompt):
			return nil, fmt.Errorf("generate: batch request %d: %d cached tokens for a %d-token prompt: want at least one token cached and one to prefill", i, o.Cached, len(r.Prompt))
		case len(r.Prompt) > cfg.ContextLength():
			return nil, fmt.Errorf("%w: batch request %d has %d tokens, the model's context is %d", model.ErrContextTooLong, i, len(r.Prompt), cfg.ContextLength())
		case o.ContextTokens > 0 || o.Observer != nil || o.AfterPrefill != nil || o.DecodeObserver != nil || o.AfterStep != nil:
			return nil, fmt.Errorf("generate: batch request %d: ContextTokens, Observer, AfterPrefill, DecodeObserver and AfterStep are not supported in a batch", i)
		}
		s := &seq{opt: o, pos: len(r.Prompt),
			res:     &Result{PromptTokens: len(r.Prompt), StopReason: "max_tokens"},
			sampler: NewSampler(o.Temperature, o.TopP, o.Seed),
			stream:  newStopStream(g.Tokenizer.NewStreamDecoder(true), o.StopStrings, o.OnText),
		}
		s.res.KVBytesPrefill, s.res.KVLivePrefill = o.Cache.Bytes(), o.Cache.LiveBytes()
		s.res.KVBytesCompressed, s.res.KVLiveCompressed = s.res.KVBytesPrefill, s.res.KVLivePrefill
		seqs[i] = s
	}
	// forward runs one segment per sequence, maxBatch sequences at a time, and stores
	// each sequence's last logits.
	forward := func(active []*seq, segs []model.Segment) error {
		for lo := 0; lo < len(segs); lo += maxBatch {
			hi := min(lo+maxBatch, len(segs))
			logits, err := g.Model.ForwardBatch(ctx, segs[lo:hi])
			if err != nil {
				return err
			}
			for j, l := range logits {
				active[lo+j].logits = l
			}
		}
		return nil
	}

	// The rest of every prompt.
	start := time.Now()
	segs := make([]model.Segment, len(seqs))
	for i, s := range seqs {
		segs[i] = model.Segment{IDs: reqs[i].Prompt[s.opt.Cached:], Pos0: s.opt.Cached, Cache: s.opt.Cache}
	}
	if err := forward(seqs, segs); err != nil {
		return nil, err
	}
	prefill := time.Since(start)

	// Decode: the same steps as Generate's loop, for every sequence still going.
	start = time.Now()
	for {
		var active []*seq
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
			segs = append(segs, model.Segment{IDs: []int{id}, Pos0: s.pos, Cache: s.opt.Cache})
			s.pos++
		}
		if len(active) == 0 {
			break
		}
		if err := forward(active, segs); err != nil {
			return nil, err
		}
	}
	decode := time.Since(start)
	out := make([]*Result, len(seqs))
	for i, s := range seqs {
		s.res.PrefillTime, s.res.DecodeTime = prefill, decode
		s.res.Text = s.stream.finish()
		s.res.KVBytes = s.opt.Cache.Bytes()
		out[i] = s.res
	}
	return out, nil
}
