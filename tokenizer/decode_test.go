package tokenizer

import (
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
)

var fixtureNames = []string{"gpt2_tiny", "llama3_tiny", "sp_tiny", "metaspace_tiny"}

// streamDecode decodes ids through a StreamDecoder and also returns the
// pieces Next produced.
func streamDecode(tok *Tokenizer, ids []int, skipSpecial bool) (string, []string) {
	d := tok.NewStreamDecoder(skipSpecial)
	var parts []string
	for _, id := range ids {
		parts = append(parts, d.Next(id))
	}
	parts = append(parts, d.Flush())
	return strings.Join(parts, ""), parts
}

// randomIDs draws ids biased towards the interesting ones: byte tokens and
// merges that make up multi-byte characters, special tokens, unknown ids.
func randomIDs(rng *rand.Rand, tok *Tokenizer, n int) []int {
	out := make([]int, n)
	for k := range out {
		switch rng.IntN(10) {
		case 0:
			out[k] = tok.VocabSize() - 1 - rng.IntN(4) // added tokens sit at the end
		case 1:
			out[k] = rng.IntN(tok.VocabSize()+3) - 1 // includes unknown ids
		case 2, 3:
			out[k] = 0xC0 + rng.IntN(0x40) // lead bytes (byte-level and <0xNN> alike)
		case 4, 5, 6:
			out[k] = 0x80 + rng.IntN(0x40) // continuation bytes
		default:
			out[k] = rng.IntN(tok.VocabSize())
		}
	}
	return out
}

// TestStreamMatchesDecode: the concatenation of Next results and Flush is
// Decode of the whole sequence, and Next never returns invalid UTF-8 or
// text Decode does not have at that point.
func TestStreamMatchesDecode(t *testing.T) {
	for _, name := range fixtureNames {
		tok := loadFixture(t, name, nil)
		rng := rand.New(rand.NewPCG(7, uint64(len(name))))
		for iter := 0; iter < 400; iter++ {
			seq := randomIDs(rng, tok, rng.IntN(25))
			for _, skip := range []bool{false, true} {
				want := tok.Decode(seq, skip)
				got, parts := streamDecode(tok, seq, skip)
				if got != want {
					t.Fatalf("%s ids %v skip %v:\n stream %q (parts %q)\n Decode %q", name, seq, skip, got, parts, want)
				}
				prefix := ""
				for _, p := range parts {
					if !utf8.ValidString(p) {
						t.Fatalf("%s ids %v: Next returned invalid UTF-8 %q", name, seq, p)
					}
					prefix += p
				}
				if !strings.HasPrefix(want, prefix) {
					t.Fatalf("%s ids %v: parts %q are not a prefix of %q", name, seq, parts, want)
				}
			}
		}
	}
}

// TestStreamHoldsBackIncompleteCharacters: an emoji split over tokens
// appears once, when its last byte arrives.
func TestStreamHoldsBackIncompleteCharacters(t *testing.T) {
	for _, c := range []struct {
		name   string
		tokens []string
	}{
		// 😀 = F0 9F 98 80, after "a".
		{"gpt2_tiny", []string{"a", "ðŁ", "ĺ", "Ģ", "b"}},
		{"sp_tiny", []string{"▁a", "<0xF0>", "<0x9F>", "<0x98>", "<0x80>", "b"}},
	} {
		tok := loadFixture(t, c.name, nil)
		_, parts := streamDecode(tok, ids(t, tok, c.tokens...), false)
		want := []string{"a", "", "", "😀", "b", ""}
		if c.name == "sp_tiny" {
			// The byte run ends only when "b" arrives.
			want = []string{"a", "", "", "", "", "😀b", ""}
		}
		if strings.Join(parts, "|") != strings.Join(want, "|") {
			t.Errorf("%s: parts %q, want %q", c.name, parts, want)
		}
	}
	// Invalid sequences are settled as soon as they cannot be completed.
	tok := loadFixture(t, "gpt2_tiny", nil)
	_, parts := streamDecode(tok, ids(t, tok, "ðŁ", "a"), false)
	if want := []string{"", "\uFFFDa", ""}; strings.Join(parts, "|") != strings.Join(want, "|") {
		t.Errorf("parts %q, want %q", parts, want)
	}
}

