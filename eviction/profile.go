package eviction

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"

	"github.com/lukv/lukv/generate"
	"github.com/lukv/lukv/model"
	"github.com/lukv/lukv/tokenizer"
)

// Calibration is the text LU-KV profiles a model on: one long context and questions
// about it (the authors used one ~4k-token text and 30 questions). File format (JSON):
//
//	{"name": "...", "context": "...", "questions": ["...", ...]}
type Calibration struct {
	Name      string   `json:"name"`
	Context   string   `json:"context"`
	Questions []string `json:"questions"`
	sha       string
}

// LoadCalibration reads a calibration file.
func LoadCalibration(path string) (*Calibration, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("calibration: %w", err)
	}
	var c Calibration
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("calibration %s: not valid JSON: %w", path, err)
	}
	if c.Context == "" || len(c.Questions) == 0 {
		return nil, fmt.Errorf("calibration %s: needs a non-empty \"context\" and at least one of \"questions\"", path)
	}
	c.sha = c.hash()
	return &c, nil
}

// hash is the SHA-256 of the context and questions, recorded in the curve's sidecar.
func (c *Calibration) hash() string {
	h := sha256.New()
	h.Write([]byte(c.Context))
	for _, q := range c.Questions {
		h.Write([]byte{0})
		h.Write([]byte(q))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Profiler profiles one model with one scorer.
type Profiler struct {
	Model     *model.Model
	Tokenizer *tokenizer.Tokenizer
	Scorer    Scorer
	Options   ProfileOptions // sink, window, floor, global or per layer
	// Horizon is how many tokens are decoded after each question (the released code:
	// 64, sampled at temperature 0.7).
	Horizon     int
	Temperature float64
	Seed        uint64
	// Progress, when set, is called after each question with (done, total).
	Progress func(done, total int)
}

// Profile runs the LU-KV protocol (LUKV.md): prefill the context alone and score it;
// for each question, decode Horizon tokens with full attention and record every context
// token's oracle importance; solve each question's curve (hull relaxation and global
// greedy) and average them.
func (p *Profiler) Profile(ctx context.Context, cal *Calibration) (*BudgetCurve, error) {
	m := p.Model
	contextIDs := p.Tokenizer.Encode(cal.Context, true)
	T := len(contextIDs)
	if p.Horizon < 1 {
		return nil, fmt.Errorf("profile: horizon %d: want at least one token decoded after each question", p.Horizon)
	}
	if need := p.Options.Sink + p.Options.Window; T <= need {
		return nil, fmt.Errorf("profile: the calibration context has %d tokens, no more than sink+window (%d)", T, need)
	}
	questions := make([][]int, len(cal.Questions))
	longest := 0
	for i, q := range cal.Questions {
		questions[i] = p.Tokenizer.Encode(q, false)
		longest = max(longest, len(questions[i]))
	}
	if T+longest+p.Horizon > m.Config.MaxPositionEmbeddings {
		return nil, fmt.Errorf("%w: profile: context (%d) + question (%d) + horizon (%d) tokens pass the model's context of %d",
			model.ErrContextTooLong, T, longest, p.Horizon, m.Config.MaxPositionEmbeddings)
	}

	// Prefill the context alone, scoring every layer as kvpress would at compression time.
	cache := m.NewCache(T + longest + p.Horizon)
	collector := NewCollector(m, p.Scorer)
	_, err := m.Forward(ctx, contextIDs, 0, cache, model.ForwardOptions{Observer: collector})
	if err != nil {
		return nil, err
	}
	orc := newOracle(m, cache, T)

	var curves []*BudgetCurve
	for qi, q := range questions {
		if err := cache.Truncate(T); err != nil {
			return nil, err
		}
		orc.start()
		logits, err := m.Forward(ctx, q, T, cache, model.ForwardOptions{Observer: orc})
		if err != nil {
			return nil, err
		}
		// Decode with full attention; each fed token's queries are a decode step.
		orc.active = true
		sampler := generate.NewSampler(p.Temperature, 1, p.Seed+uint64(qi))
		pos := T + len(q)
		for step := 0; step < p.Horizon; step++ {
			id := sampler.Sample(logits)
			if logits, err = m.Forward(ctx, []int{id}, pos, cache, model.ForwardOptions{Observer: orc}); err != nil {
				return nil, err
			}
			pos++
		}
		c, err := QuestionCurve(collector.Scores, orc.imp, p.Options)
		if err != nil {
			return nil, fmt.Errorf("profile: question %d: %w", qi+1, err)
		}
		curves = append(curves, c)
		if p.Progress != nil {
			p.Progress(qi+1, len(questions))
		}
	}
	curve, err := AverageCurves(curves)
	if err != nil {
		return nil, err
	}
	curve.Meta.Scorer = p.Scorer.Name()
	curve.Meta.Horizon = p.Horizon
	curve.Meta.CalibrationSHA256 = cal.sha
	return curve, nil
}
