// Package serve is lukv's OpenAI-compatible HTTP server: POST /v1/completions and
// /v1/chat/completions (streamed with server-sent events or not), GET /v1/models,
// /health and /metrics. It is a thin layer over the continuous-batching scheduler
// (sched) and the KV block pool (kvpool): it parses and checks requests, renders chat
// templates, turns tokens into text and stop strings, and maps errors to OpenAI-style
// JSON bodies.
package serve

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/lukv/lukv/eviction"
	"github.com/lukv/lukv/model"
	"github.com/lukv/lukv/sched"
	"github.com/lukv/lukv/tokenizer"
)

// Eviction is the server-wide default eviction, which a request's kv_method,
// kv_allocator and kv_compression fields override.
type Eviction struct {
	Method      string  // scorer name, or "full" for no eviction
	Allocator   string  // eviction.AllocatorNames
	Compression float64 // fraction of the prompt's KV entries to drop, in [0, 1)
	Sink        int     // first tokens every head keeps
	Window      int     // last tokens every head keeps
}

// Config is what a Server serves.
type Config struct {
	Model     *model.Model
	Tokenizer *tokenizer.Tokenizer
	// Chat renders /v1/chat/completions prompts; nil makes that endpoint answer 400
	// (the checkpoint has no chat_template).
	Chat      *tokenizer.ChatTemplate
	Scheduler *sched.Scheduler
	// ModelName is the id clients send as "model" (an empty "model" is accepted too).
	ModelName string
	// APIKey, when set, is required as "Authorization: Bearer <key>" on /v1/ routes.
	APIKey string
	// DefaultMaxTokens caps a completion without max_tokens (and the context caps it).
	DefaultMaxTokens int
	Eviction         Eviction
	// Curve, when set, gives the LU-KV budget curve for a scorer (kv_allocator "lukv").
	Curve func(scorer string) (*eviction.BudgetCurve, error)
}

// Server is an http.Handler serving Config's model.
type Server struct {
	cfg     Config
	mux     *http.ServeMux
	metrics *metrics
	nextID  atomic.Int64
	created int64
}

// maxBody bounds a request body.
const maxBody = 4 << 20

// New checks cfg and builds the server's routes and metrics.
func New(cfg Config) (*Server, error) {
	if cfg.Model == nil || cfg.Tokenizer == nil || cfg.Scheduler == nil {
		return nil, errors.New("serve: Config needs Model, Tokenizer and Scheduler")
	}
	if cfg.ModelName == "" {
		return nil, errors.New("serve: Config needs a ModelName")
	}
	if cfg.DefaultMaxTokens <= 0 {
		cfg.DefaultMaxTokens = 256
	}
	if cfg.Eviction.Method == "" {
		cfg.Eviction.Method = "full"
	}
	if cfg.Eviction.Allocator == "" {
		cfg.Eviction.Allocator = "uniform"
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux(), created: time.Now().Unix()}
	// The defaults must make a valid method themselves.
	if _, perr := s.method(nil, nil, nil); perr != nil {
		return nil, fmt.Errorf("serve: default eviction: %s", perr.Message)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGoCollector())
	s.metrics = newMetrics(reg, cfg.Scheduler)
	s.mux.HandleFunc("POST /v1/completions", s.auth(s.completions))
	s.mux.HandleFunc("POST /v1/chat/completions", s.auth(s.chatCompletions))
	s.mux.HandleFunc("GET /v1/models", s.auth(s.models))
	s.mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "running": cfg.Scheduler.Running(), "waiting": cfg.Scheduler.Waiting()})
	})
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, apiErr(http.StatusNotFound, "invalid_request_error", "", "not_found", "no route for %s %s", r.Method, r.URL.Path))
	})
	return s, nil
}

// ServeHTTP serves one request, counting it by endpoint and status.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
	s.mux.ServeHTTP(rec, r)
	endpoint := r.URL.Path
	switch endpoint {
	case "/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics":
	default:
		endpoint = "other"
	}
	code := fmt.Sprint(rec.code)
	if rec.clientGone {
		code = "499" // the client went away (nginx's code for it)
	}
	s.metrics.requests.WithLabelValues(endpoint, code).Inc()
}

// statusRecorder remembers the status written.
type statusRecorder struct {
	http.ResponseWriter
	code       int
	clientGone bool
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// auth checks the Bearer key when the server has one.
func (s *Server) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.APIKey != "" {
			key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || key != s.cfg.APIKey {
				writeError(w, apiErr(http.StatusUnauthorized, "invalid_request_error", "", "invalid_api_key", "missing or wrong API key (send Authorization: Bearer <key>)"))
				return
			}
		}
		h(w, r)
	}
}

func (s *Server) models(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": []any{
		map[string]any{"id": s.cfg.ModelName, "object": "model", "created": s.created, "owned_by": "lukv"},
	}})
}

// apiError is an OpenAI-style error: {"error": {"message", "type", "param", "code"}}.
type apiError struct {
	status  int
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

func apiErr(status int, typ, param, code, format string, args ...any) *apiError {
	e := &apiError{status: status, Message: fmt.Sprintf(format, args...), Type: typ}
	if param != "" {
		e.Param = &param
	}
	if code != "" {
		e.Code = &code
	}
	return e
}

// badRequest is a 400 invalid_request_error about param.
func badRequest(param, format string, args ...any) *apiError {
	return apiErr(http.StatusBadRequest, "invalid_request_error", param, "", format, args...)
}

func writeError(w http.ResponseWriter, e *apiError) {
	if e.status == http.StatusTooManyRequests || e.status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, e.status, map[string]any{"error": e})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (e *apiError) Error() string { return e.Message }
