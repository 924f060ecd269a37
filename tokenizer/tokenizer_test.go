package tokenizer

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

type encodeCase struct {
	text string
	want []string // token strings, mapped to ids with the fixture's vocabulary
}

func checkEncode(t *testing.T, tok *Tokenizer, addSpecial bool, cases []encodeCase) {
	t.Helper()
	for _, c := range cases {
		if got, want := tok.Encode(c.text, addSpecial), ids(t, tok, c.want...); !slices.Equal(got, want) {
			t.Errorf("Encode(%q, %v) = %v, want %v %q", c.text, addSpecial, got, want, c.want)
		}
	}
}

func TestAddedTokensByteLevel(t *testing.T) {
	tok := loadFixture(t, "gpt2_tiny", nil)
	checkEncode(t, tok, false, []encodeCase{
		{"a<|endoftext|>b", []string{"a", "<|endoftext|>", "b"}},
		// Longest match: "<|end" is also a token.
		{"<|endoftext|>", []string{"<|endoftext|>"}},
		{"<|end|>", []string{"<|end", "|", ">"}},
		// Inside a word, and twice in a row.
		{"ab<|endoftext|><|endoftext|>cd", []string{"a", "b", "<|endoftext|>", "<|endoftext|>", "c", "d"}},
		// The text after a special token is pre-tokenized on its own.
		{"<|endoftext|> hello", []string{"<|endoftext|>", "Ġ", "he", "ll", "o"}},
	})
}

func TestAddedTokensSentencePiece(t *testing.T) {
	tok := loadFixture(t, "sp_tiny", nil)
	checkEncode(t, tok, false, []encodeCase{
		// The normalizer prepends "▁" to every piece between added tokens.
		{"a<s>b", []string{"▁a", "<s>", "▁", "b"}},
		// "xyz" is a normalized added token: it is matched in the normalized
		// text, as its normalized form "▁xyz".
		{"a xyz", []string{"▁a", "xyz"}},
		{"axyz", []string{"▁a", "x", "y", "<0x7A>"}},
	})
	checkEncode(t, tok, true, []encodeCase{
		{"ab", []string{"<s>", "▁ab"}},
		{"", []string{"<s>"}},
	})
	if got := tok.Decode(tok.Encode("a<s>b", false), false); got != "a<s> b" {
		t.Errorf("Decode = %q, want %q", got, "a<s> b")
	}
}

func TestAddedTokenFlagsAndMetaspace(t *testing.T) {
	tok := loadFixture(t, "metaspace_tiny", nil)
	checkEncode(t, tok, false, []encodeCase{
		{"ab ab", []string{"▁ab", "▁ab"}},
		// prepend_scheme "first": only the piece at the start of the input
		// gets a "▁".
		{"<s>ab", []string{"<s>", "ab"}},
		{"ab<s>ab", []string{"▁ab", "<s>", "ab"}},
		// lstrip swallows the space before, rstrip the space after.
		{"a <L>b", []string{"▁a", "<L>", "b"}},
		{"a<R> b", []string{"▁a", "<R>", "b"}},
		{"a <R> b", []string{"▁a", "▁", "<R>", "b"}},
		{"a  <LR>  b", []string{"▁a", "<LR>", "b"}},
		// single_word: not matched when glued to a word character.
		{"a<W>b", []string{"▁a", "<0x3C>", "<0x57>", "<0x3E>", "b"}},
		{"a <W> b", []string{"▁a", "▁", "<W>", "▁", "b"}},
		{"(<W>)", []string{"▁", "<0x28>", "<W>", "<0x29>"}},
	})
	if got := tok.Decode(ids(t, tok, "▁ab", "▁ab"), false); got != "ab ab" {
		t.Errorf("Metaspace decode = %q, want %q", got, "ab ab")
	}
}

func TestPatternsInFixture(t *testing.T) {
	setPattern := func(p string) func(m map[string]any) {
		return func(m map[string]any) {
			split := m["pre_tokenizer"].(map[string]any)["pretokenizers"].([]any)[0].(map[string]any)
			split["pattern"] = map[string]any{"Regex": p}
		}
	}
	qwen := loadFixture(t, "llama3_tiny", setPattern(qwen2Pattern))
	checkEncode(t, qwen, false, []encodeCase{
		{"12345", []string{"1", "2", "3", "4", "5"}},
	})
	// A pattern that is not one of the known ones runs on Go's regexp.
	other := loadFixture(t, "llama3_tiny", setPattern(`\p{L}+|\p{N}+|[^\p{L}\p{N}]+`))
	checkEncode(t, other, false, []encodeCase{
		{"ab 12", []string{"ab", "Ġ", "12"}},
		{" abc", []string{"Ġ", "ab", "c"}},
	})
}

