package tokenizer

import (
	"strings"
	"unicode/utf8"
)

// decoderStep is one of HF's decoders. decodeChain is HF's
// Decoder::decode_chain (a list of token strings in, a list out; the
// decoded text is the concatenation of the final list). stream returns a
// fresh stage computing the same thing incrementally, for StreamDecoder.
type decoderStep interface {
	decodeChain(tokens []string) []string
	stream() streamStage
}

// fragment is a piece of one token of a decoder stage's input or output. A
// token is the fragments from one with start set to one with end set (a
// single fragment may have both). Stages that need whole tokens assemble
// them; stages that work rune by rune pass fragments through, which is what
// lets text reach the caller before a fused token is complete.
type fragment struct {
	text       string
	start, end bool
}

type emitFunc func(fragment)

// streamStage is the incremental form of a decoderStep. flush ends the
// input: a stage emits everything it held back and ends its open output
// token.
type streamStage interface {
	push(f fragment, emit emitFunc)
	flush(emit emitFunc)
}

// assembler collects the fragments of one token.
type assembler struct {
	buf  []byte
	open bool
}

// add returns the token that f completes, if any.
func (a *assembler) add(f fragment) (string, bool) {
	if f.start && f.end && !a.open {
		return f.text, true
	}
	if f.start {
		a.buf = a.buf[:0]
	}
	a.open = true
	a.buf = append(a.buf, f.text...)
	if f.end {
		a.open = false
		return string(a.buf), true
	}
	return "", false
}

// close returns the unfinished token, if any, at flush.
func (a *assembler) close() (string, bool) {
	if !a.open {
		return "", false
	}
	a.open = false
	return string(a.buf), true
}

// wholeTokenStage adapts a per-token function to a stream stage: it emits
// one output token per input token once the input token is complete.
type wholeTokenStage struct {
	asm assembler
	fn  func(tok string, emit emitFunc)
	end func(emit emitFunc) // optional, at flush
}

func (s *wholeTokenStage) push(f fragment, emit emitFunc) {
	if tok, ok := s.asm.add(f); ok {
		s.fn(tok, emit)
	}
}

func (s *wholeTokenStage) flush(emit emitFunc) {
	if tok, ok := s.asm.close(); ok {
		s.fn(tok, emit)
	}
	if s.end != nil {
		s.end(emit)
	}
}

// replaceDecoder replaces every match of a pattern in each token (usually
// "▁" by " ").
type replaceDecoder struct {
	pattern splitPattern
	content string
}

func (d *replaceDecoder) replace(tok string) string {
	if lit, ok := d.pattern.(literalPattern); ok {
		return strings.ReplaceAll(tok, lit.lit, d.content)
	}
	var sb strings.Builder
	for _, sp := range d.pattern.findMatches(tok, nil) {
		if sp.match {
			sb.WriteString(d.content)
		} else {
			sb.WriteString(tok[sp.start:sp.end])
		}
	}
	return sb.String()
}

func (d *replaceDecoder) decodeChain(tokens []string) []string {
	out := make([]string, len(tokens))
	for k, t := range tokens {
		out[k] = d.replace(t)
	}
	return out
}

func (d *replaceDecoder) stream() streamStage {
	return &wholeTokenStage{fn: func(tok string, emit emitFunc) {
		emit(fragment{d.replace(tok), true, true})
	}}
}

// byteFallbackDecoder turns runs of "<0xNN>" tokens into the text their
// bytes spell; a run that is not valid UTF-8 becomes one U+FFFD per byte.
type byteFallbackDecoder struct{}

// parseByteToken recognises "<0xNN>" as HF does (Rust's u8::from_str_radix
// on the two characters after "<0x", which also accepts "+N").
func parseByteToken(tok string) (byte, bool) {
	if len(tok) != 6 || !strings.HasPrefix(tok, "<0x") || tok[5] != '>' {
		return 0, false
	}
	digits := tok[3:5]
	if digits[0] == '+' {
		digits = digits[1:]
	}
	v := 0
	for k := 0; k < len(digits); k++ {
		d := hexVal(digits[k])
		if d < 0 {
			return 0, false
		}
		v = v*16 + d
	}
	return byte(v), true
}

