package eval

import "testing"

// Cases checked against NVIDIA RULER's scripts/eval/evaluate.py and
// scripts/eval/synthetic/constants.py (commit c3f5e3b4); expected values worked out by hand
// from RULER's rules: strip, control characters -> "\n", strip; case-insensitive substring
// containment; task score = round(mean * 100, 2).

func TestPostprocessRULER(t *testing.T) {
	cases := []struct{ in, want string }{
		{"\x1c 42\x1f", "42"},              // \x1c-\x1f are Python whitespace, Go's TrimSpace misses them
		{"\u00a0a\u3000", "a"},             // Unicode spaces stripped at both ends
		{"a\x1cb", "a\nb"},                 // inner control characters become newlines
		{"a\r\nb", "a\n\nb"},               // one newline per control character, no collapsing
		{"a\x7f", "a\x7f"},                 // DEL is outside [\x00-\x1f], kept
		{"\u200ba", "\u200ba"},             // zero-width space is not whitespace in either language
		{" \t\n ", ""},                     // all whitespace -> empty (a "null" prediction in RULER)
		{"first\nsecond", "first\nsecond"}, // no cut at the first newline
	}
	for _, c := range cases {
		if got := Postprocess(c.in); got != c.want {
			t.Errorf("Postprocess(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestStringMatchRULER(t *testing.T) {
	cases := []struct {
		pred      string
		gold      []string
		all, part float64
	}{
		{"a", []string{"a", "a", "b"}, 2.0 / 3, 1},    // duplicate gold strings count separately
		{"x", []string{""}, 1, 1},                     // "" is contained in every string
		{"12345", []string{"234", "99"}, 0.5, 1},      // substring, not word, match
		{"ÉCOLE", []string{"école"}, 1, 1},            // Unicode lowercasing on both sides
		{"none here", []string{"abc", "def"}, 0, 0},   // no hit
		{"DEF and Abc", []string{"abc", "def"}, 1, 1}, // order does not matter
		{"anything", nil, 0, 0},                       // RULER raises here; lukv scores 0
	}
	for _, c := range cases {
		if got := StringMatchAll(c.pred, c.gold); got != c.all {
			t.Errorf("StringMatchAll(%q, %q) = %v, want %v", c.pred, c.gold, got, c.all)
		}
		if got := StringMatchPart(c.pred, c.gold); got != c.part {
			t.Errorf("StringMatchPart(%q, %q) = %v, want %v", c.pred, c.gold, got, c.part)
		}
	}
}

func TestScoreRULER(t *testing.T) {
	// RULER's synthetic.yaml maps each task to a family; only "qa" uses string_match_part.
	want := map[string]string{"qa_1": "string_match_part", "qa_2": "string_match_part"}
	for _, task := range Tasks() {
		want[task] = "string_match_all"
	}
	for task, m := range want {
		if got := Metric(task); got != m {
			t.Errorf("Metric(%q) = %q, want %q", task, got, m)
		}
	}
	gold := []string{"a\nb", "zzz"}
	// Postprocessing runs before matching: the tab becomes "\n", so "a\nb" is found.
	if got := Score("vt", " a\tb ", gold); got != 0.5 {
		t.Errorf("Score(vt) = %v, want 0.5", got)
	}
	if got := Score("qa_1", " a\tb ", gold); got != 1 {
		t.Errorf("Score(qa_1) = %v, want 1", got)
	}
	if got := StringMatchAll(" a\tb ", gold); got != 0 {
		t.Errorf("unprocessed StringMatchAll = %v, want 0", got)
	}
}

func TestTaskScoreRULER(t *testing.T) {
	ones := func(k, n int) []float64 {
		s := make([]float64, n)
		for i := 0; i < k; i++ {
			s[i] = 1
		}
		return s
	}
	cases := []struct {
		name   string
		scores []float64
		want   float64
	}{
		{"empty", nil, 0},
		{"half", []float64{0.5}, 50},
		{"thirds", []float64{1.0 / 3, 1.0 / 3, 1}, 55.56},
		{"mixed", []float64{2.0 / 3, 0.75, 0.25}, 55.56},
		{"exact tie 3.125 to even", ones(1, 32), 3.12},
		{"exact tie 9.375 to even", ones(3, 32), 9.38},
		{"1.115 is below the tie in binary", []float64{0.01115}, 1.11}, // naive x*100 rounding gives 1.12
		{"2.675 is below the tie in binary", []float64{0.02675}, 2.67},
		{"all correct", ones(20, 20), 100},
	}
	for _, c := range cases {
		if got := TaskScore(c.scores); got != c.want {
			t.Errorf("%s: TaskScore = %v, want %v", c.name, got, c.want)
		}
	}
}
