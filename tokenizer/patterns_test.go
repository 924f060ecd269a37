package tokenizer

import (
	"math/rand/v2"
	"regexp"
	"regexp/syntax"
	"slices"
	"strings"
	"testing"
	"unicode"
)

// refRegex is a slow reference for the split patterns: a plain backtracking
// matcher (like Oniguruma) over the syntax tree Go's parser builds. Go's
// parser rejects (?!\S), so refCompile rewrites it to `$` first and the
// matcher gives OpEndText the meaning "not followed by a non-space" (the
// patterns use no real `$`). \s becomes the White_Space class explicitly,
// since Go's \s is ASCII only.
type refRegex struct{ re *syntax.Regexp }

func refCompile(t testing.TB, pattern string) *refRegex {
	t.Helper()
	p := strings.ReplaceAll(pattern, `(?!\S)`, `$`)
	var sb strings.Builder
	inClass := false
	for i := 0; i < len(p); i++ {
		switch {
		case p[i] == '\\' && i+1 < len(p) && p[i+1] == 's':
			if inClass {
				sb.WriteString(uniSpace)
			} else {
				sb.WriteString("[" + uniSpace + "]")
			}
			i++
		case p[i] == '\\' && i+1 < len(p):
			sb.WriteString(p[i : i+2])
			i++
		case p[i] == '[':
			inClass = true
			sb.WriteByte('[')
		case p[i] == ']':
			inClass = false
			sb.WriteByte(']')
		default:
			sb.WriteByte(p[i])
		}
	}
	re, err := syntax.Parse(sb.String(), syntax.Perl)
	if err != nil {
		t.Fatalf("reference parse of %q: %v", sb.String(), err)
	}
	return &refRegex{re}
}

// match calls k with every end position at which re can match s[i:], in
// backtracking order, until k returns true.
func refMatch(re *syntax.Regexp, s []rune, i int, k func(int) bool) bool {
	switch re.Op {
	case syntax.OpEmptyMatch:
		return k(i)
	case syntax.OpEndText: // stands for (?!\S)
		if i == len(s) || unicode.IsSpace(s[i]) {
			return k(i)
		}
		return false
	case syntax.OpLiteral:
		for n, r := range re.Rune {
			if i+n >= len(s) {
				return false
			}
			c := s[i+n]
			if c != r && !(re.Flags&syntax.FoldCase != 0 && foldSame(c, r)) {
				return false
			}
		}
		return k(i + len(re.Rune))
	case syntax.OpCharClass:
		if i >= len(s) {
			return false
		}
		for n := 0; n < len(re.Rune); n += 2 {
			if s[i] >= re.Rune[n] && s[i] <= re.Rune[n+1] {
				return k(i + 1)
			}
		}
		return false
	case syntax.OpCapture:
		return refMatch(re.Sub[0], s, i, k)
	case syntax.OpConcat:
		var seq func(n, i int) bool
		seq = func(n, i int) bool {
			if n == len(re.Sub) {
				return k(i)
			}
			return refMatch(re.Sub[n], s, i, func(j int) bool { return seq(n+1, j) })
		}
		return seq(0, i)
	case syntax.OpAlternate:
		for _, sub := range re.Sub {
			if refMatch(sub, s, i, k) {
				return true
			}
		}
		return false
	case syntax.OpQuest:
		return refMatch(re.Sub[0], s, i, k) || k(i)
	case syntax.OpStar, syntax.OpPlus, syntax.OpRepeat:
		lo, hi := 0, -1
		switch re.Op {
		case syntax.OpPlus:
			lo = 1
		case syntax.OpRepeat:
			lo, hi = re.Min, re.Max
		}
		var rep func(n, i int) bool
		rep = func(n, i int) bool {
			if hi < 0 || n < hi {
				// Greedy: one more repetition first (never an empty one).
				if refMatch(re.Sub[0], s, i, func(j int) bool { return j > i && rep(n+1, j) }) {
					return true
				}
			}
			return n >= lo && k(i)
		}
		return rep(0, i)
	}
	panic("reference matcher: unsupported op " + re.Op.String())
}

func foldSame(a, b rune) bool {
	for f := unicode.SimpleFold(b); f != b; f = unicode.SimpleFold(f) {
		if f == a {
			return true
		}
	}
	return false
}

// findAll returns the leftmost-first matches of the reference in s as byte
// spans (no empty matches occur in the patterns tested).
func (r *refRegex) findAll(s string) []span {
	rs := []rune(s)
	off := make([]int, len(rs)+1) // rune index -> byte offset
	b := 0
	for n, c := range rs {
		off[n] = b
		b += len(string(c))
	}
	off[len(rs)] = b
	var out []span
	for i := 0; i < len(rs); {
		end := -1
		refMatch(r.re, rs, i, func(j int) bool { end = j; return true })
		if end <= i {
			i++
			continue
		}
		out = append(out, span{off[i], off[end], true})
		i = end
	}
	return out
}