func TestTemplateAndAccessors(t *testing.T) {
	tok := loadFixture(t, "llama3_tiny", nil)
	checkEncode(t, tok, true, []encodeCase{
		{"ab", []string{"<|begin_of_text|>", "ab"}},
		{"", []string{"<|begin_of_text|>"}},
	})
	bos, _ := tok.TokenID("<|begin_of_text|>")
	tool, ok := tok.TokenID("[tool]")
	if !ok {
		t.Fatal("no [tool]")
	}
	if !tok.IsSpecial(bos) || tok.IsSpecial(tool) || tok.IsSpecial(97) || tok.IsSpecial(-1) || tok.IsSpecial(1<<20) {
		t.Error("IsSpecial wrong")
	}
	if got := tok.Token(bos); got != "<|begin_of_text|>" {
		t.Errorf("Token(%d) = %q", bos, got)
	}
	if tok.Token(-1) != "" || tok.Token(tok.VocabSize()) != "" {
		t.Error("Token of an unknown id is not empty")
	}
	// 256 byte tokens + 6 merges + 4 added tokens.
	if got := tok.VocabSize(); got != 266 {
		t.Errorf("VocabSize = %d, want 266", got)
	}
	seq := []int{bos, 97, tool}
	if got := tok.Decode(seq, true); got != "a[tool]" {
		t.Errorf("Decode(skip special) = %q", got)
	}
	if got := tok.Decode(seq, false); got != "<|begin_of_text|>a[tool]" {
		t.Errorf("Decode = %q", got)
	}
	// Unknown ids are ignored.
	if got := tok.Decode([]int{-5, 97, 1 << 30}, false); got != "a" {
		t.Errorf("Decode with unknown ids = %q", got)
	}
}

func TestParseErrors(t *testing.T) {
	bpe := func(extra string) string {
		return `{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]` + extra + `}}`
	}
	cases := []struct{ json, want string }{
		{`not json`, "invalid JSON"},
		{`{"model": 5}`, "invalid JSON"},
		{`{}`, "no model"},
		{`{"version": "2.0", "model": {}}`, "version"},
		{`{"model": {"type": "WordPiece", "vocab": {}}}`, `model type "WordPiece" is not supported`},
		{`{"model": {"type": "Unigram", "vocab": [["a", 0.0]]}}`, `model type "Unigram" is not supported`},
		{`{"model": {"vocab": [["a", 0.0]]}}`, "only BPE"},
		{`{"model": {"type": "BPE", "merges": []}}`, "missing vocab"},
		{`{"model": {"type": "BPE", "vocab": {}}}`, "missing merges"},
		{`{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}}`, `"b" is not in model.vocab`},
		{`{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": [["a", "b"]]}}`, `merged token "ab" is not in model.vocab`},
		{`{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b c"]}}`, "want two tokens"},
		{`{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [5]}}`, "model.merges"},
		{`{"model": {"type": "BPE", "vocab": {"a": -1}, "merges": []}}`, "invalid id"},
		{`{"model": {"type": "BPE", "vocab": {"a": 100000000}, "merges": []}}`, "far beyond"},
		{`{"model": {"type": "BPE", "vocab": {"a": 1.5}, "merges": []}}`, "model.vocab"},
		{`{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [["a"]]}}`, "want two tokens"},
		{`{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a  b"]}}`, "one space"},
		{bpe(`, "dropout": 0.1`), "dropout"},
		{bpe(`, "unk_token": "<unk>"`), `unk_token "<unk>" is not in model.vocab`},
		{`{"added_tokens": [{"content": "x"}], ` + bpe("")[1:], "needs \"id\""},
		{`{"added_tokens": [{"id": -3, "content": "x"}], ` + bpe("")[1:], "negative id"},
		{`{"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "a(?=b)"}, "behavior": "Isolated", "invert": false}, ` + bpe("")[1:], `regex "a(?=b)" is not supported`},
		{`{"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "a*"}, "behavior": "Isolated", "invert": false}, ` + bpe("")[1:], "empty string"},
		{`{"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "a"}, "behavior": "Sideways"}, ` + bpe("")[1:], "unknown behavior"},
		{`{"pre_tokenizer": {"type": "Whitespace"}, ` + bpe("")[1:], `pre-tokenizer type "Whitespace" is not supported`},
		{`{"pre_tokenizer": {"type": "Metaspace", "replacement": "ab"}, ` + bpe("")[1:], "single character"},
		{`{"normalizer": {"type": "BertNormalizer"}, ` + bpe("")[1:], `normalizer type "BertNormalizer" is not supported`},
		{`{"normalizer": {"type": "Sequence", "normalizers": [{"type": "Replace", "pattern": {"String": ""}, "content": "x"}]}, ` + bpe("")[1:], "empty String pattern"},
		{`{"decoder": {"type": "WordPiece"}, ` + bpe("")[1:], `decoder type "WordPiece" is not supported`},
		{`{"decoder": {"type": "Strip", "content": " ", "start": -1}, ` + bpe("")[1:], "negative"},
		{`{"post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}}], "special_tokens": {}}, ` + bpe("")[1:], `special token "<s>" is not in special_tokens`},
		{`{"post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}}, "$A"], "special_tokens": {"<s>": {"id": "<s>", "ids": [99]}}}, ` + bpe("")[1:], "id 99 is not in the vocabulary"},
		{`{"post_processor": {"type": "RobertaProcessing", "cls": ["<s>"]}, ` + bpe("")[1:], "must be [token, id]"},
	}
	for _, c := range cases {
		_, err := Parse([]byte(c.json), "bad.json")
		if err == nil {
			t.Errorf("%s: no error, want one containing %q", c.json, c.want)
			continue
		}
		if !strings.Contains(err.Error(), "bad.json") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s:\n error %q\n want it to name bad.json and contain %q", c.json, err, c.want)
		}
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.json")); err == nil || !strings.Contains(err.Error(), "missing.json") {
		t.Errorf("Load of a missing file: %v", err)
	}
}

