package tokenizer

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"
)

// normalizer rewrites a piece of input text before pre-tokenization (HF's
// Normalizer). Offsets are not tracked: the runtime only needs ids.
type normalizer interface {
	normalize(s string) string
}

// sequenceNormalizer runs normalizers one after the other.
type sequenceNormalizer []normalizer

func (n sequenceNormalizer) normalize(s string) string {
	for _, m := range n {
		s = m.normalize(s)
	}
	return s
}

// prependNormalizer prepends a string to every non-empty piece (SentencePiece's
// leading "▁" in Llama-2 and Mistral tokenizer.json files).
type prependNormalizer struct{ prefix string }

func (n prependNormalizer) normalize(s string) string {
	if s == "" {
		return s
	}
	return n.prefix + s
}

// replaceNormalizer replaces every match of a pattern by content.
type replaceNormalizer struct {
	pattern splitPattern
	content string
}

func (n replaceNormalizer) normalize(s string) string {
	if lit, ok := n.pattern.(literalPattern); ok {
		return strings.ReplaceAll(s, lit.lit, n.content)
	}
	var sb strings.Builder
	for _, sp := range n.pattern.findMatches(s, nil) {
		if sp.match {
			sb.WriteString(n.content)
		} else {
			sb.WriteString(s[sp.start:sp.end])
		}
	}
	return sb.String()
}

// unicodeNormalizer applies one of the four Unicode normalization forms.
type unicodeNormalizer struct{ form norm.Form }

func (n unicodeNormalizer) normalize(s string) string { return n.form.String(s) }

// lowercaseNormalizer lower-cases with Go's simple case mapping (HF uses
// Rust's full mapping; they differ only for a handful of characters such
// as U+0130).
type lowercaseNormalizer struct{}

func (lowercaseNormalizer) normalize(s string) string { return strings.ToLower(s) }

// stripNormalizer removes leading and/or trailing whitespace.
type stripNormalizer struct{ left, right bool }

func (n stripNormalizer) normalize(s string) string {
	if n.left {
		s = strings.TrimLeftFunc(s, unicode.IsSpace)
	}
	if n.right {
		s = strings.TrimRightFunc(s, unicode.IsSpace)
	}
	return s
}

// Unicode versions of the Perl classes. Oniguruma, which HF uses for
// patterns, gives \s, \d and \w their Unicode meaning; Go's regexp gives
// them the ASCII one, so compileRegex rewrites them.
const (
	uniSpace = `\t\n\v\f\r\x{85}\p{Z}` // White_Space
	uniDigit = `\p{Nd}`
	uniWord  = `\p{L}\p{M}\p{Nd}\p{Pc}`
)

// compileRegex compiles a tokenizer.json regex with Go's regexp after
// giving \s, \d, \w (and their negations outside brackets) their Unicode
// meaning. Patterns Go cannot express (lookaround, backreferences,
// possessive quantifiers, a negated Perl class inside brackets) are an
// error.
func compileRegex(pattern string) (*regexp.Regexp, error) {
	var sb strings.Builder
	inClass := false
	for i := 0; i < len(pattern); i++ {
		c := pattern[i]
		switch {
		case c == '\\' && i+1 < len(pattern):
			e := pattern[i+1]
			i++
			var cls string
			neg := false
			switch e {
			case 's', 'S':
				cls, neg = uniSpace, e == 'S'
			case 'd', 'D':
				cls, neg = uniDigit, e == 'D'
			case 'w', 'W':
				cls, neg = uniWord, e == 'W'
			default:
				sb.WriteByte(c)
				sb.WriteByte(e)
				continue
			}
			switch {
			case inClass && neg:
				return nil, fmt.Errorf(`\%c inside a bracket expression is not supported`, e)
			case inClass:
				sb.WriteString(cls)
			case neg:
				sb.WriteString("[^" + cls + "]")
			default:
				sb.WriteString("[" + cls + "]")
			}
		case c == '[' && inClass && i+1 < len(pattern) && pattern[i+1] == ':':
			// [:alpha:] inside a class: copy through the closing ":]".
			end := strings.Index(pattern[i:], ":]")
			if end < 0 {
				sb.WriteByte(c)
				continue
			}
			sb.WriteString(pattern[i : i+end+2])
			i += end + 1
		case c == '[' && !inClass:
			inClass = true
			sb.WriteByte(c)
			// A ']' right after '[' or '[^' is a literal.
			if i+1 < len(pattern) && pattern[i+1] == '^' {
				sb.WriteByte('^')
				i++
			}
			if i+1 < len(pattern) && pattern[i+1] == ']' {
				sb.WriteByte(']')
				i++
			}
		case c == ']' && inClass:
			inClass = false
			sb.WriteByte(c)
		default:
			sb.WriteByte(c)
		}
	}
	return regexp.Compile(sb.String())
}
