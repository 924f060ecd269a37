package tokenizer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/lukv/lukv/loader"
)

// GGUF files store the tokenizer as lists (tokenizer.ggml.*: tokens, token types,
// merges) and name the pre-tokenizer instead of spelling it out. FromGGUF writes the
// tokenizer.json those lists stand for and parses it, so a GGUF tokenizer runs through
// exactly the code a tokenizer.json does; GGUFVocabFromJSON goes the other way for the
// converter.
//
// Byte-level BPE ("gpt2") is supported, with the pre-tokenizers below, and SentencePiece
// BPE vocabularies ("llama": Llama 2, Mistral; sentencepiece.go), which store scores
// instead of merges: their merges are derived from the scores as transformers' converter
// does, and the tokenizer is Llama 2's tokenizer.json (byte fallback, "▁" for spaces).

// ggufPreTokenizer is what a tokenizer.ggml.pre name stands for.
type ggufPreTokenizer struct {
	pattern      string // the Split regex before ByteLevel; "": ByteLevel's own (GPT-2's)
	nfc          bool   // an NFC normalizer first
	ignoreMerges bool   // whole-word vocabulary hits skip the merges (Llama 3)
	addBOS       bool   // llama.cpp's default when tokenizer.ggml.add_bos_token is absent
}

// ggufPreTokenizers are the tokenizer.ggml.pre names lukv knows, as llama.cpp's converter
// names these pre-tokenizers.
var ggufPreTokenizers = map[string]ggufPreTokenizer{
	"llama-bpe": {pattern: llama3Pattern, ignoreMerges: true, addBOS: true}, // Llama 3
	"qwen2":     {pattern: qwen2Pattern, nfc: true},
	"gpt-2":     {},
}

// LoadGGUF reads the tokenizer stored in a GGUF file.
func LoadGGUF(path string) (*Tokenizer, error) {
	m, err := loader.OpenGGUFModel(path)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	v, err := m.Vocab()
	if err != nil {
		return nil, err
	}
	return FromGGUF(v, path)
}

// FromGGUF builds the tokenizer of a GGUF vocabulary; path is for messages.
func FromGGUF(v *loader.GGUFVocab, path string) (*Tokenizer, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("tokenizer %s: %s", path, fmt.Sprintf(format, args...))
	}
	var pre ggufPreTokenizer
	switch v.Model {
	case "gpt2":
		var ok bool
		if pre, ok = ggufPreTokenizers[v.Pre]; !ok {
			return nil, bad("tokenizer.ggml.pre %q is not supported (supported: llama-bpe, qwen2, gpt-2)", v.Pre)
		}
	case "llama":
		pre.addBOS = true // llama.cpp's default for SentencePiece vocabularies
	default:
		return nil, bad("tokenizer.ggml.model %q is not supported (lukv reads byte-level BPE, \"gpt2\", and SentencePiece BPE, \"llama\")", v.Model)
	}
	if len(v.Types) != 0 && len(v.Types) != len(v.Tokens) {
		return nil, bad("%d token types for %d tokens", len(v.Types), len(v.Tokens))
	}
	type added struct {
		ID         int    `json:"id"`
		Content    string `json:"content"`
		Special    bool   `json:"special"`
		Normalized bool   `json:"normalized"`
	}
	var addedTokens []added
	vocab := make(map[string]int, len(v.Tokens))
	for id, tok := range v.Tokens {
		if _, dup := vocab[tok]; dup {
			return nil, bad("tokenizer.ggml.tokens: %q appears twice", tok)
		}
		vocab[tok] = id
		if len(v.Types) > 0 {
			switch v.Types[id] {
			case loader.GGUFTokenControl:
				addedTokens = append(addedTokens, added{ID: id, Content: tok, Special: true})
			case loader.GGUFTokenUserDefined:
				addedTokens = append(addedTokens, added{ID: id, Content: tok})
			}
		}
	}
	tok := map[string]any{"version": "1.0", "added_tokens": addedTokens}
	if v.Model == "llama" {
		if err := sentencePieceJSON(v, vocab, tok); err != nil {
			return nil, bad("%v", err)
		}
	} else if err := byteLevelJSON(v, pre, vocab, tok); err != nil {
		return nil, bad("%v", err)
	}
	addBOS, addEOS := pre.addBOS, false
	if v.AddBOS != nil {
		addBOS = *v.AddBOS
	}
	if v.AddEOS != nil {
		addEOS = *v.AddEOS
	}
	var single []any
	specials := map[string]any{}
	special := func(key string, id int) error {
		if id < 0 || id >= len(v.Tokens) {
			return bad("tokenizer.ggml.add_%s_token is true but tokenizer.ggml.%s_token_id is absent or out of range", key, key)
		}
		name := v.Tokens[id]
		single = append(single, map[string]any{"SpecialToken": map[string]any{"id": name, "type_id": 0}})
		specials[name] = map[string]any{"id": name, "ids": []int{id}, "tokens": []string{name}}
		return nil
	}
	if addBOS {
		if err := special("bos", v.BOS); err != nil {
			return nil, err
		}
	}
	single = append(single, map[string]any{"Sequence": map[string]any{"id": "A", "type_id": 0}})
	if addEOS {
		eos := -1
		if len(v.EOS) > 0 {
			eos = v.EOS[0]
		}
		if err := special("eos", eos); err != nil {
			return nil, err
		}
	}
	if addBOS || addEOS {
		tok["post_processor"] = map[string]any{"type": "TemplateProcessing", "single": single, "special_tokens": specials}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(tok); err != nil {
		return nil, bad("%v", err)
	}
	return Parse(buf.Bytes(), path)
}