// TestLegacyForms checks the older spellings HF still reads: merges as "a
// b" strings (with a "#version" line), no model type, string templates,
// Metaspace's add_prefix_space.
func TestLegacyForms(t *testing.T) {
	js := `{
	  "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "add_prefix_space": true},
	  "post_processor": {"type": "TemplateProcessing", "single": ["<s>", "$A", "</s>:0"],
	    "special_tokens": {"<s>": {"id": "<s>", "ids": [0]}, "</s>": {"id": "</s>", "ids": [1]}}},
	  "decoder": {"type": "Metaspace", "replacement": "▁", "add_prefix_space": true},
	  "model": {"vocab": {"<s>": 0, "</s>": 1, "▁": 2, "a": 3, "b": 4, "▁a": 5, "▁ab": 6},
	    "merges": ["#version: 0.2", "▁ a", "▁a b"]}}`
	tok, err := Parse([]byte(js), "legacy.json")
	if err != nil {
		t.Fatal(err)
	}
	if got := tok.Encode("ab a", true); !slices.Equal(got, []int{0, 6, 5, 1}) {
		t.Errorf("Encode = %v, want [0 6 5 1]", got)
	}
	if got := tok.Decode([]int{6, 5}, false); got != "ab a" {
		t.Errorf("Decode = %q", got)
	}
}

// TestNoDecoder: without a decoder HF joins the tokens with spaces.
func TestNoDecoder(t *testing.T) {
	tok, err := Parse([]byte(`{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": []}}`), "plain.json")
	if err != nil {
		t.Fatal(err)
	}
	if got := tok.Decode([]int{0, 1, 0}, false); got != "a b a" {
		t.Errorf("Decode = %q", got)
	}
	if got := tok.Encode("ab", false); !slices.Equal(got, []int{0, 1}) {
		t.Errorf("Encode = %v", got)
	}
}

func TestMetaspaceOptions(t *testing.T) {
	set := func(scheme string, split bool) func(m map[string]any) {
		return func(m map[string]any) {
			pt := m["pre_tokenizer"].(map[string]any)
			pt["prepend_scheme"] = scheme
			pt["split"] = split
			dec := m["decoder"].(map[string]any)["decoders"].([]any)[1].(map[string]any)
			dec["prepend_scheme"] = scheme
		}
	}
	always := loadFixture(t, "metaspace_tiny", set("always", true))
	checkEncode(t, always, false, []encodeCase{{"<s>ab", []string{"<s>", "▁ab"}}})
	never := loadFixture(t, "metaspace_tiny", set("never", true))
	checkEncode(t, never, false, []encodeCase{{"ab ab", []string{"ab", "▁ab"}}})
	if got := never.Decode(ids(t, never, "▁ab"), false); got != " ab" {
		t.Errorf("never: Decode = %q, want %q", got, " ab")
	}
	// Split before every "▁" or not: "▁ ▁" can only merge without the split.
	split := loadFixture(t, "metaspace_tiny", set("first", true))
	checkEncode(t, split, false, []encodeCase{{"a  b", []string{"▁a", "▁", "▁", "b"}}})
	whole := loadFixture(t, "metaspace_tiny", set("first", false))
	checkEncode(t, whole, false, []encodeCase{{"a  b", []string{"▁a", "▁▁", "b"}}})
}

func TestSplitBehaviors(t *testing.T) {
	const text = "a--b-"
	spans := literalPattern{"-"}.findMatches(text, nil)
	cases := map[splitBehavior][]string{
		behaviorRemoved:            {"a", "b"},
		behaviorIsolated:           {"a", "-", "-", "b", "-"},
		behaviorMergedWithPrevious: {"a-", "-", "b-"},
		behaviorMergedWithNext:     {"a", "-", "-b", "-"},
		behaviorContiguous:         {"a", "--", "b", "-"},
	}
	for b, want := range cases {
		got := pieces(text, applyBehavior(slices.Clone(spans), b))
		if !slices.Equal(got, want) {
			t.Errorf("behavior %d: got %q, want %q", b, got, want)
		}
	}
}
