package tokenizer

import (
	"regexp"
	"strings"
)

// piece is a stretch of (normalized) text on its way to the model: the
// pre-tokenizers cut pieces into smaller pieces, and every final piece is
// one BPE "word".
type piece struct {
	text string
	// first: the piece starts at offset 0 of the original input. Only
	// Metaspace with prepend_scheme "first" looks at it.
	first bool
}

// preTokenizer cuts and rewrites pieces (HF's PreTokenizer). Empty pieces
// are dropped, as in HF's PreTokenizedString.split.
type preTokenizer interface {
	preTokenize(in []piece) []piece
}

// span is a [start, end) byte range of a piece; match tells whether the split
// pattern matched it (HF's find_matches output).
type span struct {
	start, end int
	match      bool
}

// splitBehavior is HF's SplitDelimiterBehavior: what happens to the matches
// of a split pattern.
type splitBehavior int

const (
	behaviorRemoved            splitBehavior = iota // matches are dropped
	behaviorIsolated                                // matches become pieces of their own
	behaviorMergedWithPrevious                      // a match is glued to the piece before it
	behaviorMergedWithNext                          // a match is glued to the piece after it
	behaviorContiguous                              // consecutive matches form one piece
)

var behaviorNames = map[string]splitBehavior{
	"Removed":            behaviorRemoved,
	"Isolated":           behaviorIsolated,
	"MergedWithPrevious": behaviorMergedWithPrevious,
	"MergedWithNext":     behaviorMergedWithNext,
	"Contiguous":         behaviorContiguous,
}

// applyBehavior turns the tiling spans of one piece into the spans that
// become pieces, following HF's NormalizedString::split.
func applyBehavior(spans []span, b splitBehavior) []span {
	out := spans[:0:0]
	switch b {
	case behaviorIsolated:
		return spans
	case behaviorRemoved:
		for _, s := range spans {
			if !s.match {
				out = append(out, s)
			}
		}
	case behaviorMergedWithPrevious:
		prevMatch := false
		for _, s := range spans {
			if s.match && !prevMatch && len(out) > 0 {
				out[len(out)-1].end = s.end
			} else {
				out = append(out, span{s.start, s.end, false})
			}
			prevMatch = s.match
		}
	case behaviorMergedWithNext:
		prevMatch := false
		for k := len(spans) - 1; k >= 0; k-- {
			s := spans[k]
			if s.match && !prevMatch && len(out) > 0 {
				out[len(out)-1].start = s.start
			} else {
				out = append(out, span{s.start, s.end, false})
			}
			prevMatch = s.match
		}
		for l, r := 0, len(out)-1; l < r; l, r = l+1, r-1 {
			out[l], out[r] = out[r], out[l]
		}
	case behaviorContiguous:
		prevMatch := false
		for k, s := range spans {
			if k > 0 && s.match == prevMatch {
				out[len(out)-1].end = s.end
			} else {
				out = append(out, span{s.start, s.end, false})
			}
			prevMatch = s.match
		}
	}
	return out
}

// splitPattern finds the matches of a Split pattern in a string.
type splitPattern interface {
	// findMatches appends spans that tile s to dst.
	findMatches(s string, dst []span) []span
}

// scannerPattern is one of the hand-written scanners of patterns.go.
type scannerPattern struct{ m matchFunc }

func (p scannerPattern) findMatches(s string, dst []span) []span { return scanAll(p.m, s, dst) }

// regexpPattern is a pattern Go's regexp can run (no lookaround). It uses
// RE2's leftmost-first semantics, which agree with a backtracking engine
// for the patterns RE2 accepts.
type regexpPattern struct{ re *regexp.Regexp }

func (p regexpPattern) findMatches(s string, dst []span) []span {
	prev := 0
	for _, m := range p.re.FindAllStringIndex(s, -1) {
		if m[0] > prev {
			dst = append(dst, span{prev, m[0], false})
		}
		dst = append(dst, span{m[0], m[1], true})
		prev = m[1]
	}
	if prev < len(s) {
		dst = append(dst, span{prev, len(s), false})
	}
	return dst
}

// literalPattern is a Split/Replace pattern given as {"String": "..."}.
type literalPattern struct{ lit string }

func (p literalPattern) findMatches(s string, dst []span) []span {
	prev := 0
	for prev < len(s) {
		k := strings.Index(s[prev:], p.lit)
		if k < 0 {
			break
		}
		if k > 0 {
			dst = append(dst, span{prev, prev + k, false})
		}
		dst = append(dst, span{prev + k, prev + k + len(p.lit), true})
		prev += k + len(p.lit)
	}
	if prev < len(s) {
		dst = append(dst, span{prev, len(s), false})
	}
	return dst
}

