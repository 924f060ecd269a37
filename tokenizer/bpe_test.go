package tokenizer

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nlpodyssey/gotokenizers/models/bpemodel"
)

// loadFixture loads testdata/<name>.tokenizer.json, after edit (if not nil)
// has changed its decoded JSON.
func loadFixture(t testing.TB, name string, edit func(m map[string]any)) *Tokenizer {
	t.Helper()
	path := "testdata/" + name + ".tokenizer.json"
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatal(err)
		}
		edit(m)
		if data, err = json.Marshal(m); err != nil {
			t.Fatal(err)
		}
	}
	tok, err := Parse(data, path)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func modelOf(m map[string]any) map[string]any { return m["model"].(map[string]any) }

// ids maps token strings to ids, failing on unknown ones; it keeps the
// expectations below readable.
func ids(t *testing.T, tok *Tokenizer, tokens ...string) []int {
	t.Helper()
	out := make([]int, len(tokens))
	for k, s := range tokens {
		id, ok := tok.TokenID(s)
		if !ok {
			t.Fatalf("fixture has no token %q", s)
		}
		out[k] = id
	}
	return out
}

// TestMergeMatchesGotokenizers checks our merge loop against gotokenizers'
// Word.MergeAll on random merge tables and words.
func TestMergeMatchesGotokenizers(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for iter := 0; iter < 300; iter++ {
		// Symbols 0..4 are characters; each merge makes a new symbol.
		nSym := 5
		merges := bpemodel.NewMergeMap()
		for r := 0; r < 12; r++ {
			a, b := rng.IntN(nSym), rng.IntN(nSym)
			if _, dup := merges.Get(a, b); dup {
				continue
			}
			merges.Set(a, b, bpemodel.MergeValue{Rank: r, ID: nSym})
			nSym++
		}
		for w := 0; w < 20; w++ {
			n := 1 + rng.IntN(30)
			syms := make([]bpeSymbol, n)
			ref := bpemodel.NewWordWithCapacity(n)
			for k := range syms {
				id := rng.IntN(5)
				syms[k] = bpeSymbol{id: id, prev: k - 1, next: k + 1, size: 1}
				ref.Add(id, 1)
			}
			syms[n-1].next = -1
			mergeSymbols(syms, merges)
			ref.MergeAll(merges, 0)
			var got, want []int
			for _, s := range syms {
				if s.size > 0 {
					got = append(got, s.id)
				}
			}
			for _, s := range *ref {
				want = append(want, s.ID)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("merge result %v, gotokenizers %v", got, want)
			}
		}
	}
}

// Expected ids are worked out by hand from the merge ranks of the fixture.
func TestBPEMergeOrder(t *testing.T) {
	tok := loadFixture(t, "gpt2_tiny", nil)
	cases := []struct {
		text string
		want []string
	}{
		// "h e" (rank 0) wins over "e ll", so "hello" never becomes "hell"+"o".
		{"hello", []string{"he", "ll", "o"}},
		// "l l" then "e ll": the merge made by the first creates the second.
		{"ell", []string{"ell"}},
		// " the": "h e" first, then "Ġ t", then "Ġt he".
		{" the", []string{"Ġthe"}},
		{"he's", []string{"he", "'s"}},
		// two spaces: the first stays alone, the second joins the word.
		{"  the", []string{"Ġ", "Ġthe"}},
		// 😀 is F0 9F 98 80; "ð Ł" merges the first two bytes.
		{"😀", []string{"ðŁ", "ĺ", "Ģ"}},
	}
	for _, c := range cases {
		if got, want := tok.Encode(c.text, false), ids(t, tok, c.want...); !slices.Equal(got, want) {
			t.Errorf("Encode(%q) = %v, want %v %q", c.text, got, want, c.want)
		}
	}
}

func TestIgnoreMerges(t *testing.T) {
	on := loadFixture(t, "llama3_tiny", nil)
	off := loadFixture(t, "llama3_tiny", func(m map[string]any) { modelOf(m)["ignore_merges"] = false })
	// "Ġabc" is in the vocabulary but no merge path leads to it.
	if got, want := on.Encode(" abc", false), ids(t, on, "Ġabc"); !slices.Equal(got, want) {
		t.Errorf("ignore_merges: got %v, want %v", got, want)
	}
	if got, want := off.Encode(" abc", false), ids(t, off, "Ġ", "ab", "c"); !slices.Equal(got, want) {
		t.Errorf("no ignore_merges: got %v, want %v", got, want)
	}
	// Numbers are split in threes, then merged.
	if got, want := on.Encode("12345", false), ids(t, on, "123", "4", "5"); !slices.Equal(got, want) {
		t.Errorf("12345: got %v, want %v", got, want)
	}
	if got, want := on.Encode("a\n\nb", false), ids(t, on, "a", "ĊĊ", "b"); !slices.Equal(got, want) {
		t.Errorf("newlines: got %v, want %v", got, want)
	}
}

