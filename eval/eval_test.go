package eval

import (
	"reflect"
	"strings"
	"testing"

	"github.com/lukv/lukv/tokenizer"
)

// wsTok is a fake tokenizer: one token per whitespace-separated field, plus BOS.
type wsTok struct{}

func (wsTok) Encode(s string, bos bool) []int {
	n := len(strings.Fields(s))
	if bos {
		n++
	}
	return make([]int, n)
}

func newGen(t *testing.T, tok interface{ Encode(string, bool) []int }) *Generator {
	t.Helper()
	hay, err := ReadLines("testdata/haystack.txt")
	if err != nil {
		t.Fatal(err)
	}
	words, err := ReadLines("testdata/words.txt")
	if err != nil {
		t.Fatal(err)
	}
	return &Generator{Tokenizer: tok, Haystack: hay, Words: words, Seed: 42}
}

func TestMakeAllTasks(t *testing.T) {
	g := newGen(t, wsTok{})
	for _, task := range Tasks() {
		for _, length := range []int{2048, 3000} {
			s, err := g.Make(task, length, 3)
			if err != nil {
				t.Fatalf("%s/%d: %v", task, length, err)
			}
			if s.Prompt != s.Context+s.Question {
				t.Errorf("%s: Prompt != Context+Question", task)
			}
			n := len(wsTok{}.Encode(s.Prompt, true))
			if n+s.MaxNewTokens > length {
				t.Errorf("%s/%d: %d prompt + %d new tokens over budget", task, length, n, s.MaxNewTokens)
			}
			if float64(n+s.MaxNewTokens) < 0.95*float64(length) {
				t.Errorf("%s/%d: %d prompt + %d new tokens far under budget", task, length, n, s.MaxNewTokens)
			}
			if len(s.Gold) == 0 {
				t.Fatalf("%s: no gold", task)
			}
			for _, gd := range s.Gold {
				if !strings.Contains(s.Context[strings.LastIndex(s.Context, "\n\n")+1:], gd) {
					t.Errorf("%s: gold %q not in context", task, gd)
				}
				if strings.HasPrefix(task, "niah") && strings.Count(s.Context, gd) != 1 {
					t.Errorf("%s: gold %q appears %d times in context", task, gd, strings.Count(s.Context, gd))
				}
			}
			again, _ := g.Make(task, length, 3)
			if !reflect.DeepEqual(s, again) {
				t.Errorf("%s: not deterministic", task)
			}
			other, _ := g.Make(task, length, 4)
			if other.Prompt == s.Prompt {
				t.Errorf("%s: index 3 and 4 give the same prompt", task)
			}
		}
	}
}