// splitPreTokenizer is HF's Split pre-tokenizer.
type splitPreTokenizer struct {
	pattern  splitPattern
	behavior splitBehavior
	invert   bool
}

func (p *splitPreTokenizer) preTokenize(in []piece) []piece {
	out := make([]piece, 0, len(in)*4)
	var spans []span
	for _, pc := range in {
		spans = p.pattern.findMatches(pc.text, spans[:0])
		if p.invert {
			for k := range spans {
				spans[k].match = !spans[k].match
			}
		}
		for _, s := range applyBehavior(spans, p.behavior) {
			if s.end > s.start {
				out = append(out, piece{pc.text[s.start:s.end], pc.first && s.start == 0})
			}
		}
	}
	return out
}

// byteLevelPreTokenizer is HF's ByteLevel pre-tokenizer: optionally a
// leading space, optionally the GPT-2 split, then every byte is replaced by
// its printable stand-in character (see byteToRune).
type byteLevelPreTokenizer struct {
	addPrefixSpace bool
	useRegex       bool
}

func (p *byteLevelPreTokenizer) preTokenize(in []piece) []piece {
	out := make([]piece, 0, len(in)*4)
	var spans []span
	for _, pc := range in {
		text := pc.text
		if p.addPrefixSpace && !strings.HasPrefix(text, " ") {
			text = " " + text
		}
		if !p.useRegex {
			out = append(out, piece{byteLevelEncode(text), pc.first})
			continue
		}
		spans = scanAll(matchGPT2, text, spans[:0])
		for _, s := range spans {
			out = append(out, piece{byteLevelEncode(text[s.start:s.end]), pc.first && s.start == 0})
		}
	}
	return out
}

// metaspacePreTokenizer is HF's Metaspace pre-tokenizer: spaces become the
// replacement character (normally "▁"), which is prepended according to
// prepend_scheme, and pieces are optionally split before every replacement
// character.
type metaspacePreTokenizer struct {
	replacement string
	prepend     prependScheme
	split       bool
}

// prependScheme is Metaspace's prepend_scheme.
type prependScheme int

const (
	prependAlways prependScheme = iota
	prependFirst
	prependNever
)

func (p *metaspacePreTokenizer) preTokenize(in []piece) []piece {
	out := make([]piece, 0, len(in)*4)
	var spans []span
	for _, pc := range in {
		text := strings.ReplaceAll(pc.text, " ", p.replacement)
		if !strings.HasPrefix(text, p.replacement) &&
			(p.prepend == prependAlways || (p.prepend == prependFirst && pc.first)) {
			text = p.replacement + text
		}
		if !p.split {
			if text != "" {
				out = append(out, piece{text, pc.first})
			}
			continue
		}
		spans = literalPattern{p.replacement}.findMatches(text, spans[:0])
		for _, s := range applyBehavior(spans, behaviorMergedWithNext) {
			if s.end > s.start {
				out = append(out, piece{text[s.start:s.end], pc.first && s.start == 0})
			}
		}
	}
	return out
}

// sequencePreTokenizer runs pre-tokenizers one after the other.
type sequencePreTokenizer []preTokenizer

func (p sequencePreTokenizer) preTokenize(in []piece) []piece {
	for _, pt := range p {
		in = pt.preTokenize(in)
	}
	return in
}

// byteToRune is GPT-2's reversible byte-to-character map: printable Latin-1
// bytes stand for themselves, the other 68 bytes map in order to U+0100 and
// up (so a space is "Ġ" U+0120 and a newline "Ċ" U+010A).
var (
	byteToRune    [256]rune
	byteLevelUTF8 [256]string
	runeToByte    = map[rune]byte{}
)

func init() {
	n := 0
	for b := 0; b < 256; b++ {
		if (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			byteToRune[b] = rune(b)
		} else {
			byteToRune[b] = rune(0x100 + n)
			n++
		}
		byteLevelUTF8[b] = string(byteToRune[b])
		runeToByte[byteToRune[b]] = byte(b)
	}
}

// byteLevelEncode replaces every byte of s by its byte-level character.
func byteLevelEncode(s string) string {
	var sb strings.Builder
	sb.Grow(2 * len(s))
	for k := 0; k < len(s); k++ {
		sb.WriteString(byteLevelUTF8[s[k]])
	}
	return sb.String()
}