// alphabet of the random strings: every class the patterns distinguish,
// the contraction letters in both cases (and ſ, which folds to s), and
// multi-byte runes.
var patternAlphabet = []rune(" \t\n\r\v\u00a0\u3000\u2028'''sStTrReEvVmMlLdDſ ab Zé中ج0123456789²Ⅻ٣.,!?-_\"(😀\u0301\u200b")

func randomText(rng *rand.Rand, alphabet []rune, maxLen int) string {
	n := rng.IntN(maxLen + 1)
	rs := make([]rune, n)
	for k := range rs {
		rs[k] = alphabet[rng.IntN(len(alphabet))]
	}
	return string(rs)
}

func TestScannersMatchReference(t *testing.T) {
	for _, tc := range []struct{ name, pattern string }{
		{"gpt2", gpt2Pattern}, {"llama3", llama3Pattern}, {"qwen2", qwen2Pattern},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref := refCompile(t, tc.pattern)
			scan := knownScanner(tc.pattern)
			if scan == nil {
				t.Fatal("pattern not recognised")
			}
			rng := rand.New(rand.NewPCG(1, uint64(len(tc.pattern))))
			for iter := 0; iter < 4000; iter++ {
				s := randomText(rng, patternAlphabet, 24)
				got := scanAll(scan, s, nil)
				want := ref.findAll(s)
				if !slices.Equal(got, want) {
					t.Fatalf("%q:\n scanner   %q\n reference %q", s, pieces(s, got), pieces(s, want))
				}
			}
		})
	}
}

func pieces(s string, spans []span) []string {
	out := make([]string, len(spans))
	for k, sp := range spans {
		out[k] = s[sp.start:sp.end]
	}
	return out
}

// TestReferenceMatchesGoRegexp validates the reference matcher itself on
// lookahead-free versions of the patterns, which Go's regexp can run.
func TestReferenceMatchesGoRegexp(t *testing.T) {
	for _, pattern := range []string{gpt2Pattern, llama3Pattern, qwen2Pattern} {
		noLook := strings.Replace(pattern, `|\s+(?!\S)`, ``, 1)
		ref := refCompile(t, noLook)
		re := regexp.MustCompile(strings.ReplaceAll(strings.ReplaceAll(noLook, `[^\s`, `[^`+uniSpace), `\s`, `[`+uniSpace+`]`))
		rng := rand.New(rand.NewPCG(2, uint64(len(pattern))))
		for iter := 0; iter < 2000; iter++ {
			s := randomText(rng, patternAlphabet, 24)
			var want []span
			for _, m := range re.FindAllStringIndex(s, -1) {
				want = append(want, span{m[0], m[1], true})
			}
			if got := ref.findAll(s); !slices.Equal(got, want) {
				t.Fatalf("pattern %q on %q:\n reference %q\n regexp    %q", noLook, s, pieces(s, got), pieces(s, want))
			}
		}
	}
}

// Splits worked out by hand from the regexes.
func TestScannerExamples(t *testing.T) {
	cases := []struct {
		pattern, text string
		want          []string
	}{
		{gpt2Pattern, "Hello world", []string{"Hello", " world"}},
		{gpt2Pattern, "I'm  here\n", []string{"I", "'m", " ", " here", "\n"}},
		{gpt2Pattern, "DON'T", []string{"DON", "'", "T"}},
		{gpt2Pattern, "x   ", []string{"x", "   "}},
		{gpt2Pattern, "a\t b", []string{"a", "\t", " b"}},
		{gpt2Pattern, "12345 !!?", []string{"12345", " !!?"}},
		{llama3Pattern, "DON'T", []string{"DON", "'T"}},
		{llama3Pattern, "12345", []string{"123", "45"}},
		{llama3Pattern, "(foo) bar", []string{"(foo", ")", " bar"}},
		{llama3Pattern, "a  \n\n  b", []string{"a", "  \n\n", " ", " b"}},
		{llama3Pattern, "x;\n\ny", []string{"x", ";\n\n", "y"}},
		{qwen2Pattern, "12345", []string{"1", "2", "3", "4", "5"}},
		{qwen2Pattern, "it'S", []string{"it", "'S"}},
	}
	for _, c := range cases {
		got := pieces(c.text, scanAll(knownScanner(c.pattern), c.text, nil))
		if !slices.Equal(got, c.want) {
			t.Errorf("%.12s... on %q: got %q, want %q", c.pattern, c.text, got, c.want)
		}
	}
}

func TestCompileRegex(t *testing.T) {
	re, err := compileRegex(`\s+|[^\s\d]+|\d+`)
	if err != nil {
		t.Fatal(err)
	}
	// U+3000 and U+00A0 are \s, Arabic-Indic digits are \d, as in Oniguruma.
	got := re.FindAllString("ab\u3000\u00a0٣4x", -1)
	if want := []string{"ab", "\u3000\u00a0", "٣4", "x"}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	for _, bad := range []string{`\s+(?!\S)`, `(?<=a)b`, `[^\S]`, `(a)\1`} {
		if _, err := compileRegex(bad); err == nil {
			t.Errorf("%q: compiled, want an error", bad)
		}
	}
}
