package formats

import (
	"os"
	"strings"
	"testing"
)

// The chat constants are the strings scripts/chat_template.jinja emits; the full check that
// renders the template with jinja2 is scripts/corpus/check_chat_template.py.
func TestChatConstantsMatchTemplate(t *testing.T) {
	b, err := os.ReadFile("../../scripts/chat_template.jinja")
	if err != nil {
		t.Fatal(err)
	}
	tmpl := string(b)
	for _, want := range []string{
		`{{- bos_token -}}`,
		`'<|' ~ message['role'] ~ '|>\n' ~ message['content'] ~ '<|end|>\n'`,
		`{{- '<|assistant|>\n' -}}`,
	} {
		if !strings.Contains(tmpl, want) {
			t.Errorf("template lacks %s", want)
		}
	}
	if ChatSystemPrefix != "<|system|>\n" || ChatUserPrefix != "<|user|>\n" || ChatAssistantPrefix != ChatEndOfTurn+"\n<|assistant|>\n" {
		t.Errorf("constants %q %q do not follow the template's turn layout", ChatUserPrefix, ChatAssistantPrefix)
	}
	for _, role := range []string{"system", "user", "assistant"} {
		if !strings.Contains(tmpl, "'"+role+"'") || !strings.Contains(strings.Join(ChatSpecialTokens, " "), "<|"+role+"|>") {
			t.Errorf("role %s: missing from the template's roles or from ChatSpecialTokens", role)
		}
	}
}