// byteLevelJSON sets tok's normalizer, pre-tokenizer, model and decoder for a byte-level
// BPE vocabulary with pre-tokenizer pre.
func byteLevelJSON(v *loader.GGUFVocab, pre ggufPreTokenizer, vocab map[string]int, tok map[string]any) error {
	merges := make([][2]string, len(v.Merges))
	for k, m := range v.Merges {
		a, b, ok := strings.Cut(m, " ")
		if !ok || strings.Contains(b, " ") {
			return fmt.Errorf("tokenizer.ggml.merges[%d] %q: want two tokens separated by one space", k, m)
		}
		merges[k] = [2]string{a, b}
	}
	byteLevel := map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": pre.pattern == ""}
	var preTok any = byteLevel
	if pre.pattern != "" {
		preTok = map[string]any{"type": "Sequence", "pretokenizers": []any{
			map[string]any{"type": "Split", "pattern": map[string]string{"Regex": pre.pattern}, "behavior": "Isolated", "invert": false},
			byteLevel,
		}}
	}
	var normalizer any
	if pre.nfc {
		normalizer = map[string]string{"type": "NFC"}
	}
	tok["normalizer"] = normalizer
	tok["pre_tokenizer"] = preTok
	tok["model"] = map[string]any{"type": "BPE", "vocab": vocab, "merges": merges, "ignore_merges": pre.ignoreMerges,
		"byte_fallback": false, "fuse_unk": false}
	tok["decoder"] = map[string]any{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}
	return nil
}

