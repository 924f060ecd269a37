package formats

// The chat format of the next default model. models/chat_template.jinja is the Hugging Face
// chat template (tokenizer_config.json's "chat_template") that renders it; the constants here
// are what that template emits around one user message, so that the chat family trains on
// exactly the text that rendering produces (chat_test.go checks them against the template
// file). BOS is not part of these strings: the template starts with {{ bos_token }}, and the
// tokenizer's post-processor adds BOS when a training sample is encoded.
//
// A conversation renders as
//
//	<|system|>\n{system}<|end|>\n          (optional)
//	<|user|>\n{message}<|end|>\n
//	<|assistant|>\n{reply}<|end|>\n
//	...
//	<|assistant|>\n                        (add_generation_prompt)
//
// <|system|>, <|user|>, <|assistant|> and <|end|> are meant to be added tokens of the new
// tokenizer, and <|end|> an end-of-generation id next to <|end_of_text|>.
const (
	ChatSystemPrefix    = "<|system|>\n"
	ChatUserPrefix      = "<|user|>\n"
	ChatAssistantPrefix = "<|end|>\n<|assistant|>\n"
	ChatEndOfTurn       = "<|end|>"
)

// chatSystems are the system messages of chat samples ("": none, half of the samples).
var chatSystems = []string{"", "", "You are a helpful assistant.",
	"Answer the user's questions about the documents they share. Be brief."}

// ChatSpecialTokens are the tokens the chat format needs in the vocabulary.
var ChatSpecialTokens = []string{"<|system|>", "<|user|>", "<|assistant|>", "<|end|>"}
