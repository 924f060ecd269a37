package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// LoadDir reads a checkpoint folder's tokenizer.json, then applies its
// tokenizer_config.json when there is one (ApplyConfig).
func LoadDir(dir string) (*Tokenizer, error) {
	t, err := Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return nil, err
	}
	if err := t.ApplyConfig(filepath.Join(dir, "tokenizer_config.json")); err != nil {
		return nil, err
	}
	return t, nil
}

// ApplyConfig applies tokenizer_config.json's BOS/EOS adding rules, as transformers'
// Llama tokenizers do: where add_bos_token (add_eos_token) is set, Encode with
// addSpecial puts bos_token in front (eos_token at the end) when true, and nothing there
// when false, replacing that side of tokenizer.json's post-processor; an absent field
// leaves that side as tokenizer.json has it. A missing file changes nothing.
func (t *Tokenizer) ApplyConfig(path string) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("tokenizer: %w", err)
	}
	var c struct {
		AddBOS *bool           `json:"add_bos_token"`
		AddEOS *bool           `json:"add_eos_token"`
		BOS    json.RawMessage `json:"bos_token"`
		EOS    json.RawMessage `json:"eos_token"`
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return fmt.Errorf("tokenizer: %s: %v", path, err)
	}
	tmpl := template{}
	if t.template != nil {
		tmpl = *t.template
	}
	side := func(add *bool, raw json.RawMessage, field string) ([]int, error) {
		if !*add {
			return nil, nil
		}
		tok, err := tokenString(raw)
		if err != nil || tok == "" {
			return nil, fmt.Errorf("tokenizer: %s: add_%s is true but %s is not a token string or {\"content\": ...} (%s)", path, field, field, raw)
		}
		id, ok := t.TokenID(tok)
		if !ok {
			return nil, fmt.Errorf("tokenizer: %s: %s %q is not in the vocabulary", path, field, tok)
		}
		return []int{id}, nil
	}
	if c.AddBOS != nil {
		if tmpl.prefix, err = side(c.AddBOS, c.BOS, "bos_token"); err != nil {
			return err
		}
	}
	if c.AddEOS != nil {
		if tmpl.suffix, err = side(c.AddEOS, c.EOS, "eos_token"); err != nil {
			return err
		}
	}
	t.template = nil
	if len(tmpl.prefix)+len(tmpl.suffix) > 0 {
		t.template = &tmpl
	}
	return nil
}
