package serve

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/lukv/lukv/eviction"
	"github.com/lukv/lukv/generate"
	"github.com/lukv/lukv/model"
	"github.com/lukv/lukv/sched"
	"github.com/lukv/lukv/tokenizer"
)

// request is the body of both completion endpoints (prompt for /v1/completions,
// messages for /v1/chat/completions); fields lukv does not use are ignored.
type request struct {
	Model               string          `json:"model"`
	Prompt              json.RawMessage `json:"prompt"`
	Messages            []message       `json:"messages"`
	MaxTokens           *int            `json:"max_tokens"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	Temperature         *float64        `json:"temperature"`
	TopP                *float64        `json:"top_p"`
	Seed                *int64          `json:"seed"`
	Stop                json.RawMessage `json:"stop"`
	N                   *int            `json:"n"`
	Stream              bool            `json:"stream"`
	StreamOptions       *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	// lukv's extensions: per-request eviction, and ignore_eos (as vLLM's) for fixed-length
	// generations in benchmarks and tests.
	IgnoreEOS     bool     `json:"ignore_eos"`
	KVCompression *float64 `json:"kv_compression"`
	KVMethod      *string  `json:"kv_method"`
	KVAllocator   *string  `json:"kv_allocator"`
}

// message is a chat message; content is a string or a list of {"type": "text"} parts.
type message struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// job is a checked request, ready for the scheduler.
type job struct {
	chat    bool
	stream  bool
	usage   bool // stream a final usage chunk
	stops   []string
	req     sched.Request
	started time.Time
}

func (s *Server) completions(w http.ResponseWriter, r *http.Request) { s.handle(w, r, false) }

func (s *Server) chatCompletions(w http.ResponseWriter, r *http.Request) { s.handle(w, r, true) }

func (s *Server) handle(w http.ResponseWriter, r *http.Request, chat bool) {
	started := time.Now()
	j, perr := s.parse(r, chat)
	if perr != nil {
		writeError(w, perr)
		return
	}
	j.started = started
	s.run(w, r, j)
}

// parse reads and checks a request body into a job.
func (s *Server) parse(r *http.Request, chat bool) (*job, *apiError) {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, apiErr(http.StatusRequestEntityTooLarge, "invalid_request_error", "", "", "request body over %d bytes", maxBody)
		}
		return nil, badRequest("", "reading the body: %v", err)
	}
	var req request
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&req); err != nil {
		return nil, badRequest("", "the body is not valid JSON for this endpoint: %v", err)
	}
	if dec.More() {
		return nil, badRequest("", "the body has data after its JSON object")
	}
	if req.Model != "" && req.Model != s.cfg.ModelName {
		return nil, apiErr(http.StatusNotFound, "invalid_request_error", "model", "model_not_found", "the model %q does not exist; this server serves %q", req.Model, s.cfg.ModelName)
	}
	var ids []int
	if chat {
		if ids, err = s.chatPrompt(req.Messages); err != nil {
			var perr *apiError
			if errors.As(err, &perr) {
				return nil, perr
			}
			return nil, badRequest("messages", "%v", err)
		}
	} else {
		var text string
		if perr := promptText(req.Prompt, &text); perr != nil {
			return nil, perr
		}
		ids = s.cfg.Tokenizer.Encode(text, true)
	}
	cfg := s.cfg.Model.Config
	ctxLen := cfg.MaxPositionEmbeddings
	if len(ids) == 0 {
		return nil, badRequest("prompt", "the prompt is empty")
	}
	if len(ids) >= ctxLen {
		return nil, apiErr(http.StatusBadRequest, "invalid_request_error", "messages", "context_length_exceeded",
			"the prompt has %d tokens; the model's context is %d tokens (with room for at least one generated token)", len(ids), ctxLen)
	}
	j := &job{chat: chat, stream: req.Stream, usage: req.StreamOptions != nil && req.StreamOptions.IncludeUsage}
	if req.N != nil && *req.N != 1 {
		return nil, badRequest("n", "n=%d: lukv returns one choice per request (n must be 1)", *req.N)
	}
	maxTok, param := req.MaxTokens, "max_tokens"
	if req.MaxCompletionTokens != nil {
		maxTok, param = req.MaxCompletionTokens, "max_completion_tokens"
	}
	room := ctxLen - len(ids)
	j.req.MaxTokens = min(s.cfg.DefaultMaxTokens, room)
	if maxTok != nil {
		switch {
		case *maxTok < 1:
			return nil, badRequest(param, "%s is %d; it must be at least 1", param, *maxTok)
		case *maxTok > room:
			return nil, apiErr(http.StatusBadRequest, "invalid_request_error", param, "context_length_exceeded",
				"%d prompt tokens + %s %d pass the model's context of %d tokens", len(ids), param, *maxTok, ctxLen)
		}
		j.req.MaxTokens = *maxTok
	}
	if t := req.Temperature; t != nil {
		if *t < 0 || *t > 2 {
			return nil, badRequest("temperature", "temperature %v: want 0 <= temperature <= 2", *t)
		}
		j.req.Temperature = *t
	}
	if p := req.TopP; p != nil {
		if *p <= 0 || *p > 1 {
			return nil, badRequest("top_p", "top_p %v: want 0 < top_p <= 1", *p)
		}
		j.req.TopP = *p
	}
	if req.Seed != nil {
		j.req.Seed = uint64(*req.Seed)
	}
	if j.stops, err = stopStrings(req.Stop); err != nil {
		return nil, badRequest("stop", "%v", err)
	}
	method, perr := s.method(req.KVMethod, req.KVAllocator, req.KVCompression)
	if perr != nil {
		return nil, perr
	}
	j.req.Prompt, j.req.Method, j.req.IgnoreEOS = ids, method, req.IgnoreEOS
	return j, nil
}

// promptText reads prompt: a string, or a list of one string.
func promptText(raw json.RawMessage, text *string) *apiError {
	if len(raw) == 0 || string(raw) == "null" {
		return badRequest("prompt", "prompt is required")
	}
	if json.Unmarshal(raw, text) == nil {
		return nil
	}
	var list []string
	if json.Unmarshal(raw, &list) == nil {
		if len(list) != 1 {
			return badRequest("prompt", "a list of %d prompts: lukv takes one prompt per request", len(list))
		}
		*text = list[0]
		return nil
	}
	return badRequest("prompt", "prompt must be a string (or a list of one string)")
}

// stopStrings reads stop: a string or a list of at most 4 strings.
func stopStrings(raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return []string{one}, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, errors.New("stop must be a string or a list of strings")
	}
	if len(list) > 4 {
		return nil, fmt.Errorf("%d stop strings: at most 4", len(list))
	}
	return list, nil
}

// chatPrompt renders messages with the chat template and encodes them (the template
// writes the special tokens itself).
func (s *Server) chatPrompt(msgs []message) ([]int, error) {
	if s.cfg.Chat == nil {
		return nil, badRequest("messages", "this model has no chat_template in its tokenizer_config.json; use /v1/completions")
	}
	if len(msgs) == 0 {
		return nil, errors.New("messages is empty: give at least one message")
	}
	conv := make([]tokenizer.ChatMessage, len(msgs))
	for i, m := range msgs {
		switch m.Role {
		case "system", "user", "assistant", "developer":
		default:
			return nil, fmt.Errorf("messages[%d].role %q: want system, user, assistant or developer", i, m.Role)
		}
		text, err := messageText(m.Content)
		if err != nil {
			return nil, fmt.Errorf("messages[%d].content: %w", i, err)
		}
		role := m.Role
		if role == "developer" {
			role = "system" // OpenAI's newer name for it; templates know "system"
		}
		conv[i] = tokenizer.ChatMessage{Role: role, Content: text}
	}
	text, err := s.cfg.Chat.Render(conv, true)
	if err != nil {
		return nil, err
	}
	return s.cfg.Tokenizer.Encode(text, false), nil
}

// messageText reads a message's content: a string or a list of text parts.
func messageText(raw json.RawMessage) (string, error) {
	var text string
	if json.Unmarshal(raw, &text) == nil {
		return text, nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", errors.New("want a string or a list of {\"type\": \"text\", \"text\": ...} parts")
	}
	for _, p := range parts {
		if p.Type != "text" {
			return "", fmt.Errorf("part of type %q: lukv takes text only", p.Type)
		}
		text += p.Text
	}
	return text, nil
}

// method builds the eviction method of a request from its kv_* fields over the server's
// defaults; nil means the full cache.
func (s *Server) method(name, alloc *string, ratio *float64) (*eviction.Method, *apiError) {
	d := s.cfg.Eviction
	if name != nil {
		d.Method = *name
	}
	if alloc != nil {
		d.Allocator = *alloc
	}
	if ratio != nil {
		d.Compression = *ratio
	}
	if d.Compression < 0 || d.Compression >= 1 {
		return nil, badRequest("kv_compression", "kv_compression %v: want 0 <= c < 1 (the fraction of the prompt's KV cache to evict)", d.Compression)
	}
	if d.Method == "full" || d.Compression == 0 {
		if d.Method != "full" {
			if _, err := eviction.NewScorer(d.Method); err != nil {
				return nil, badRequest("kv_method", "kv_method: %v (or \"full\")", err)
			}
		}
		return nil, nil
	}
	scorer, err := eviction.NewScorer(d.Method)
	if err != nil {
		return nil, badRequest("kv_method", "kv_method: %v (or \"full\")", err)
	}
	var curve *eviction.BudgetCurve
	if d.Allocator == "lukv" {
		if s.cfg.Curve == nil {
			return nil, badRequest("kv_allocator", "kv_allocator \"lukv\" needs a budget curve, and this server has none (start it with --curve)")
		}
		if curve, err = s.cfg.Curve(d.Method); err != nil {
			return nil, badRequest("kv_allocator", "kv_allocator lukv: %v", err)
		}
	}
	a, err := eviction.NewAllocator(d.Allocator, curve)
	if err != nil {
		return nil, badRequest("kv_allocator", "kv_allocator: %v", err)
	}
	return &eviction.Method{Scorer: scorer, Allocator: a, Ratio: d.Compression, Sink: d.Sink, Window: d.Window}, nil
}

// run sends a job to the scheduler and writes its answer, streamed or whole.
func (s *Server) run(w http.ResponseWriter, r *http.Request, j *job) {
	ctx, cancel := context.WithCancel(r.Context()) // a client that goes away cancels the sequence
	defer cancel()
	pieces := make(chan string, j.req.MaxTokens+2) // one piece per token at most: never blocks the scheduler
	stream := generate.NewTextStream(s.cfg.Tokenizer, j.stops, func(p string) { pieces <- p })
	var last time.Time
	j.req.OnToken = func(id int) bool {
		now := time.Now()
		if last.IsZero() {
			s.metrics.ttft.Observe(now.Sub(j.started).Seconds())
		} else {
			s.metrics.itl.Observe(now.Sub(last).Seconds())
		}
		last = now
		return stream.Push(id)
	}
	type outcome struct {
		res *sched.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := s.cfg.Scheduler.Generate(ctx, j.req)
		done <- outcome{res, err}
	}()

	id := s.newID(j.chat)
	sse := &sseWriter{w: w, id: id, model: s.cfg.ModelName, created: time.Now().Unix(), chat: j.chat}
	var out outcome
	if j.stream {
	wait:
		for {
			select {
			case p := <-pieces:
				if err := sse.piece(p); err != nil {
					cancel()
				}
			case out = <-done:
				break wait
			}
		}
	} else {
		out = <-done
	}
	if out.err != nil {
		s.writeRunError(w, sse, out.err, r.Context())
		return
	}
	res := out.res
	close(pieces)
	var text bytes.Buffer
	for p := range pieces {
		text.WriteString(p)
	}
	// Finish flushes held-back text through the same callback, now into a fresh channel.
	rest := make(chan string, 2)
	pieces = rest
	final := stream.Finish()
	close(rest)
	for p := range rest {
		text.WriteString(p)
	}
	s.metrics.promptTokens.Add(float64(res.PromptTokens))
	s.metrics.generatedTokens.Add(float64(len(res.Tokens)))
	if res.EvictedEntries > 0 {
		c := s.cfg.Model.Config
		s.metrics.evictedEntries.Add(float64(res.EvictedEntries))
		s.metrics.evictedTokens.Add(res.TokensEvicted(c.NumLayers, c.NumKVHeads))
	}
	reason := finishReason(res.StopReason)
	usage := map[string]int{"prompt_tokens": res.PromptTokens, "completion_tokens": len(res.Tokens), "total_tokens": res.PromptTokens + len(res.Tokens)}
	if j.stream {
		if text.Len() > 0 {
			sse.piece(text.String())
		}
		sse.finish(reason, usage, j.usage)
		return
	}
	choice := map[string]any{"index": 0, "finish_reason": reason, "logprobs": nil}
	object := "text_completion"
	if j.chat {
		object = "chat.completion"
		choice["message"] = map[string]any{"role": "assistant", "content": final}
	} else {
		choice["text"] = final
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "object": object, "created": sse.created, "model": s.cfg.ModelName,
		"choices": []any{choice}, "usage": usage})
}

// writeRunError answers a scheduler error: 429 when the queue is full, 503 when the
// server is stopping, 400 for a request too large for the KV pool, nothing when the
// client has gone.
func (s *Server) writeRunError(w http.ResponseWriter, sse *sseWriter, err error, client context.Context) {
	var e *apiError
	switch {
	case client.Err() != nil:
		if rec, ok := w.(*statusRecorder); ok {
			rec.clientGone = true
		}
		return
	case errors.Is(err, sched.ErrQueueFull):
		e = apiErr(http.StatusTooManyRequests, "rate_limit_error", "", "queue_full", "the server's queue is full; retry later (%v)", err)
	case errors.Is(err, sched.ErrClosed):
		e = apiErr(http.StatusServiceUnavailable, "server_error", "", "shutting_down", "the server is shutting down")
	case errors.Is(err, sched.ErrTooLarge):
		e = apiErr(http.StatusBadRequest, "invalid_request_error", "max_tokens", "kv_memory_exceeded", "%v", err)
	case errors.Is(err, model.ErrContextTooLong):
		e = apiErr(http.StatusBadRequest, "invalid_request_error", "", "context_length_exceeded", "%v", err)
	default:
		e = apiErr(http.StatusInternalServerError, "server_error", "", "", "%v", err)
	}
	if sse.started {
		sse.event(map[string]any{"error": e}) // headers are out: the error goes in the stream
		return
	}
	writeError(w, e)
}

// finishReason maps generate's stop reasons to OpenAI's.
func finishReason(stop string) string {
	if stop == "eos" || stop == "stop_string" {
		return "stop"
	}
	return "length"
}

func (s *Server) newID(chat bool) string {
	n := s.nextID.Add(1)
	if chat {
		return fmt.Sprintf("chatcmpl-%d-%d", s.created, n)
	}
	return fmt.Sprintf("cmpl-%d-%d", s.created, n)
}

// sseWriter writes a streamed completion as server-sent events. Headers go out with the
// first event, so an error before any token can still be a plain 4xx/5xx answer.
type sseWriter struct {
	w       http.ResponseWriter
	id      string
	model   string
	created int64
	chat    bool
	started bool
}

func (s *sseWriter) event(v any) error {
	if !s.started {
		h := s.w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		s.w.WriteHeader(http.StatusOK)
		s.started = true
	}
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(s.w, "data: %s\n\n", data); err != nil {
		return err
	}
	if f, ok := s.w.(http.Flusher); ok {
		f.Flush()
	}
	return nil
}

func (s *sseWriter) chunk(choices []any) map[string]any {
	object := "text_completion"
	if s.chat {
		object = "chat.completion.chunk"
	}
	return map[string]any{"id": s.id, "object": object, "created": s.created, "model": s.model, "choices": choices}
}

// piece streams one piece of text (chat: the first carries the assistant role).
func (s *sseWriter) piece(text string) error {
	if s.chat {
		delta := map[string]any{"content": text}
		if !s.started {
			delta["role"] = "assistant"
		}
		return s.event(s.chunk([]any{map[string]any{"index": 0, "delta": delta, "finish_reason": nil}}))
	}
	return s.event(s.chunk([]any{map[string]any{"index": 0, "text": text, "finish_reason": nil, "logprobs": nil}}))
}

// finish streams the finish reason, the usage when asked, and [DONE].
func (s *sseWriter) finish(reason string, usage map[string]int, withUsage bool) {
	if s.chat {
		delta := map[string]any{}
		if !s.started {
			delta = map[string]any{"role": "assistant", "content": ""}
		}
		s.event(s.chunk([]any{map[string]any{"index": 0, "delta": delta, "finish_reason": reason}}))
	} else {
		s.event(s.chunk([]any{map[string]any{"index": 0, "text": "", "finish_reason": reason, "logprobs": nil}}))
	}
	if withUsage {
		c := s.chunk([]any{})
		c["usage"] = usage
		s.event(c)
	}
	fmt.Fprint(s.w, "data: [DONE]\n\n")
	if f, ok := s.w.(http.Flusher); ok {
		f.Flush()
	}
}