func TestTemplatesAndGoldCounts(t *testing.T) {
	g := newGen(t, wsTok{})
	want := map[string]int{"niah_single_1": 1, "niah_multikey_1": 1, "niah_multivalue": 4, "niah_multiquery": 4, "vt": 5, "cwe": 10, "fwe": 3}
	for task, n := range want {
		s, err := g.Make(task, 2048, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(s.Gold) != n {
			t.Errorf("%s: %d gold, want %d", task, len(s.Gold), n)
		}
	}
	s, _ := g.Make("niah_single_2", 2048, 0)
	if !strings.HasPrefix(s.Prompt, "A special magic number is hidden within the following text.") ||
		!strings.HasSuffix(s.Prompt, " mentioned in the provided text is") {
		t.Errorf("niah_single_2 template: %q ... %q", s.Prompt[:80], s.Prompt[len(s.Prompt)-60:])
	}
	s, _ = g.Make("niah_multivalue", 2048, 0)
	if !strings.HasPrefix(s.Prompt, "Some special magic numbers are hidden") || !strings.HasSuffix(s.Prompt, " are") {
		t.Errorf("niah_multivalue template wrong")
	}
	s, _ = g.Make("niah_single_3", 2048, 0)
	if len(s.Gold[0]) != 36 || s.Gold[0][14] != '4' {
		t.Errorf("uuid gold %q is not a v4 uuid", s.Gold[0])
	}
	s, _ = g.Make("vt", 2048, 0)
	if !strings.HasSuffix(s.Prompt, "they are:") || !strings.Contains(s.Context, "VAR "+s.Gold[1]+" = VAR "+s.Gold[0]) {
		t.Errorf("vt chain or prefix wrong")
	}
}

func TestDepthControl(t *testing.T) {
	g := newGen(t, wsTok{})
	for _, idx := range []int{0, 20, 39} {
		s, err := g.Make("niah_single_1", 4096, idx)
		if err != nil {
			t.Fatal(err)
		}
		frac := float64(strings.Index(s.Context, s.Gold[0])) / float64(len(s.Context))
		d := float64(Depths[idx]) / 100
		if frac < d-0.05 || frac > d+0.05 {
			t.Errorf("index %d: needle at %.2f of context, want ~%.2f", idx, frac, d)
		}
	}
}

func TestErrors(t *testing.T) {
	g := newGen(t, wsTok{})
	if _, err := g.Make("nope", 1024, 0); err == nil {
		t.Error("unknown task accepted")
	}
	if _, err := g.Make("niah_single_2", 100, 0); err == nil {
		t.Error("too small length accepted")
	}
	g.Haystack = nil
	if _, err := g.Make("niah_single_2", 1024, 0); err == nil {
		t.Error("missing haystack accepted")
	}
	if _, err := ReadLines("testdata/missing.txt"); err == nil {
		t.Error("missing file accepted")
	}
}

func TestScoring(t *testing.T) {
	gold := []string{"1234567", "7654321"}
	cases := []struct {
		pred      string
		all, part float64
	}{
		{" 1234567, 7654321.", 1, 1},
		{" 1234567 and nothing else", 0.5, 1},
		{"none", 0, 0},
	}
	for _, c := range cases {
		if got := StringMatchAll(c.pred, gold); got != c.all {
			t.Errorf("all(%q) = %v want %v", c.pred, got, c.all)
		}
		if got := StringMatchPart(c.pred, gold); got != c.part {
			t.Errorf("part(%q) = %v want %v", c.pred, got, c.part)
		}
	}
	if StringMatchAll("ABC-def", []string{"abc-DEF"}) != 1 {
		t.Error("not case-insensitive")
	}
	if got := Postprocess("  a\tb\x00c \n"); got != "a\nb\nc" {
		t.Errorf("Postprocess = %q", got)
	}
	if Score("niah_single_1", "x\n7654321", gold) != 0.5 || Metric("cwe") != "string_match_all" {
		t.Error("Score/Metric wrong")
	}
}

func TestRealTokenizer(t *testing.T) {
	tok, err := tokenizer.Load("../tests/testdata/tokenizers/bytelevel_llama3.tokenizer.json")
	if err != nil {
		t.Fatal(err)
	}
	g := newGen(t, tok)
	for _, task := range []string{"niah_single_2", "niah_multikey_2", "vt"} {
		s, err := g.Make(task, 4096, 1)
		if err != nil {
			t.Fatal(err)
		}
		n := len(tok.Encode(s.Prompt, true)) + s.MaxNewTokens
		if n > 4096 || n < 3900 {
			t.Errorf("%s: %d tokens for a 1024 budget", task, n)
		}
	}
}

func TestDepthsAndTasks(t *testing.T) {
	if len(Depths) != 40 || Depths[0] != 0 || Depths[39] != 100 || Depths[1] != 3 || Depths[20] != 51 {
		t.Errorf("Depths = %v", Depths)
	}
	if len(Tasks()) != 11 || Tasks()[0] != "niah_single_1" || Tasks()[10] != "fwe" {
		t.Errorf("Tasks = %v", Tasks())
	}
}
