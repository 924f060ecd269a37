package loader

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
)

// GenerationConfig is the part of generation_config.json lukv uses: the end-of-sequence
// tokens and the sampling defaults the checkpoint's authors chose. Pointers are nil for
// absent fields.
type GenerationConfig struct {
	EOSTokenIDs  []int // eos_token_id, an int or a list; nil when absent
	BOSTokenID   *int
	DoSample     *bool
	Temperature  *float64
	TopP         *float64
	MaxNewTokens *int
}

// SamplingDefaults are the values `lukv-run generate` uses for flags the user did not set.
type SamplingDefaults struct {
	Temperature  float64 // 0: greedy
	TopP         float64 // 1: off
	MaxNewTokens int     // 0: no default (the command's own)
}

// Defaults turns the config into sampling defaults as transformers reads it: greedy
// unless do_sample is true; with do_sample, temperature and top_p default to 1. (top_k,
// which transformers applies with a default of 50, has no counterpart in lukv.)
func (g *GenerationConfig) Defaults() SamplingDefaults {
	d := SamplingDefaults{TopP: 1}
	if g == nil {
		return d
	}
	if g.DoSample != nil && *g.DoSample {
		d.Temperature = 1
		if g.Temperature != nil {
			d.Temperature = *g.Temperature
		}
		if g.TopP != nil {
			d.TopP = *g.TopP
		}
	}
	if g.MaxNewTokens != nil {
		d.MaxNewTokens = *g.MaxNewTokens
	}
	return d
}

// ParseGenerationConfig validates a generation_config.json; path is for messages.
func ParseGenerationConfig(data []byte, path string) (*GenerationConfig, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%s: %w: %s", path, ErrBadConfig, fmt.Sprintf(format, args...))
	}
	var r struct {
		EOSTokenID   json.RawMessage `json:"eos_token_id"`
		BOSTokenID   *int            `json:"bos_token_id"`
		DoSample     *bool           `json:"do_sample"`
		Temperature  *float64        `json:"temperature"`
		TopP         *float64        `json:"top_p"`
		MaxNewTokens *int            `json:"max_new_tokens"`
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, bad("%v", err)
	}
	g := &GenerationConfig{BOSTokenID: r.BOSTokenID, DoSample: r.DoSample, Temperature: r.Temperature, TopP: r.TopP, MaxNewTokens: r.MaxNewTokens}
	ids, err := parseTokenIDs(r.EOSTokenID)
	if err != nil {
		return nil, bad("eos_token_id: %v", err)
	}
	g.EOSTokenIDs = ids
	if t := g.Temperature; t != nil && (!(*t >= 0) || math.IsInf(*t, 0)) {
		return nil, bad("temperature is %g, want >= 0", *t)
	}
	if p := g.TopP; p != nil && !(*p > 0 && *p <= 1) {
		return nil, bad("top_p is %g, want in (0, 1]", *p)
	}
	if n := g.MaxNewTokens; n != nil && (*n < 0 || *n > maxSize) {
		return nil, bad("max_new_tokens is %d, want 0..%d", *n, maxSize)
	}
	return g, nil
}

// parseTokenIDs reads a token id field that is an int, a list of ints, or null.
func parseTokenIDs(raw json.RawMessage) ([]int, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var one int
	if err := json.Unmarshal(raw, &one); err == nil {
		return []int{one}, nil
	}
	var list []int
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("neither an integer nor a list of integers: %s", raw)
	}
	return list, nil
}

// LoadConfigDir reads a checkpoint folder's config.json and, when present,
// generation_config.json: its end-of-sequence tokens join config.json's (transformers'
// generate stops at generation_config's, which for Llama 3 instruct lists more than
// config.json), its BOS fills an absent one, and it is kept as Config.Generation.
func LoadConfigDir(dir string) (*Config, error) {
	cfg, err := LoadConfig(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "generation_config.json")
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return cfg, nil
	}
	if err != nil {
		return nil, err
	}
	g, err := ParseGenerationConfig(data, path)
	if err != nil {
		return nil, err
	}
	cfg.Generation = g
	for _, id := range g.EOSTokenIDs {
		if !slices.Contains(cfg.EOSTokenIDs, id) {
			cfg.EOSTokenIDs = append(cfg.EOSTokenIDs, id)
		}
	}
	if cfg.BOSTokenID < 0 && g.BOSTokenID != nil {
		cfg.BOSTokenID = *g.BOSTokenID
	}
	return cfg, nil
}
