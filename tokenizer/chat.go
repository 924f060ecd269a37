package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nikolalohinski/gonja/v2"
	"github.com/nikolalohinski/gonja/v2/config"
	"github.com/nikolalohinski/gonja/v2/exec"
	"github.com/nikolalohinski/gonja/v2/loaders"
)

// ChatMessage is one turn of a conversation, as the OpenAI API and Hugging Face chat
// templates see it.
type ChatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// ChatTemplate renders a conversation into prompt text the way Hugging Face's
// apply_chat_template does (Jinja with trim_blocks and lstrip_blocks, the variables
// messages, add_generation_prompt, bos_token, eos_token and the functions
// raise_exception and strftime_now). The text already holds the special tokens the
// template writes (BOS included), so it is encoded without adding special tokens.
type ChatTemplate struct {
	tmpl     *exec.Template
	bos, eos string
	// Fallback is true when the checkpoint has no chat_template and FallbackChatTemplate
	// is used instead.
	Fallback bool
}

// FallbackChatTemplate is what a checkpoint without a chat_template (lukv's embedded
// default model is a base model) is given: one "role: content" line per message, then
// "assistant:" when a reply is asked for. It is a plain-text convention, not something
// the model was trained on.
const FallbackChatTemplate = "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"

// ErrNoChatTemplate is returned (wrapped) by LoadChatTemplate without fallback when
// tokenizer_config.json has no chat_template.
var ErrNoChatTemplate = errors.New("no chat_template")

// errRaised carries a template's raise_exception message.
type errRaised struct{ msg string }

func (e errRaised) Error() string { return "chat template: " + e.msg }

// LoadChatTemplate reads tokenizer_config.json's chat_template, bos_token and eos_token.
// Without a chat_template it returns FallbackChatTemplate when fallback is true, else an
// error wrapping ErrNoChatTemplate.
func LoadChatTemplate(path string, fallback bool) (*ChatTemplate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("chat template: %w", err)
	}
	var cfg struct {
		ChatTemplate json.RawMessage `json:"chat_template"`
		BOS          json.RawMessage `json:"bos_token"`
		EOS          json.RawMessage `json:"eos_token"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		return nil, fmt.Errorf("chat template: %s: %w", path, err)
	}
	bos, err := tokenString(cfg.BOS)
	if err != nil {
		return nil, fmt.Errorf("chat template: %s: bos_token: %w", path, err)
	}
	eos, err := tokenString(cfg.EOS)
	if err != nil {
		return nil, fmt.Errorf("chat template: %s: eos_token: %w", path, err)
	}
	src, err := templateSource(cfg.ChatTemplate)
	if err != nil {
		return nil, fmt.Errorf("chat template: %s: chat_template: %w", path, err)
	}
	if src == "" {
		if !fallback {
			return nil, fmt.Errorf("%w in %s (the model is not a chat model; use /v1/completions)", ErrNoChatTemplate, path)
		}
		t, err := ParseChatTemplate(FallbackChatTemplate, bos, eos)
		if err != nil {
			return nil, err
		}
		t.Fallback = true
		return t, nil
	}
	return ParseChatTemplate(src, bos, eos)
}

// tokenString reads a special token written either as a string or as an added-token
// object {"content": ...}; absent or null is "".
func tokenString(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var obj struct {
		Content string `json:"content"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return "", fmt.Errorf("want a string or {\"content\": ...}, got %s", raw)
	}
	return obj.Content, nil
}

// templateSource reads chat_template: a string, or a list of named templates of which
// "default" is used (as transformers does without a template name).
func templateSource(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var named []struct {
		Name     string `json:"name"`
		Template string `json:"template"`
	}
	if err := json.Unmarshal(raw, &named); err != nil {
		return "", fmt.Errorf("want a string or a list of {name, template}")
	}
	for _, n := range named {
		if n.Name == "default" {
			return n.Template, nil
		}
	}
	return "", fmt.Errorf("a list of named templates without one named \"default\"")
}

// ParseChatTemplate compiles a Jinja chat template.
func ParseChatTemplate(source, bos, eos string) (*ChatTemplate, error) {
	// Hugging Face renders with trim_blocks and lstrip_blocks on.
	cfg := config.New()
	cfg.TrimBlocks = true
	cfg.LeftStripBlocks = true
	const id = "chat_template"
	loader, err := loaders.NewFileSystemLoader("")
	if err != nil {
		return nil, fmt.Errorf("chat template: %w", err)
	}
	shifted, err := loaders.NewShiftedLoader(id, strings.NewReader(source), loader)
	if err != nil {
		return nil, fmt.Errorf("chat template: %w", err)
	}
	t, err := exec.NewTemplate(id, cfg, shifted, gonja.DefaultEnvironment)
	if err != nil {
		return nil, fmt.Errorf("chat template: parse: %w", err)
	}
	return &ChatTemplate{tmpl: t, bos: bos, eos: eos}, nil
}

// Render renders messages; with addGenerationPrompt the text ends where the assistant's
// reply begins. A template's raise_exception (e.g. roles that do not alternate) comes
// back as an error with its message.
func (c *ChatTemplate) Render(messages []ChatMessage, addGenerationPrompt bool) (string, error) {
	if len(messages) == 0 {
		return "", errors.New("chat template: no messages")
	}
	msgs := make([]map[string]any, len(messages))
	for i, m := range messages {
		msgs[i] = map[string]any{"role": m.Role, "content": m.Content}
	}
	var raised *errRaised
	ctx := exec.NewContext(map[string]any{
		"messages":              msgs,
		"add_generation_prompt": addGenerationPrompt,
		"bos_token":             c.bos,
		"eos_token":             c.eos,
		"raise_exception": func(msg string) (string, error) {
			raised = &errRaised{msg}
			return "", *raised
		},
		"strftime_now": func(format string) string { return strftime(time.Now(), format) },
	})
	out, err := c.tmpl.ExecuteToString(ctx)
	if raised != nil {
		return "", *raised
	}
	if err != nil {
		return "", fmt.Errorf("chat template: render: %w", err)
	}
	return out, nil
}

// strftime formats t with the C directives chat templates use (Llama 3.x's date line).
func strftime(t time.Time, format string) string {
	r := strings.NewReplacer("%d", "02", "%b", "Jan", "%B", "January", "%Y", "2006", "%m", "01", "%y", "06", "%H", "15", "%M", "04", "%S", "05", "%A", "Monday", "%a", "Mon", "%%", "%")
	return t.Format(r.Replace(format))
}
