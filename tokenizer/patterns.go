package tokenizer

import (
	"unicode"
	"unicode/utf8"
)

// Hand-written scanners for the split regexes of GPT-2, Llama-3 and Qwen2.
//
// Hugging Face tokenizers runs these patterns with Oniguruma, a backtracking
// engine. All three end in `\s+(?!\S)|\s+`, and Go's regexp (RE2) has no
// lookahead, so they cannot be compiled with it. gotokenizers' ByteLevel
// pre-tokenizer uses dlclark/regexp2 instead, but compiles the GPT-2 pattern
// case-insensitively (so "'S" becomes a contraction, which it is not in
// GPT-2) and, being a general backtracking engine, is much slower than a
// scanner. Each scanner below reproduces what the backtracking engine does:
// at every position the alternatives are tried left to right and the first
// one that matches wins, quantifiers are greedy and give back characters
// only where a later part of the same alternative needs them. The three
// patterns match at every position (every rune is a letter, a number,
// whitespace or "other"), so the matches tile the input with no gaps.
//
// Character classes follow Oniguruma's Unicode definitions, taken from Go's
// unicode tables: \p{L} = unicode.IsLetter, \p{N} = unicode.IsNumber, \s =
// the White_Space property = unicode.IsSpace. Bytes that are not valid UTF-8
// are treated as U+FFFD (a symbol, so "other") one byte at a time.

