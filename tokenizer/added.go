package tokenizer

import (
	"unicode"
	"unicode/utf8"
)

// addedToken is one entry of tokenizer.json's added_tokens.
type addedToken struct {
	id      int
	content string
	special bool
	// lstrip/rstrip: the match also swallows the whitespace before/after it.
	lstrip, rstrip bool
	// singleWord: only match when not glued to a word character on either side.
	singleWord bool
	// normalized: matched in the normalized text (else in the raw text).
	normalized bool
}

// addedMatcher finds added tokens in text: leftmost match first, longest
// among those starting there (HF uses Aho-Corasick with LeftmostLongest).
// It is a byte trie; tokens with empty content are never matched.
type addedMatcher struct {
	nodes []trieNode
	first [256]bool // bytes that start some token
}

type trieNode struct {
	next map[byte]int32
	tok  *addedToken // token ending here, nil if none
}

func newAddedMatcher() *addedMatcher {
	return &addedMatcher{nodes: []trieNode{{}}}
}

// add inserts tok under the string pattern (its content, or its
// normalized content for normalized tokens). A later token with the same
// pattern replaces an earlier one.
func (m *addedMatcher) add(pattern string, tok *addedToken) {
	if pattern == "" {
		return
	}
	m.first[pattern[0]] = true
	n := 0
	for k := 0; k < len(pattern); k++ {
		c := pattern[k]
		nx, ok := m.nodes[n].next[c]
		if !ok {
			if m.nodes[n].next == nil {
				m.nodes[n].next = map[byte]int32{}
			}
			nx = int32(len(m.nodes))
			m.nodes[n].next[c] = nx
			m.nodes = append(m.nodes, trieNode{})
		}
		n = int(nx)
	}
	m.nodes[n].tok = tok
}

func (m *addedMatcher) empty() bool { return len(m.nodes) == 1 }

// longestAt returns the longest token matching s at i and its end.
func (m *addedMatcher) longestAt(s string, i int) (*addedToken, int) {
	var best *addedToken
	bestEnd := -1
	n := 0
	for k := i; k < len(s); k++ {
		nx, ok := m.nodes[n].next[s[k]]
		if !ok {
			break
		}
		n = int(nx)
		if t := m.nodes[n].tok; t != nil {
			best, bestEnd = t, k+1
		}
	}
	return best, bestEnd
}

// segment is a part of the input: either text still to be tokenized or one
// added token.
type segment struct {
	text  string
	tok   *addedToken // nil for text
	first bool        // starts at offset 0 of the input
}

// split cuts s into text and added-token segments, following HF's
// AddedVocabulary::find_matches (single_word, lstrip, rstrip). Empty text
// segments are left out.
func (m *addedMatcher) split(s string, first bool, dst []segment) []segment {
	if m.empty() {
		if s != "" {
			dst = append(dst, segment{text: s, first: first})
		}
		return dst
	}
	done := 0 // end of the last emitted segment
	for i := 0; i < len(s); {
		if !m.first[s[i]] {
			i++
			continue
		}
		tok, end := m.longestAt(s, i)
		if tok == nil {
			i++
			continue
		}
		start, stop := i, end
		i = end // the search resumes after the match, whatever happens to it
		if tok.singleWord {
			startOK := start == 0 || !endsWithWordChar(s[:start])
			stopOK := stop == len(s) || !startsWithWordChar(s[stop:])
			if !startOK || !stopOK {
				continue
			}
		}
		if start < done {
			// An rstrip of the previous match swallowed the start of this
			// one; HF would emit overlapping segments here, we skip it.
			continue
		}
		if tok.lstrip {
			start = max(spaceSuffixStart(s[:start]), done)
		}
		if tok.rstrip {
			stop += spacePrefixLen(s[stop:])
			i = stop
		}
		if start > done {
			dst = append(dst, segment{text: s[done:start], first: first && done == 0})
		}
		dst = append(dst, segment{text: s[start:stop], tok: tok})
		done = stop
	}
	if done < len(s) {
		dst = append(dst, segment{text: s[done:], first: first && done == 0})
	}
	return dst
}

// isWordChar approximates the Rust regex crate's Unicode \w.
func isWordChar(r rune) bool {
	return unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r) ||
		unicode.Is(unicode.Pc, r) || unicode.Is(unicode.Nl, r) || r == 0x200C || r == 0x200D
}

func endsWithWordChar(s string) bool {
	r, w := utf8.DecodeLastRuneInString(s)
	return w > 0 && isWordChar(r)
}

func startsWithWordChar(s string) bool {
	r, w := utf8.DecodeRuneInString(s)
	return w > 0 && isWordChar(r)
}

// spaceSuffixStart returns where the trailing whitespace of s starts.
func spaceSuffixStart(s string) int {
	for len(s) > 0 {
		r, w := utf8.DecodeLastRuneInString(s)
		if !unicode.IsSpace(r) {
			break
		}
		s = s[:len(s)-w]
	}
	return len(s)
}

// spacePrefixLen returns the length of the leading whitespace of s.
func spacePrefixLen(s string) int {
	n := 0
	for n < len(s) {
		r, w := utf8.DecodeRuneInString(s[n:])
		if !unicode.IsSpace(r) {
			break
		}
		n += w
	}
	return n
}
