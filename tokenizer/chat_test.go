package tokenizer

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const chatDir = "../tests/testdata/chat"

func loadTemplate(t *testing.T, name, bos, eos string) *ChatTemplate {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(chatDir, name+".jinja"))
	if err != nil {
		t.Fatal(err)
	}
	ct, err := ParseChatTemplate(string(src), bos, eos)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return ct
}

func conversations(t *testing.T) map[string][]ChatMessage {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(chatDir, "conversations.json"))
	if err != nil {
		t.Fatal(err)
	}
	var convs map[string][]ChatMessage
	if err := json.Unmarshal(data, &convs); err != nil {
		t.Fatal(err)
	}
	return convs
}

// TestChatTemplateHandChecked renders the architectures' templates on fixed
// conversations and compares with strings written out by hand from the templates.
func TestChatTemplateHandChecked(t *testing.T) {
	convs := conversations(t)
	cases := []struct {
		tmpl, conv string
		gen        bool
		want       string
	}{
		{"llama3", "single", true, "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello, who are you?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
		// | trim binds to message['content'] only, before the concatenation.
		{"llama3", "system", false, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"},
		{"qwen2", "single", true, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello, who are you?<|im_end|>\n<|im_start|>assistant\n"},
		{"qwen2", "system", true, "<|im_start|>system\n  You are terse.  <|im_end|>\n<|im_start|>user\n What is 2+2? <|im_end|>\n<|im_start|>assistant\n"},
		{"mistral", "multi", false, "<s>[INST] Hi [/INST]Hello! How can I help?</s>[INST] Tell me a joke. [/INST]"},
		// trim_blocks/lstrip_blocks and {%- -%}: the indentation and newlines of the
		// template's lines do not reach the output; .strip() and messages[1:] work.
		{"llama31-style", "system", true, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nToday Date: 26 Jul 2024\n\nYou are terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
		{"llama31-style", "multi", false, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nToday Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello! How can I help?<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nTell me a joke.<|eot_id|>"},
	}
	bos := map[string]string{"llama3": "<|begin_of_text|>", "llama31-style": "<|begin_of_text|>", "qwen2": "", "mistral": "<s>"}
	eos := map[string]string{"llama3": "<|eot_id|>", "llama31-style": "<|eot_id|>", "qwen2": "<|im_end|>", "mistral": "</s>"}
	for _, c := range cases {
		ct := loadTemplate(t, c.tmpl, bos[c.tmpl], eos[c.tmpl])
		got, err := ct.Render(convs[c.conv], c.gen)
		if err != nil {
			t.Errorf("%s/%s: %v", c.tmpl, c.conv, err)
			continue
		}
		if got != c.want {
			t.Errorf("%s/%s:\n got %q\nwant %q", c.tmpl, c.conv, got, c.want)
		}
	}
}

func TestChatTemplateRaiseException(t *testing.T) {
	ct := loadTemplate(t, "mistral", "<s>", "</s>")
	_, err := ct.Render(conversations(t)["bad_alternation"], true)
	if err == nil || !strings.Contains(err.Error(), "Conversation roles must alternate") {
		t.Fatalf("got %v, want the template's raise_exception message", err)
	}
	if _, err := ct.Render(nil, true); err == nil {
		t.Fatal("no messages: want an error")
	}
}

// TestChatTemplateGoldens compares with renderings by transformers' apply_chat_template
// (scripts/make_chat_goldens.py writes goldens.json; it runs where transformers is).
func TestChatTemplateGoldens(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(chatDir, "goldens.json"))
	if errors.Is(err, os.ErrNotExist) {
		t.Skip("tests/testdata/chat/goldens.json not made yet (python3 scripts/make_chat_goldens.py)")
	}
	if err != nil {
		t.Fatal(err)
	}
	var goldens struct {
		Templates map[string]struct{ BOS, EOS string } `json:"templates"`
		Cases     []struct {
			Template, Conversation string
			AddGenerationPrompt    bool   `json:"add_generation_prompt"`
			Text                   string `json:"text"`
			Error                  string `json:"error"`
		} `json:"cases"`
	}
	if err := json.Unmarshal(data, &goldens); err != nil {
		t.Fatal(err)
	}
	convs := conversations(t)
	if len(goldens.Cases) == 0 {
		t.Fatal("goldens.json has no cases")
	}
	for _, c := range goldens.Cases {
		tk := goldens.Templates[c.Template]
		got, err := loadTemplate(t, c.Template, tk.BOS, tk.EOS).Render(convs[c.Conversation], c.AddGenerationPrompt)
		switch {
		case c.Error != "":
			if err == nil || !strings.Contains(err.Error(), c.Error) {
				t.Errorf("%s/%s: got %q, %v; want the error %q", c.Template, c.Conversation, got, err, c.Error)
			}
		case err != nil:
			t.Errorf("%s/%s: %v", c.Template, c.Conversation, err)
		case got != c.Text:
			t.Errorf("%s/%s gen=%v:\n got %q\nwant %q", c.Template, c.Conversation, c.AddGenerationPrompt, got, c.Text)
		}
	}
}

// TestChatTemplateFallback: the embedded default model has no chat_template; without
// fallback that is an error naming the field, with it the documented fallback renders.
func TestChatTemplateFallback(t *testing.T) {
	path := "../models/lukv-tiny/tokenizer_config.json"
	if _, err := LoadChatTemplate(path, false); !errors.Is(err, ErrNoChatTemplate) || !strings.Contains(err.Error(), "chat_template") {
		t.Fatalf("got %v, want ErrNoChatTemplate", err)
	}
	ct, err := LoadChatTemplate(path, true)
	if err != nil {
		t.Fatal(err)
	}
	if !ct.Fallback {
		t.Fatal("Fallback not set")
	}
	got, err := ct.Render([]ChatMessage{{"system", "Be brief."}, {"user", "Hi"}}, true)
	if err != nil {
		t.Fatal(err)
	}
	if want := "<|begin_of_text|>system: Be brief.\nuser: Hi\nassistant:"; got != want {
		t.Fatalf("got %q want %q", got, want)
	}
}

func TestLoadChatTemplateConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tokenizer_config.json")
	cfg := `{"bos_token": {"content": "<s>", "lstrip": false}, "eos_token": "</s>",
		"chat_template": [{"name": "tool_use", "template": "x"}, {"name": "default", "template": "{{ bos_token }}{{ messages[0]['content'] }}{{ eos_token }}"}]}`
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	ct, err := LoadChatTemplate(path, false)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ct.Render([]ChatMessage{{"user", "q"}}, false)
	if err != nil || got != "<s>q</s>" {
		t.Fatalf("got %q, %v", got, err)
	}
	if err := os.WriteFile(path, []byte(`{"chat_template": 3}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadChatTemplate(path, false); err == nil || !strings.Contains(err.Error(), "chat_template") {
		t.Fatalf("bad chat_template: got %v", err)
	}
}

// TestChatTemplateConcurrent: one template renders from many goroutines at once (the
// server's handlers share it); run with -race.
func TestChatTemplateConcurrent(t *testing.T) {
	ct := loadTemplate(t, "llama31-style", "<|begin_of_text|>", "<|eot_id|>")
	convs := conversations(t)
	want, err := ct.Render(convs["multi"], true)
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 16)
	for i := 0; i < 16; i++ {
		go func() {
			got, err := ct.Render(convs["multi"], true)
			if err == nil && got != want {
				err = errors.New("concurrent render differs: " + got)
			}
			errs <- err
		}()
	}
	for i := 0; i < 16; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