func hexVal(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// byteRunTokens is what a finished run of byte tokens decodes to.
func byteRunTokens(run []byte, dst []string) []string {
	if utf8.Valid(run) {
		return append(dst, string(run))
	}
	for range run {
		dst = append(dst, "\uFFFD")
	}
	return dst
}

func (byteFallbackDecoder) decodeChain(tokens []string) []string {
	var out []string
	var run []byte
	for _, t := range tokens {
		if b, ok := parseByteToken(t); ok {
			run = append(run, b)
			continue
		}
		if len(run) > 0 {
			out = byteRunTokens(run, out)
			run = run[:0]
		}
		out = append(out, t)
	}
	if len(run) > 0 {
		out = byteRunTokens(run, out)
	}
	return out
}

// The stream form holds a run of byte tokens until a non-byte token or the
// end: a run with an invalid byte anywhere decodes to U+FFFD for every byte,
// so no part of a run is final before the run ends.
func (byteFallbackDecoder) stream() streamStage {
	var run []byte
	emitRun := func(emit emitFunc) {
		if len(run) == 0 {
			return
		}
		for _, t := range byteRunTokens(run, nil) {
			emit(fragment{t, true, true})
		}
		run = run[:0]
	}
	return &wholeTokenStage{
		fn: func(tok string, emit emitFunc) {
			if b, ok := parseByteToken(tok); ok {
				run = append(run, b)
				return
			}
			emitRun(emit)
			emit(fragment{tok, true, true})
		},
		end: emitRun,
	}
}

// fuseDecoder joins all tokens into one.
type fuseDecoder struct{}

func (fuseDecoder) decodeChain(tokens []string) []string {
	return []string{strings.Join(tokens, "")}
}

func (fuseDecoder) stream() streamStage { return &fuseStage{} }

type fuseStage struct{ started bool }

func (s *fuseStage) push(f fragment, emit emitFunc) {
	emit(fragment{f.text, !s.started, false})
	s.started = true
}

func (s *fuseStage) flush(emit emitFunc) {
	emit(fragment{"", !s.started, true})
	s.started = false
}

// stripDecoder removes up to start leading and up to stop trailing content
// characters from each token. (HF panics when the two cuts cross; here the
// trailing cut stops at the leading one.)
type stripDecoder struct {
	content     rune
	start, stop int
}

func (d *stripDecoder) decodeChain(tokens []string) []string {
	out := make([]string, len(tokens))
	for k, t := range tokens {
		rs := []rune(t)
		lo := 0
		for i := 0; i < d.start && i < len(rs) && rs[i] == d.content; i++ {
			lo = i + 1
		}
		hi := len(rs)
		for i := 0; i < d.stop; i++ {
			idx := len(rs) - i - 1
			if idx < lo || rs[idx] != d.content {
				break
			}
			hi = idx
		}
		out[k] = string(rs[lo:hi])
	}
	return out
}

func (d *stripDecoder) stream() streamStage { return &stripStage{d: d} }

type stripStage struct {
	d        *stripDecoder
	open     bool
	leadLeft int  // leading content characters still to drop
	leading  bool // still at the start of the token
	held     int  // trailing content characters held back (only with stop > 0)
}

func (s *stripStage) push(f fragment, emit emitFunc) {
	if f.start {
		s.leadLeft, s.leading, s.held, s.open = s.d.start, true, 0, true
	}
	var sb strings.Builder
	for _, r := range f.text {
		if s.leading {
			if s.leadLeft > 0 && r == s.d.content {
				s.leadLeft--
				continue
			}
			s.leading = false
		}
		if s.d.stop > 0 {
			if r == s.d.content {
				s.held++
				continue
			}
			for ; s.held > 0; s.held-- {
				sb.WriteRune(s.d.content)
			}
		}
		sb.WriteRune(r)
	}
	if f.end {
		for ; s.held > s.d.stop; s.held-- {
			sb.WriteRune(s.d.content)
		}
		s.held, s.open = 0, false
	}
	emit(fragment{sb.String(), f.start, f.end})
}

func (s *stripStage) flush(emit emitFunc) {
	if s.open {
		s.push(fragment{"", false, true}, emit)
	}
}

// metaspaceDecoder turns the replacement character back into spaces; in the
// first token it is dropped instead (the prepended one), unless the
// prepend scheme is "never".
type metaspaceDecoder struct {
	replacement rune
	dropInFirst bool
}

func (d *metaspaceDecoder) mapToken(t string, first bool) string {
	return strings.Map(func(r rune) rune {
		if r != d.replacement {
			return r
		}
		if first && d.dropInFirst {
			return -1
		}
		return ' '
	}, t)
}

func (d *metaspaceDecoder) decodeChain(tokens []string) []string {
	out := make([]string, len(tokens))
	for k, t := range tokens {
		out[k] = d.mapToken(t, k == 0)
	}
	return out
}

func (d *metaspaceDecoder) stream() streamStage { return &metaspaceStage{d: d, index: -1} }

type metaspaceStage struct {
	d     *metaspaceDecoder
	index int // index of the current token
}

func (s *metaspaceStage) push(f fragment, emit emitFunc) {
	if f.start {
		s.index++
	}
	emit(fragment{s.d.mapToken(f.text, s.index == 0), f.start, f.end})
}

func (s *metaspaceStage) flush(emit emitFunc) {}

// byteLevelDecoder maps byte-level characters back to bytes and the bytes to
// text (invalid UTF-8 becomes U+FFFD per maximal invalid subsequence, as
// Rust's String::from_utf8_lossy does). A token containing a character
// outside the byte-level alphabet (an added token such as "<|eot_id|>" is
// inside it; one with non-Latin text is not) contributes its own UTF-8
// bytes. The result is a single token.
type byteLevelDecoder struct{}

func appendTokenBytes(dst []byte, t string) []byte {
	n := len(dst)
	for _, r := range t {
		b, ok := runeToByte[r]
		if !ok {
			return append(dst[:n], t...)
		}
		dst = append(dst, b)
	}
	return dst
}

func (byteLevelDecoder) decodeChain(tokens []string) []string {
	var buf []byte
	for _, t := range tokens {
		buf = appendTokenBytes(buf, t)
	}
	return []string{string(appendLossy(nil, buf))}
}

// The stream form emits all bytes except an incomplete UTF-8 sequence at the
// end, which waits for the tokens that complete it (or for the end).
func (byteLevelDecoder) stream() streamStage {
	var buf []byte
	started := false
	return &wholeTokenStage{
		fn: func(tok string, emit emitFunc) {
			buf = appendTokenBytes(buf, tok)
			if k := len(buf) - incompleteTail(buf); k > 0 {
				emit(fragment{string(appendLossy(nil, buf[:k])), !started, false})
				started = true
				buf = append(buf[:0], buf[k:]...)
			}
		},
		end: func(emit emitFunc) {
			emit(fragment{string(appendLossy(nil, buf)), !started, true})
			buf, started = buf[:0], false
		},
	}
}

// joinDecoder is what HF does without a decoder: tokens joined by spaces.
type joinDecoder struct{}

func (joinDecoder) decodeChain(tokens []string) []string {
	return []string{strings.Join(tokens, " ")}
}

func (joinDecoder) stream() streamStage { return &joinStage{} }

type joinStage struct{ n int }

func (s *joinStage) push(f fragment, emit emitFunc) {
	text := f.text
	if f.start {
		if s.n > 0 {
			text = " " + text
		}
		s.n++
	}
	emit(fragment{text, s.n == 1 && f.start, false})
}

func (s *joinStage) flush(emit emitFunc) {
	emit(fragment{"", s.n == 0, true})
	s.n = 0
}

// utf8SeqLen returns the length of the UTF-8 sequence led by b, 0 if b
// cannot lead one.
func utf8SeqLen(b byte) int {
	switch {
	case b < 0x80:
		return 1
	case b >= 0xC2 && b <= 0xDF:
		return 2
	case b >= 0xE0 && b <= 0xEF:
		return 3
	case b >= 0xF0 && b <= 0xF4:
		return 4
	}
	return 0
}

// validSecond reports whether c may follow lead byte b (Unicode Table 3-7).
func validSecond(b, c byte) bool {
	switch b {
	case 0xE0:
		return c >= 0xA0 && c <= 0xBF
	case 0xED:
		return c >= 0x80 && c <= 0x9F
	case 0xF0:
		return c >= 0x90 && c <= 0xBF
	case 0xF4:
		return c >= 0x80 && c <= 0x8F
	}
	return c >= 0x80 && c <= 0xBF
}

// validPrefixLen returns how many bytes of b, from its start, form a valid
// (possibly incomplete) UTF-8 sequence, and the full length that sequence
// needs. (0, 0) when b[0] cannot start a sequence.
func validPrefixLen(b []byte) (have, need int) {
	need = utf8SeqLen(b[0])
	if need == 0 {
		return 0, 0
	}
	have = 1
	for have < need && have < len(b) {
		c := b[have]
		if have == 1 && !validSecond(b[0], c) || have > 1 && (c < 0x80 || c > 0xBF) {
			break
		}
		have++
	}
	return have, need
}

// appendLossy appends b to dst with every maximal invalid subsequence
// replaced by U+FFFD, as Rust's String::from_utf8_lossy (Go's own
// conversions replace every invalid byte instead).
func appendLossy(dst, b []byte) []byte {
	if utf8.Valid(b) {
		return append(dst, b...)
	}
	for i := 0; i < len(b); {
		have, need := validPrefixLen(b[i:])
		switch {
		case have == 0:
			dst = append(dst, "\uFFFD"...)
			i++
		case have == need:
			dst = append(dst, b[i:i+have]...)
			i += have
		default:
			dst = append(dst, "\uFFFD"...)
			i += have
		}
	}
	return dst
}

// incompleteTail returns the length of the valid but incomplete UTF-8
// sequence at the end of b (0 if there is none): bytes that may still
// become a character when more bytes arrive.
func incompleteTail(b []byte) int {
	for n := 1; n <= 3 && n <= len(b); n++ {
		c := b[len(b)-n]
		if c >= 0x80 && c <= 0xBF {
			continue // continuation byte: look further back
		}
		have, need := validPrefixLen(b[len(b)-n:])
		if have == n && need > n {
			return n
		}
		return 0
	}
	return 0
}