// TestDecoderSteps checks HF decode_chain semantics on hand-made lists.
func TestDecoderSteps(t *testing.T) {
	cases := []struct {
		step decoderStep
		in   []string
		want []string
	}{
		{byteFallbackDecoder{}, []string{"a", "<0xE2>", "<0x96>", "<0x81>", "b"}, []string{"a", "▁", "b"}},
		// An invalid run gives one U+FFFD per byte.
		{byteFallbackDecoder{}, []string{"<0xE2>", "<0x41>", "x", "<0x+A>", "<0xzz>"}, []string{"\uFFFD", "\uFFFD", "x", "\n", "<0xzz>"}},
		{&stripDecoder{' ', 1, 0}, []string{"  a ", " b"}, []string{" a ", "b"}},
		{&stripDecoder{' ', 2, 2}, []string{"   a   ", " ", "   "}, []string{" a ", "", ""}},
		{&metaspaceDecoder{'▁', true}, []string{"▁a▁b", "▁c"}, []string{"ab", " c"}},
		{&metaspaceDecoder{'▁', false}, []string{"▁a", "▁c"}, []string{" a", " c"}},
		{fuseDecoder{}, []string{"a", "b"}, []string{"ab"}},
		{byteLevelDecoder{}, []string{"Ġhi", "Ċ", "ðŁ", "ĺ", "Ģ", "日本"}, []string{" hi\n😀日本"}},
	}
	for _, c := range cases {
		got := c.step.decodeChain(c.in)
		if strings.Join(got, "|") != strings.Join(c.want, "|") {
			t.Errorf("%T %q: got %q, want %q", c.step, c.in, got, c.want)
		}
		// The stream form gives the same text.
		var sb strings.Builder
		st := c.step.stream()
		for _, tok := range c.in {
			st.push(fragment{tok, true, true}, func(f fragment) { sb.WriteString(f.text) })
		}
		st.flush(func(f fragment) { sb.WriteString(f.text) })
		if sb.String() != strings.Join(c.want, "") {
			t.Errorf("%T %q: stream %q, want %q", c.step, c.in, sb.String(), strings.Join(c.want, ""))
		}
	}
}

// TestAppendLossy: one U+FFFD per maximal invalid subsequence, as Rust's
// String::from_utf8_lossy.
func TestAppendLossy(t *testing.T) {
	cases := []struct{ in, want string }{
		{"abc", "abc"},
		{"\xF0\x9F\x98", "\uFFFD"},             // truncated 4-byte sequence
		{"\xF0\x9F\x98a", "\uFFFDa"},           // ... followed by ASCII
		{"\xE0\x80", "\uFFFD\uFFFD"},           // E0 needs A0..BF next
		{"\xC0\xAF", "\uFFFD\uFFFD"},           // C0 never leads
		{"\xED\xA0\x80", "\uFFFD\uFFFD\uFFFD"}, // surrogate
		{"\x80\x80", "\uFFFD\uFFFD"},
		{"a\xF4\x90\x80\x80", "a\uFFFD\uFFFD\uFFFD\uFFFD"}, // above U+10FFFF
		{"\xE2\x96\x81\xE2\x96", "▁\uFFFD"},
	}
	for _, c := range cases {
		if got := string(appendLossy(nil, []byte(c.in))); got != c.want {
			t.Errorf("lossy(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	tails := []struct {
		in   string
		want int
	}{
		{"a", 0}, {"a\xF0", 1}, {"a\xF0\x9F", 2}, {"a\xF0\x9F\x98", 3}, {"\xF0\x9F\x98\x80", 0},
		{"\xE0\x80", 0}, {"\x80", 0}, {"\xC3", 1}, {"\xED\xA0", 0},
	}
	for _, c := range tails {
		if got := incompleteTail([]byte(c.in)); got != c.want {
			t.Errorf("incompleteTail(%q) = %d, want %d", c.in, got, c.want)
		}
	}
}

// TestRoundTrip: byte-level tokenizers give back any valid UTF-8 text.
func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	alphabet := append([]rune("<|endoftext|>hello the 's"), patternAlphabet...)
	for _, name := range []string{"gpt2_tiny", "llama3_tiny"} {
		tok := loadFixture(t, name, nil)
		for iter := 0; iter < 500; iter++ {
			s := randomText(rng, alphabet, 40)
			if got := tok.Decode(tok.Encode(s, false), false); got != s {
				t.Fatalf("%s: %q decodes back to %q", name, s, got)
			}
		}
	}
}