func TestByteFallbackAndUnk(t *testing.T) {
	tok := loadFixture(t, "sp_tiny", nil)
	cases := []struct {
		text string
		want []string
	}{
		{"ab", []string{"▁ab"}},
		{"abc", []string{"▁", "abc"}},
		// é is not in the vocabulary: its UTF-8 bytes C3 A9.
		{"x é", []string{"▁x", "▁", "<0xC3>", "<0xA9>"}},
		{"", nil},
		{" ", []string{"▁▁"}},
	}
	for _, c := range cases {
		if got, want := tok.Encode(c.text, false), ids(t, tok, c.want...); !slices.Equal(got, want) {
			t.Errorf("Encode(%q) = %v, want %v %q", c.text, got, want, c.want)
		}
	}
	// Without byte fallback unknown characters become <unk>, fused or not.
	fused := loadFixture(t, "sp_tiny", func(m map[string]any) { modelOf(m)["byte_fallback"] = false })
	if got, want := fused.Encode("aéé", false), ids(t, fused, "▁a", "<unk>"); !slices.Equal(got, want) {
		t.Errorf("fuse_unk: got %v, want %v", got, want)
	}
	unfused := loadFixture(t, "sp_tiny", func(m map[string]any) {
		modelOf(m)["byte_fallback"] = false
		modelOf(m)["fuse_unk"] = false
	})
	if got, want := unfused.Encode("aéé", false), ids(t, unfused, "▁a", "<unk>", "<unk>"); !slices.Equal(got, want) {
		t.Errorf("no fuse_unk: got %v, want %v", got, want)
	}
	// Without unk token either, unknown characters are dropped (as in HF),
	// so their neighbours can merge.
	dropped := loadFixture(t, "sp_tiny", func(m map[string]any) {
		modelOf(m)["byte_fallback"] = false
		modelOf(m)["unk_token"] = nil
	})
	if got, want := dropped.Encode("aéb", false), ids(t, dropped, "▁ab"); !slices.Equal(got, want) {
		t.Errorf("no unk: got %v, want %v", got, want)
	}
}

// TestSubwordAffixes checks continuing_subword_prefix and
// end_of_word_suffix: the prefix goes on every character but the first,
// the suffix on the last, and merges drop the right token's prefix.
func TestSubwordAffixes(t *testing.T) {
	js := `{"model": {"type": "BPE", "continuing_subword_prefix": "##", "end_of_word_suffix": "</w>",
	  "vocab": {"a": 0, "##b": 1, "##c</w>": 2, "ab": 3, "abc</w>": 4, "##b</w>": 5},
	  "merges": ["a ##b", "ab ##c</w>"]}}`
	tok, err := Parse([]byte(js), "affix.json")
	if err != nil {
		t.Fatal(err)
	}
	if got := tok.Encode("abc", false); !slices.Equal(got, []int{4}) {
		t.Errorf("abc: got %v, want [4]", got)
	}
	if got := tok.Encode("ab", false); !slices.Equal(got, []int{0, 5}) {
		t.Errorf("ab: got %v, want [0 5]", got)
	}
}

// TestEncodeSpeed: 100k characters must encode well under a second, also
// for SentencePiece-style files where the whole text is one BPE word.
func TestEncodeSpeed(t *testing.T) {
	text := speedText(100_000)
	for _, name := range []string{"llama3_tiny", "sp_tiny"} {
		tok := loadFixture(t, name, nil)
		start := time.Now()
		got := tok.Encode(text, false)
		if el := time.Since(start); el > time.Second {
			t.Errorf("%s: encoding %d characters took %v", name, len([]rune(text)), el)
		}
		if len(got) == 0 {
			t.Errorf("%s: no ids", name)
		}
	}
}

func speedText(n int) string {
	rng := rand.New(rand.NewPCG(5, 6))
	words := []string{"the", "abc", "ab", "hello", "x", "12345", "Café", "中文", "😀", "\n", "don't", "ab!"}
	var sb strings.Builder
	for sb.Len() < n {
		sb.WriteString(words[rng.IntN(len(words))])
		sb.WriteByte(' ')
	}
	return sb.String()
}

func BenchmarkEncode(b *testing.B) {
	text := speedText(100_000)
	for _, name := range []string{"gpt2_tiny", "llama3_tiny", "sp_tiny"} {
		b.Run(fmt.Sprintf("%s/100kB", name), func(b *testing.B) {
			tok := loadFixture(b, name, nil)
			b.SetBytes(int64(len(text)))
			for b.Loop() {
				tok.Encode(text, false)
			}
		})
	}
}
