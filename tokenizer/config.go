package tokenizer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// The tokenizer.json reader. gotokenizers has no reader for this format, so
// it is written here. Every component type that is not implemented is an
// error naming the file and the component, rather than a tokenizer that
// silently encodes differently from Python.

// jsonTokenizer is the top level of tokenizer.json. Components are kept raw
// and parsed by type. The model is decoded in the same pass (with its
// vocabulary and merges kept raw, as their shape depends on the model
// type): a Llama-3 file is 9 MB, and every extra pass over it costs.
type jsonTokenizer struct {
	Version       *string          `json:"version"`
	AddedTokens   []jsonAddedToken `json:"added_tokens"`
	Normalizer    json.RawMessage  `json:"normalizer"`
	PreTokenizer  json.RawMessage  `json:"pre_tokenizer"`
	Model         *jsonModel       `json:"model"`
	PostProcessor json.RawMessage  `json:"post_processor"`
	Decoder       json.RawMessage  `json:"decoder"`
}

type jsonAddedToken struct {
	ID         *int64  `json:"id"`
	Content    *string `json:"content"`
	SingleWord bool    `json:"single_word"`
	LStrip     bool    `json:"lstrip"`
	RStrip     bool    `json:"rstrip"`
	Normalized *bool   `json:"normalized"`
	Special    bool    `json:"special"`
}

type jsonModel struct {
	Type                    string          `json:"type"`
	Vocab                   json.RawMessage `json:"vocab"`
	Merges                  json.RawMessage `json:"merges"`
	Dropout                 *float64        `json:"dropout"`
	UnkToken                *string         `json:"unk_token"`
	ContinuingSubwordPrefix *string         `json:"continuing_subword_prefix"`
	EndOfWordSuffix         *string         `json:"end_of_word_suffix"`
	FuseUnk                 *bool           `json:"fuse_unk"`
	ByteFallback            *bool           `json:"byte_fallback"`
	IgnoreMerges            *bool           `json:"ignore_merges"`
}

// jsonPattern is a Split/Replace pattern: {"String": "..."} or {"Regex": "..."}.
type jsonPattern struct {
	String *string `json:"String"`
	Regex  *string `json:"Regex"`
}

// component is the common shape of normalizers, pre-tokenizers,
// post-processors and decoders: a "type" and type-specific fields.
type component struct {
	Type string `json:"type"`
	// Sequence members, under the key each kind uses.
	Normalizers   []json.RawMessage `json:"normalizers"`
	Pretokenizers []json.RawMessage `json:"pretokenizers"`
	Processors    []json.RawMessage `json:"processors"`
	Decoders      []json.RawMessage `json:"decoders"`

	Pattern  *jsonPattern `json:"pattern"`
	Content  *string      `json:"content"`
	Prepend  *string      `json:"prepend"`
	Behavior *string      `json:"behavior"`
	Invert   bool         `json:"invert"`

	AddPrefixSpace   *bool   `json:"add_prefix_space"`
	UseRegex         *bool   `json:"use_regex"`
	Replacement      *string `json:"replacement"`
	PrependScheme    *string `json:"prepend_scheme"`
	Split            *bool   `json:"split"`
	IndividualDigits bool    `json:"individual_digits"`
	StripLeft        *bool   `json:"strip_left"`
	StripRight       *bool   `json:"strip_right"`
	Start            *int    `json:"start"`
	Stop             *int    `json:"stop"`

	Single        []json.RawMessage              `json:"single"`
	SpecialTokens map[string]jsonTemplateSpecial `json:"special_tokens"`
	Cls           []json.RawMessage              `json:"cls"`
	Sep           []json.RawMessage              `json:"sep"`
}

type jsonTemplateSpecial struct {
	ID  string  `json:"id"`
	IDs []int64 `json:"ids"`
}

// parser carries the file name into error messages.
type parser struct{ path string }

func (p *parser) errorf(format string, args ...any) error {
	return fmt.Errorf("tokenizer %s: %s", p.path, fmt.Sprintf(format, args...))
}

// isNull reports whether a raw component is absent or JSON null.
func isNull(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || string(t) == "null"
}

