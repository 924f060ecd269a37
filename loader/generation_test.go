package loader

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestGenerationConfigDefaults(t *testing.T) {
	cases := []struct {
		json string
		want SamplingDefaults
	}{
		{`{}`, SamplingDefaults{TopP: 1}},
		// transformers samples only with do_sample; temperature alone is ignored.
		{`{"temperature": 0.6, "top_p": 0.9}`, SamplingDefaults{TopP: 1}},
		{`{"do_sample": true, "temperature": 0.6, "top_p": 0.9, "max_new_tokens": 300}`, SamplingDefaults{Temperature: 0.6, TopP: 0.9, MaxNewTokens: 300}},
		{`{"do_sample": true}`, SamplingDefaults{Temperature: 1, TopP: 1}},
		{`{"do_sample": false, "max_new_tokens": 7}`, SamplingDefaults{TopP: 1, MaxNewTokens: 7}},
	}
	for _, c := range cases {
		g, err := ParseGenerationConfig([]byte(c.json), "generation_config.json")
		if err != nil {
			t.Fatalf("%s: %v", c.json, err)
		}
		if got := g.Defaults(); got != c.want {
			t.Errorf("%s: defaults %+v, want %+v", c.json, got, c.want)
		}
	}
	if got := (*GenerationConfig)(nil).Defaults(); got != (SamplingDefaults{TopP: 1}) {
		t.Errorf("no generation config: %+v", got)
	}
}

func TestGenerationConfigErrors(t *testing.T) {
	for js, field := range map[string]string{
		`{"eos_token_id": "</s>"}`:     "eos_token_id",
		`{"temperature": -1}`:          "temperature",
		`{"top_p": 0}`:                 "top_p",
		`{"top_p": 1.5}`:               "top_p",
		`{"max_new_tokens": -3}`:       "max_new_tokens",
		`{"do_sample": "yes"}`:         "do_sample",
		`[1, 2]`:                       "generation_config.json",
		`{"eos_token_id": [1, "two"]}`: "eos_token_id",
	} {
		_, err := ParseGenerationConfig([]byte(js), "dir/generation_config.json")
		if !errors.Is(err, ErrBadConfig) || !strings.Contains(err.Error(), field) || !strings.Contains(err.Error(), "dir/generation_config.json") {
			t.Errorf("%s: error %v, want ErrBadConfig naming %q and the file", js, err, field)
		}
	}
}

// LoadConfigDir merges generation_config.json's eos list into config.json's.
func TestLoadConfigDir(t *testing.T) {
	dir := t.TempDir()
	cfg, err := os.ReadFile(filepath.Join("testdata", "mistral-7b-v0.3.json"))
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, s string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("config.json", string(cfg))
	c, err := LoadConfigDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if c.Generation != nil || !reflect.DeepEqual(c.EOSTokenIDs, []int{2}) {
		t.Fatalf("without generation_config.json: generation %+v, eos %v", c.Generation, c.EOSTokenIDs)
	}
	write("generation_config.json", `{"eos_token_id": [2, 32000, 32001], "do_sample": true, "temperature": 0.7}`)
	if c, err = LoadConfigDir(dir); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.EOSTokenIDs, []int{2, 32000, 32001}) {
		t.Errorf("eos %v, want [2 32000 32001]", c.EOSTokenIDs)
	}
	if d := c.Generation.Defaults(); d.Temperature != 0.7 {
		t.Errorf("defaults %+v, want temperature 0.7", d)
	}
	write("generation_config.json", `{"eos_token_id": 32005}`)
	if c, err = LoadConfigDir(dir); err != nil || !reflect.DeepEqual(c.EOSTokenIDs, []int{2, 32005}) {
		t.Errorf("eos int: %v, %v", c.EOSTokenIDs, err)
	}
	write("generation_config.json", `{"top_p": 7}`)
	if _, err := LoadConfigDir(dir); !errors.Is(err, ErrBadConfig) {
		t.Errorf("bad generation_config.json: %v, want ErrBadConfig", err)
	}
}