// GGUFVocabFromJSON turns a byte-level BPE tokenizer.json into the lists a GGUF file
// stores, naming its pre-tokenizer as llama.cpp does; an unnamed pre-tokenizer is an
// error. path is for messages.
func GGUFVocabFromJSON(data []byte, path string) (*loader.GGUFVocab, error) {
	t, err := Parse(data, path)
	if err != nil {
		return nil, err
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("tokenizer %s: cannot store in GGUF: %s", path, fmt.Sprintf(format, args...))
	}
	var jt struct {
		AddedTokens  []jsonAddedToken `json:"added_tokens"`
		Normalizer   json.RawMessage  `json:"normalizer"`
		PreTokenizer json.RawMessage  `json:"pre_tokenizer"`
		Model        struct {
			Merges json.RawMessage `json:"merges"`
		} `json:"model"`
		Decoder json.RawMessage `json:"decoder"`
	}
	if err := json.Unmarshal(data, &jt); err != nil {
		return nil, bad("%v", err)
	}
	if t.model.byteFallback || t.model.unkID >= 0 || t.model.prefix != "" || t.model.suffix != "" {
		return nil, bad("not a byte-level BPE model (byte fallback, unk token or subword affixes)")
	}
	name, err := preTokenizerName(t, jt.Normalizer, jt.PreTokenizer, jt.Decoder)
	if err != nil {
		return nil, bad("%v", err)
	}
	v := &loader.GGUFVocab{Model: "gpt2", Pre: name, BOS: -1}
	for id, tok := range t.idToToken {
		if !t.known[id] {
			return nil, bad("token id %d is unused (GGUF needs ids 0..%d)", id, len(t.idToToken)-1)
		}
		v.Tokens = append(v.Tokens, tok)
		v.Types = append(v.Types, loader.GGUFTokenNormal)
	}
	for _, a := range jt.AddedTokens {
		if a.ID == nil || a.Content == nil {
			continue // Parse has refused these already
		}
		id := t.addedIDs[*a.Content]
		v.Types[id] = loader.GGUFTokenUserDefined
		if a.Special {
			v.Types[id] = loader.GGUFTokenControl
		}
	}
	merges, err := (&parser{path: path}).merges(jt.Model.Merges)
	if err != nil {
		return nil, err
	}
	for _, m := range merges {
		if strings.Contains(m[0], " ") || strings.Contains(m[1], " ") {
			return nil, bad("merge %q + %q holds a space, which GGUF's \"left right\" merges cannot", m[0], m[1])
		}
		v.Merges = append(v.Merges, m[0]+" "+m[1])
	}
	addBOS, addEOS := false, false
	if tm := t.template; tm != nil {
		if len(tm.prefix) > 1 || len(tm.suffix) > 1 {
			return nil, bad("the post-processor adds %d tokens in front and %d after; GGUF holds one BOS and one EOS", len(tm.prefix), len(tm.suffix))
		}
		if addBOS = len(tm.prefix) == 1; addBOS {
			v.BOS = tm.prefix[0]
		}
		if addEOS = len(tm.suffix) == 1; addEOS {
			v.EOS = []int{tm.suffix[0]}
		}
	}
	v.AddBOS, v.AddEOS = &addBOS, &addEOS
	return v, nil
}

// preTokenizerName names a tokenizer's normalizer + pre-tokenizer + decoder as
// ggufPreTokenizers does, or says why it has no name.
func preTokenizerName(t *Tokenizer, normalizer, preTok, decoder json.RawMessage) (string, error) {
	var dec component
	if isNull(decoder) || json.Unmarshal(decoder, &dec) != nil || dec.Type != "ByteLevel" {
		return "", fmt.Errorf("decoder %s is not ByteLevel", decoder)
	}
	var pc component
	if err := json.Unmarshal(preTok, &pc); err != nil {
		return "", fmt.Errorf("pre_tokenizer: %v", err)
	}
	pattern := ""
	switch {
	case pc.Type == "ByteLevel" && (pc.UseRegex == nil || *pc.UseRegex) && !flagSet(pc.AddPrefixSpace):
	case pc.Type == "Sequence" && len(pc.Pretokenizers) == 2:
		var split, bl component
		if json.Unmarshal(pc.Pretokenizers[0], &split) != nil || json.Unmarshal(pc.Pretokenizers[1], &bl) != nil ||
			split.Type != "Split" || split.Pattern == nil || split.Pattern.Regex == nil || split.Invert ||
			split.Behavior == nil || *split.Behavior != "Isolated" ||
			bl.Type != "ByteLevel" || flagSet(bl.UseRegex) || flagSet(bl.AddPrefixSpace) {
			return "", fmt.Errorf("pre_tokenizer is not Split(regex, Isolated) then ByteLevel without regex")
		}
		pattern = *split.Pattern.Regex
	default:
		return "", fmt.Errorf("pre_tokenizer of type %q has no GGUF name", pc.Type)
	}
	var nc component
	nfc := !isNull(normalizer) && json.Unmarshal(normalizer, &nc) == nil && nc.Type == "NFC"
	if !isNull(normalizer) && !nfc {
		return "", fmt.Errorf("normalizer %s has no GGUF name", normalizer)
	}
	for name, p := range ggufPreTokenizers {
		if p.pattern == pattern && p.nfc == nfc && p.ignoreMerges == t.model.ignoreMerges {
			return name, nil
		}
	}
	return "", fmt.Errorf("split pattern %q (NFC %v, ignore_merges %v) matches no pre-tokenizer name lukv knows (llama-bpe, qwen2, gpt-2)", pattern, nfc, t.model.ignoreMerges)
}

func flagSet(b *bool) bool { return b != nil && *b }