func (p *parser) component(raw json.RawMessage, where string) (*component, error) {
	var c component
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, p.errorf("%s: invalid JSON: %v", where, err)
	}
	return &c, nil
}

// Parse builds a Tokenizer from the contents of a tokenizer.json file; path
// is only used in error messages.
func Parse(data []byte, path string) (*Tokenizer, error) {
	p := &parser{path: path}
	var jt jsonTokenizer
	if err := json.Unmarshal(data, &jt); err != nil {
		return nil, p.errorf("invalid JSON: %v", err)
	}
	if jt.Version != nil && *jt.Version != "1.0" {
		return nil, p.errorf("unknown tokenizer.json version %q (want \"1.0\")", *jt.Version)
	}
	if jt.Model == nil {
		return nil, p.errorf("no model")
	}
	model, vocab, err := p.model(jt.Model)
	if err != nil {
		return nil, err
	}
	t := &Tokenizer{model: model, rawAdded: newAddedMatcher(), normAdded: newAddedMatcher()}

	// Added tokens: an added token already in the model vocabulary keeps
	// that id (as in HF); the others take the id the file gives them.
	added := make([]*addedToken, 0, len(jt.AddedTokens))
	maxID := int64(-1)
	for _, id := range vocab {
		maxID = max(maxID, int64(id))
	}
	for k, a := range jt.AddedTokens {
		if a.Content == nil || a.ID == nil {
			return nil, p.errorf("added_tokens[%d]: needs \"id\" and \"content\"", k)
		}
		id := *a.ID
		if vid, ok := vocab[*a.Content]; ok {
			id = int64(vid)
		}
		if id < 0 {
			return nil, p.errorf("added_tokens[%d] (%q): negative id %d", k, *a.Content, id)
		}
		maxID = max(maxID, id)
		normalized := true
		if a.Normalized != nil {
			normalized = *a.Normalized
		}
		added = append(added, &addedToken{
			id: int(id), content: *a.Content, special: a.Special,
			lstrip: a.LStrip, rstrip: a.RStrip, singleWord: a.SingleWord, normalized: normalized,
		})
	}
	// Refuse id spaces far larger than the number of tokens, so that a
	// hostile file cannot make us allocate gigabytes.
	entries := int64(len(vocab) + len(added))
	if maxID >= 4*entries+4096 {
		return nil, p.errorf("token id %d is far beyond the %d tokens defined", maxID, entries)
	}
	n := int(maxID + 1)
	t.idToToken = make([]string, n)
	t.known = make([]bool, n)
	t.special = make([]bool, n)
	t.addedIDs = make(map[string]int, len(added))
	for tok, id := range vocab {
		// Two tokens sharing an id: keep one deterministically.
		if t.known[id] && t.idToToken[id] < tok {
			continue
		}
		t.idToToken[id] = tok
		t.known[id] = true
	}
	specialContent := map[string]bool{}
	for _, a := range added {
		t.idToToken[a.id] = a.content
		t.known[a.id] = true
		t.addedIDs[a.content] = a.id
		if a.special {
			specialContent[a.content] = true
		}
	}
	for id := range t.idToToken {
		t.special[id] = t.known[id] && specialContent[t.idToToken[id]]
	}

	if !isNull(jt.Normalizer) {
		if t.normalizer, err = p.normalizer(jt.Normalizer, "normalizer"); err != nil {
			return nil, err
		}
	}
	for _, a := range added {
		if !a.normalized {
			t.rawAdded.add(a.content, a)
			continue
		}
		content := a.content
		if t.normalizer != nil {
			content = t.normalizer.normalize(content)
		}
		t.normAdded.add(content, a)
	}
	if !isNull(jt.PreTokenizer) {
		if t.preTok, err = p.preTokenizer(jt.PreTokenizer, "pre_tokenizer"); err != nil {
			return nil, err
		}
	}
	if !isNull(jt.PostProcessor) {
		if t.template, err = p.postProcessor(jt.PostProcessor, "post_processor", t); err != nil {
			return nil, err
		}
	}
	if isNull(jt.Decoder) {
		t.decoders = []decoderStep{joinDecoder{}}
	} else if t.decoders, err = p.decoder(jt.Decoder, "decoder", nil); err != nil {
		return nil, err
	}
	return t, nil
}

