package tokenizer

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// dirWith makes a checkpoint folder with sp_tiny's tokenizer.json and the given
// tokenizer_config.json ("" for none).
func dirWith(t *testing.T, config string) string {
	t.Helper()
	dir := t.TempDir()
	data, err := os.ReadFile(filepath.Join("testdata", "sp_tiny.tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tokenizer.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if config != "" {
		if err := os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), []byte(config), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestTokenizerConfigBOSEOS(t *testing.T) {
	plain, err := LoadDir(dirWith(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	body := plain.Encode("hello world", false)
	bos, _ := plain.TokenID("<s>")
	eos, _ := plain.TokenID("</s>")
	if got := plain.Encode("hello world", true); !slices.Equal(got, append([]int{bos}, body...)) {
		t.Fatalf("without tokenizer_config.json: %v, want BOS + %v (the post-processor's template)", got, body)
	}
	cases := []struct {
		config string
		want   []int
	}{
		{`{"add_bos_token": false}`, body},
		{`{"add_bos_token": true, "add_eos_token": true, "bos_token": "<s>", "eos_token": {"content": "</s>", "special": true}}`,
			append(append([]int{bos}, body...), eos)},
		{`{"add_eos_token": true, "eos_token": "</s>"}`, append(append([]int{bos}, body...), eos)},
		{`{"add_bos_token": false, "add_eos_token": true, "eos_token": "</s>"}`, append(slices.Clone(body), eos)},
		{`{"chat_template": "{{ messages }}"}`, append([]int{bos}, body...)},
	}
	for _, c := range cases {
		tok, err := LoadDir(dirWith(t, c.config))
		if err != nil {
			t.Fatalf("%s: %v", c.config, err)
		}
		if got := tok.Encode("hello world", true); !slices.Equal(got, c.want) {
			t.Errorf("%s: %v, want %v", c.config, got, c.want)
		}
		if got := tok.Encode("hello world", false); !slices.Equal(got, body) {
			t.Errorf("%s: without specials %v, want %v", c.config, got, body)
		}
	}
}

func TestTokenizerConfigErrors(t *testing.T) {
	for config, says := range map[string]string{
		`{"add_bos_token": true}`:                              "bos_token",
		`{"add_eos_token": true, "eos_token": "<|nope|>"}`:     `"<|nope|>" is not in the vocabulary`,
		`{"add_bos_token": "yes"}`:                             "tokenizer_config.json",
		`{"add_eos_token": true, "eos_token": {"content": 3}}`: "eos_token",
	} {
		_, err := LoadDir(dirWith(t, config))
		if err == nil || !strings.Contains(err.Error(), says) {
			t.Errorf("%s: error %v, want one naming %q", config, err, says)
		}
	}
}