// Known split patterns, exactly as they appear in tokenizer.json files.
const (
	gpt2Pattern   = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
	llama3Pattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	qwen2Pattern  = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

// matchFunc returns the end (byte offset) of the match that starts at byte
// offset i of s; i < len(s) and the result is > i.
type matchFunc func(s string, i int) int

// knownScanner returns the scanner for a known pattern, or nil.
func knownScanner(pattern string) matchFunc {
	switch pattern {
	case gpt2Pattern:
		return matchGPT2
	case llama3Pattern:
		return func(s string, i int) int { return matchLlama3(s, i, 3) }
	case qwen2Pattern:
		return func(s string, i int) int { return matchLlama3(s, i, 1) }
	}
	return nil
}

// scanAll appends the matches of m over s (which tile s) to dst as
// [start, end) byte spans.
func scanAll(m matchFunc, s string, dst []span) []span {
	for i := 0; i < len(s); {
		e := m(s, i)
		dst = append(dst, span{i, e, true})
		i = e
	}
	return dst
}

func runeAt(s string, i int) (rune, int) {
	if i >= len(s) {
		return -1, 0
	}
	if c := s[i]; c < utf8.RuneSelf {
		return rune(c), 1
	}
	return utf8.DecodeRuneInString(s[i:])
}

func isLetter(r rune) bool { return r >= 0 && unicode.IsLetter(r) }
func isNumber(r rune) bool { return r >= 0 && unicode.IsNumber(r) }
func isSpace(r rune) bool  { return r >= 0 && unicode.IsSpace(r) }
func isCRLF(r rune) bool   { return r == '\r' || r == '\n' }

// isOther is [^\s\p{L}\p{N}].
func isOther(r rune) bool { return r >= 0 && !isSpace(r) && !isLetter(r) && !isNumber(r) }

// runEnd returns the end of the longest run of runes satisfying pred that
// starts at i (i itself when s[i] does not satisfy it).
func runEnd(s string, i int, pred func(rune) bool) int {
	for i < len(s) {
		r, w := runeAt(s, i)
		if !pred(r) {
			break
		}
		i += w
	}
	return i
}

// runEndMax is runEnd limited to max runes.
func runEndMax(s string, i int, pred func(rune) bool, max int) int {
	for n := 0; n < max && i < len(s); n++ {
		r, w := runeAt(s, i)
		if !pred(r) {
			break
		}
		i += w
	}
	return i
}

// foldEq reports whether r equals the lower-case ASCII letter c under
// Unicode simple case folding (so 'S' and 'ſ' (U+017F) both equal 's', as
// with Oniguruma's and Go's (?i)).
func foldEq(r, c rune) bool {
	if r == c {
		return true
	}
	for f := unicode.SimpleFold(c); f != c; f = unicode.SimpleFold(f) {
		if f == r {
			return true
		}
	}
	return false
}

var contractions = [...]string{"s", "t", "re", "ve", "m", "ll", "d"}

// contractionEnd matches 's|'t|'re|'ve|'m|'ll|'d at i (s[i] is an apostrophe),
// case-insensitively when fold is set, and returns the end or -1. The
// alternatives start with distinct letters, so the first that matches is
// the only one that can.
func contractionEnd(s string, i int, fold bool) int {
	j0 := i + 1
	for _, c := range contractions {
		j := j0
		ok := true
		for _, want := range c {
			r, w := runeAt(s, j)
			if r < 0 || !(r == want || (fold && foldEq(r, want))) {
				ok = false
				break
			}
			j += w
		}
		if ok {
			return j
		}
	}
	return -1
}

// lastRuneStart returns the start of the rune that ends at e.
func lastRuneStart(s string, e int) int {
	_, w := utf8.DecodeLastRuneInString(s[:e])
	return e - w
}

// whitespaceTail handles `\s+(?!\S)|\s+` at i, where s[i] is whitespace:
// the whole run when it reaches the end of s or is a single rune, otherwise
// the run minus its last rune (so that rune can start the next match, as in
// " word").
func whitespaceTail(s string, i, e int) int {
	if e == len(s) {
		return e
	}
	if last := lastRuneStart(s, e); last > i {
		return last
	}
	return e
}

// matchGPT2 implements
// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
func matchGPT2(s string, i int) int {
	r, w := runeAt(s, i)
	if r == '\'' {
		if e := contractionEnd(s, i, false); e > 0 {
			return e
		}
	}
	for _, class := range [...]func(rune) bool{isLetter, isNumber, isOther} {
		if r == ' ' {
			if e := runEnd(s, i+1, class); e > i+1 {
				return e
			}
		}
		if e := runEnd(s, i, class); e > i {
			return e
		}
	}
	// r is whitespace.
	return whitespaceTail(s, i, runEnd(s, i+w, isSpace))
}

// matchLlama3 implements the Llama-3 pattern (maxDigits 3) and the Qwen2
// pattern (maxDigits 1):
// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,maxDigits}|
// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
func matchLlama3(s string, i int, maxDigits int) int {
	r, w := runeAt(s, i)
	if r == '\'' {
		if e := contractionEnd(s, i, true); e > 0 {
			return e
		}
	}
	// [^\r\n\p{L}\p{N}]?\p{L}+ : the optional rune is taken when a letter
	// follows it; without it the match needs a letter at i.
	if !isCRLF(r) && !isLetter(r) && !isNumber(r) {
		if e := runEnd(s, i+w, isLetter); e > i+w {
			return e
		}
	}
	if isLetter(r) {
		return runEnd(s, i, isLetter)
	}
	if isNumber(r) {
		return runEndMax(s, i, isNumber, maxDigits)
	}
	// ` ?[^\s\p{L}\p{N}]+[\r\n]*`
	if r == ' ' {
		if e := runEnd(s, i+1, isOther); e > i+1 {
			return runEnd(s, e, isCRLF)
		}
	}
	if isOther(r) {
		return runEnd(s, runEnd(s, i, isOther), isCRLF)
	}
	// r is whitespace; e is the end of the whitespace run.
	e := runEnd(s, i+w, isSpace)
	// `\s*[\r\n]+`: \s* backs off until [\r\n]+ can match, which first
	// happens at the last \r or \n of the run; the match ends right after
	// it (the rune after it is not \r or \n, or it would be the last one).
	for j := e; j > i; {
		r, w := utf8.DecodeLastRuneInString(s[:j])
		if isCRLF(r) {
			return j
		}
		j -= w
	}
	return whitespaceTail(s, i, e)
}