// model parses the BPE model and returns it with its vocabulary.
func (p *parser) model(jm *jsonModel) (*bpeModel, map[string]int, error) {
	switch {
	case jm.Type == "BPE":
	case jm.Type == "" && !isNull(jm.Merges):
		// Older files omit the type; HF then recognises BPE by its fields.
	case jm.Type == "":
		return nil, nil, p.errorf("model: no \"type\" and no \"merges\"; only BPE models are supported")
	default:
		return nil, nil, p.errorf("model type %q is not supported (only BPE)", jm.Type)
	}
	if isNull(jm.Vocab) {
		return nil, nil, p.errorf("model: missing vocab")
	}
	if isNull(jm.Merges) {
		return nil, nil, p.errorf("model: missing merges")
	}
	if jm.Dropout != nil && *jm.Dropout != 0 {
		return nil, nil, p.errorf("model: BPE dropout %v is not supported (encoding would be random)", *jm.Dropout)
	}
	// Unmarshal fills an existing map; sizing it up front saves rehashing
	// (the count of `":` is at least the number of entries).
	vocab := make(map[string]int, bytes.Count(jm.Vocab, []byte(`":`)))
	if err := json.Unmarshal(jm.Vocab, &vocab); err != nil {
		return nil, nil, p.errorf("model.vocab: want {token: id}: %v", err)
	}
	for tok, id := range vocab {
		if id < 0 || id > 1<<40 {
			return nil, nil, p.errorf("model.vocab: token %q has invalid id %d", tok, id)
		}
	}
	merges, err := p.merges(jm.Merges)
	if err != nil {
		return nil, nil, err
	}
	str := func(s *string) string {
		if s == nil {
			return ""
		}
		return *s
	}
	m, err := newBPEModel(vocab, merges, str(jm.UnkToken), str(jm.ContinuingSubwordPrefix), str(jm.EndOfWordSuffix))
	if err != nil {
		return nil, nil, p.errorf("%v", err)
	}
	flag := func(b *bool) bool { return b != nil && *b }
	m.fuseUnk = flag(jm.FuseUnk)
	m.byteFallback = flag(jm.ByteFallback)
	m.ignoreMerges = flag(jm.IgnoreMerges)
	return m, vocab, nil
}

// merges parses model.merges, given as [["a", "b"], ...] (current files)
// or ["a b", ...] (older files, where HF splits on ' ', needs exactly two
// parts and skips "#version" lines).
func (p *parser) merges(raw json.RawMessage) ([][2]string, error) {
	var pairs [][]string
	if err := json.Unmarshal(raw, &pairs); err == nil {
		out := make([][2]string, len(pairs))
		for k, pr := range pairs {
			if len(pr) != 2 {
				return nil, p.errorf("model.merges[%d]: want two tokens, got %d", k, len(pr))
			}
			out[k] = [2]string{pr[0], pr[1]}
		}
		return out, nil
	}
	var lines []string
	if err := json.Unmarshal(raw, &lines); err != nil {
		return nil, p.errorf("model.merges: want [[\"a\", \"b\"], ...] or [\"a b\", ...]: %v", err)
	}
	out := make([][2]string, 0, len(lines))
	for k, line := range lines {
		if strings.HasPrefix(line, "#version") {
			continue
		}
		a, b, ok := strings.Cut(line, " ")
		if !ok || strings.Contains(b, " ") {
			return nil, p.errorf("model.merges[%d] %q: want two tokens separated by one space", k, line)
		}
		out = append(out, [2]string{a, b})
	}
	return out, nil
}

// pattern parses a Split/Replace pattern. Regexes that are one of the known
// GPT-2/Llama-3/Qwen2 split patterns run on their hand-written scanner;
// others go to Go's regexp.
func (p *parser) pattern(jp *jsonPattern, where string) (splitPattern, error) {
	switch {
	case jp == nil:
		return nil, p.errorf("%s: missing pattern", where)
	case jp.String != nil:
		if *jp.String == "" {
			return nil, p.errorf("%s: empty String pattern is not supported", where)
		}
		return literalPattern{*jp.String}, nil
	case jp.Regex != nil:
		if m := knownScanner(*jp.Regex); m != nil {
			return scannerPattern{m}, nil
		}
		re, err := compileRegex(*jp.Regex)
		if err != nil {
			return nil, p.errorf("%s: regex %q is not supported (not a known pattern, and Go's regexp cannot run it: %v)", where, *jp.Regex, err)
		}
		if re.MatchString("") {
			return nil, p.errorf("%s: regex %q matches the empty string, which is not supported", where, *jp.Regex)
		}
		return regexpPattern{re}, nil
	}
	return nil, p.errorf("%s: pattern needs \"String\" or \"Regex\"", where)
}

// oneRune parses a string field that must hold exactly one character.
func (p *parser) oneRune(s *string, def rune, where string) (rune, error) {
	if s == nil {
		return def, nil
	}
	r, w := utf8.DecodeRuneInString(*s)
	if w != len(*s) || (r == utf8.RuneError && w == 1) || w == 0 {
		return 0, p.errorf("%s: want a single character, got %q", where, *s)
	}
	return r, nil
}

func (p *parser) prependScheme(c *component, where string) (prependScheme, error) {
	scheme := prependAlways
	if c.PrependScheme != nil {
		switch *c.PrependScheme {
		case "always":
		case "first":
			scheme = prependFirst
		case "never":
			scheme = prependNever
		default:
			return 0, p.errorf("%s: unknown prepend_scheme %q", where, *c.PrependScheme)
		}
	}
	if c.AddPrefixSpace != nil && !*c.AddPrefixSpace {
		// Older files: add_prefix_space false means "never".
		scheme = prependNever
	}
	return scheme, nil
}

func (p *parser) normalizer(raw json.RawMessage, where string) (normalizer, error) {
	c, err := p.component(raw, where)
	if err != nil {
		return nil, err
	}
	where = fmt.Sprintf("%s (%s)", where, c.Type)
	switch c.Type {
	case "Sequence":
		var seq sequenceNormalizer
		for k, sub := range c.Normalizers {
			if isNull(sub) {
				continue
			}
			n, err := p.normalizer(sub, fmt.Sprintf("%s.normalizers[%d]", where, k))
			if err != nil {
				return nil, err
			}
			seq = append(seq, n)
		}
		return seq, nil
	case "Prepend":
		if c.Prepend == nil {
			return nil, p.errorf("%s: missing \"prepend\"", where)
		}
		return prependNormalizer{*c.Prepend}, nil
	case "Replace":
		pat, err := p.pattern(c.Pattern, where)
		if err != nil {
			return nil, err
		}
		if c.Content == nil {
			return nil, p.errorf("%s: missing \"content\"", where)
		}
		return replaceNormalizer{pat, *c.Content}, nil
	case "NFC":
		return unicodeNormalizer{norm.NFC}, nil
	case "NFD":
		return unicodeNormalizer{norm.NFD}, nil
	case "NFKC":
		return unicodeNormalizer{norm.NFKC}, nil
	case "NFKD":
		return unicodeNormalizer{norm.NFKD}, nil
	case "Lowercase":
		return lowercaseNormalizer{}, nil
	case "Strip":
		return stripNormalizer{c.StripLeft == nil || *c.StripLeft, c.StripRight == nil || *c.StripRight}, nil
	}
	return nil, p.errorf("%s: normalizer type %q is not supported", where, c.Type)
}

func (p *parser) preTokenizer(raw json.RawMessage, where string) (preTokenizer, error) {
	c, err := p.component(raw, where)
	if err != nil {
		return nil, err
	}
	where = fmt.Sprintf("%s (%s)", where, c.Type)
	switch c.Type {
	case "Sequence":
		var seq sequencePreTokenizer
		for k, sub := range c.Pretokenizers {
			if isNull(sub) {
				continue
			}
			pt, err := p.preTokenizer(sub, fmt.Sprintf("%s.pretokenizers[%d]", where, k))
			if err != nil {
				return nil, err
			}
			seq = append(seq, pt)
		}
		return seq, nil
	case "ByteLevel":
		return &byteLevelPreTokenizer{
			addPrefixSpace: c.AddPrefixSpace == nil || *c.AddPrefixSpace,
			useRegex:       c.UseRegex == nil || *c.UseRegex,
		}, nil
	case "Split":
		pat, err := p.pattern(c.Pattern, where)
		if err != nil {
			return nil, err
		}
		if c.Behavior == nil {
			return nil, p.errorf("%s: missing \"behavior\"", where)
		}
		b, ok := behaviorNames[*c.Behavior]
		if !ok {
			return nil, p.errorf("%s: unknown behavior %q", where, *c.Behavior)
		}
		return &splitPreTokenizer{pattern: pat, behavior: b, invert: c.Invert}, nil
	case "Metaspace":
		r, err := p.oneRune(c.Replacement, '▁', where+" replacement")
		if err != nil {
			return nil, err
		}
		scheme, err := p.prependScheme(c, where)
		if err != nil {
			return nil, err
		}
		return &metaspacePreTokenizer{replacement: string(r), prepend: scheme, split: c.Split == nil || *c.Split}, nil
	case "Digits":
		b := behaviorContiguous
		if c.IndividualDigits {
			b = behaviorIsolated
		}
		return &splitPreTokenizer{pattern: funcPattern{isNumber}, behavior: b}, nil
	}
	return nil, p.errorf("%s: pre-tokenizer type %q is not supported", where, c.Type)
}

// funcPattern matches every rune satisfying a predicate, one rune per match
// (HF's Pattern for Fn(char) -> bool).
type funcPattern struct{ pred func(rune) bool }

func (fp funcPattern) findMatches(s string, dst []span) []span {
	prev := 0
	for i, r := range s {
		if !fp.pred(r) {
			continue
		}
		if i > prev {
			dst = append(dst, span{prev, i, false})
		}
		e := i + utf8.RuneLen(r)
		if r == utf8.RuneError {
			_, e0 := utf8.DecodeRuneInString(s[i:])
			e = i + e0
		}
		dst = append(dst, span{i, e, true})
		prev = e
	}
	if prev < len(s) {
		dst = append(dst, span{prev, len(s), false})
	}
	return dst
}

// postProcessor parses the post-processor into a single-sequence template
// (nil when it adds nothing).
func (p *parser) postProcessor(raw json.RawMessage, where string, t *Tokenizer) (*template, error) {
	c, err := p.component(raw, where)
	if err != nil {
		return nil, err
	}
	where = fmt.Sprintf("%s (%s)", where, c.Type)
	checkID := func(id int64) (int, error) {
		if id < 0 || id >= int64(len(t.known)) || !t.known[id] {
			return 0, p.errorf("%s: special token id %d is not in the vocabulary", where, id)
		}
		return int(id), nil
	}
	switch c.Type {
	case "ByteLevel":
		return nil, nil // only trims offsets
	case "Sequence":
		var out *template
		for k, sub := range c.Processors {
			if isNull(sub) {
				continue
			}
			tp, err := p.postProcessor(sub, fmt.Sprintf("%s.processors[%d]", where, k), t)
			if err != nil {
				return nil, err
			}
			if tp == nil {
				continue
			}
			if out == nil {
				out = &template{}
			}
			// Each processor wraps the output of the previous one.
			out.prefix = append(append([]int(nil), tp.prefix...), out.prefix...)
			out.suffix = append(out.suffix, tp.suffix...)
		}
		return out, nil
	case "BertProcessing", "RobertaProcessing":
		tokID := func(pair []json.RawMessage, name string) (int, error) {
			var id int64
			if len(pair) != 2 || json.Unmarshal(pair[1], &id) != nil {
				return 0, p.errorf("%s: %q must be [token, id]", where, name)
			}
			return checkID(id)
		}
		cls, err := tokID(c.Cls, "cls")
		if err != nil {
			return nil, err
		}
		sep, err := tokID(c.Sep, "sep")
		if err != nil {
			return nil, err
		}
		return &template{prefix: []int{cls}, suffix: []int{sep}}, nil
	case "TemplateProcessing":
		out := &template{}
		seenSeq := false
		for k, item := range c.Single {
			name, isSeq, err := p.templatePiece(item, fmt.Sprintf("%s.single[%d]", where, k))
			if err != nil {
				return nil, err
			}
			if isSeq {
				if seenSeq {
					return nil, p.errorf("%s: single template has more than one sequence", where)
				}
				seenSeq = true
				continue
			}
			sp, ok := c.SpecialTokens[name]
			if !ok {
				return nil, p.errorf("%s: special token %q is not in special_tokens", where, name)
			}
			for _, id := range sp.IDs {
				id, err := checkID(id)
				if err != nil {
					return nil, err
				}
				if seenSeq {
					out.suffix = append(out.suffix, id)
				} else {
					out.prefix = append(out.prefix, id)
				}
			}
		}
		if !seenSeq {
			return nil, p.errorf("%s: single template has no $A sequence", where)
		}
		return out, nil
	}
	return nil, p.errorf("%s: post-processor type %q is not supported", where, c.Type)
}

// templatePiece parses one item of a template: {"Sequence": {"id": "A"}},
// {"SpecialToken": {"id": "<s>"}}, or the string forms "$A" and "<s>"
// (with an optional ":type_id").
func (p *parser) templatePiece(raw json.RawMessage, where string) (name string, isSeq bool, err error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if strings.HasPrefix(s, "$") {
			return "", true, nil
		}
		if k := strings.LastIndexByte(s, ':'); k > 0 {
			s = s[:k]
		}
		return s, false, nil
	}
	var obj struct {
		Sequence     *struct{ ID string } `json:"Sequence"`
		SpecialToken *struct{ ID string } `json:"SpecialToken"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return "", false, p.errorf("%s: invalid JSON: %v", where, err)
	}
	switch {
	case obj.Sequence != nil:
		return "", true, nil
	case obj.SpecialToken != nil:
		return obj.SpecialToken.ID, false, nil
	}
	return "", false, p.errorf("%s: want Sequence or SpecialToken", where)
}

// decoder parses a decoder into a flat list of steps (Sequences are
// flattened), appended to dst.
func (p *parser) decoder(raw json.RawMessage, where string, dst []decoderStep) ([]decoderStep, error) {
	c, err := p.component(raw, where)
	if err != nil {
		return nil, err
	}
	where = fmt.Sprintf("%s (%s)", where, c.Type)
	switch c.Type {
	case "Sequence":
		for k, sub := range c.Decoders {
			if isNull(sub) {
				continue
			}
			if dst, err = p.decoder(sub, fmt.Sprintf("%s.decoders[%d]", where, k), dst); err != nil {
				return nil, err
			}
		}
		return dst, nil
	case "ByteLevel":
		return append(dst, byteLevelDecoder{}), nil
	case "Replace":
		pat, err := p.pattern(c.Pattern, where)
		if err != nil {
			return nil, err
		}
		if c.Content == nil {
			return nil, p.errorf("%s: missing \"content\"", where)
		}
		return append(dst, &replaceDecoder{pat, *c.Content}), nil
	case "ByteFallback":
		return append(dst, byteFallbackDecoder{}), nil
	case "Fuse":
		return append(dst, fuseDecoder{}), nil
	case "Strip":
		r, err := p.oneRune(c.Content, ' ', where+" content")
		if err != nil {
			return nil, err
		}
		start, stop := 0, 0
		if c.Start != nil {
			start = *c.Start
		}
		if c.Stop != nil {
			stop = *c.Stop
		}
		if start < 0 || stop < 0 {
			return nil, p.errorf("%s: negative start/stop", where)
		}
		return append(dst, &stripDecoder{content: r, start: start, stop: stop}), nil
	case "Metaspace":
		r, err := p.oneRune(c.Replacement, '▁', where+" replacement")
		if err != nil {
			return nil, err
		}
		scheme, err := p.prependScheme(c, where)
		if err != nil {
			return nil, err
		}
		return append(dst, &metaspaceDecoder{replacement: r, dropInFirst: scheme != prependNever}), nil
	}
	return nil, p.errorf("%s: decoder type %q is not supported", where, c.Type)
}
