package eval

// LongBench (v1) metrics, written after THUDM/LongBench LongBench/metrics.py and eval.py,
// and the two Python packages they call: `rouge` 1.0.1 (pltrdy/rouge, rouge-l "f") and
// `fuzzywuzzy` (fuzz.ratio). Every function returns a score in [0, 1] for one prediction
// and one reference answer; LongBench reports 100 x the mean over samples of the max over
// a sample's answers (LongBenchScore does the per-sample part).

import (
	"math"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// longBenchOrder lists the LongBench (v1) datasets in pred.py's order, with eval.py's
// dataset2metric entry and the language.
var longBenchOrder = []struct {
	name, metric string
	english      bool
}{
	{"narrativeqa", "qa_f1_score", true},
	{"qasper", "qa_f1_score", true},
	{"multifieldqa_en", "qa_f1_score", true},
	{"multifieldqa_zh", "qa_f1_zh_score", false},
	{"hotpotqa", "qa_f1_score", true},
	{"2wikimqa", "qa_f1_score", true},
	{"musique", "qa_f1_score", true},
	{"dureader", "rouge_zh_score", false},
	{"gov_report", "rouge_score", true},
	{"qmsum", "rouge_score", true},
	{"multi_news", "rouge_score", true},
	{"vcsum", "rouge_zh_score", false},
	{"trec", "classification_score", true},
	{"triviaqa", "qa_f1_score", true},
	{"samsum", "rouge_score", true},
	{"lsht", "classification_score", false},
	{"passage_count", "count_score", true},
	{"passage_retrieval_en", "retrieval_score", true},
	{"passage_retrieval_zh", "retrieval_zh_score", false},
	{"lcc", "code_sim_score", true},
	{"repobench-p", "code_sim_score", true},
}

// longBenchMetrics maps eval.py's metric names to their Go implementations.
var longBenchMetrics = map[string]func(pred, gold string, allClasses []string) float64{
	"qa_f1_score":          func(p, g string, _ []string) float64 { return QAF1(p, g) },
	"qa_f1_zh_score":       func(p, g string, _ []string) float64 { return QAF1Zh(p, g) },
	"rouge_score":          func(p, g string, _ []string) float64 { return RougeL(p, g) },
	"rouge_zh_score":       func(p, g string, _ []string) float64 { return RougeLZh(p, g) },
	"classification_score": ClassificationScore,
	"retrieval_score":      func(p, g string, _ []string) float64 { return RetrievalScore(p, g) },
	"retrieval_zh_score":   func(p, g string, _ []string) float64 { return RetrievalScoreZh(p, g) },
	"count_score":          func(p, g string, _ []string) float64 { return CountScore(p, g) },
	"code_sim_score":       func(p, g string, _ []string) float64 { return CodeSim(p, g) },
}

// longBenchBase strips a "longbench/" task prefix and LongBench-E's "_e" suffix
// ("longbench/qasper_e" -> "qasper"), giving the name eval.py's tables use.
func longBenchBase(dataset string) string {
	d := strings.TrimPrefix(dataset, "longbench/")
	if LongBenchMetric(d) == "" && strings.HasSuffix(d, "_e") {
		d = strings.TrimSuffix(d, "_e")
	}
	return d
}

// LongBenchMetric returns eval.py's metric name for a LongBench dataset ("qa_f1_score",
// "rouge_score", ...), or "" if the dataset is not one of LongBench's 21. A "longbench/"
// prefix and LongBench-E's "_e" suffix are accepted.
func LongBenchMetric(dataset string) string {
	d := strings.TrimPrefix(dataset, "longbench/")
	for _, e := range longBenchOrder {
		if e.name == d || e.name+"_e" == d {
			return e.metric
		}
	}
	return ""
}

// LongBenchDatasets lists the 16 English LongBench (v1) datasets with their metric, in
// LongBench's order, as "name (metric)", for help text. The 5 Chinese datasets
// (multifieldqa_zh, dureader, vcsum, lsht, passage_retrieval_zh) load and score too, with
// the approximations documented on QAF1Zh and RougeLZh.
func LongBenchDatasets() []string {
	var out []string
	for _, e := range longBenchOrder {
		if e.english {
			out = append(out, e.name+" ("+e.metric+")")
		}
	}
	return out
}

// firstLineDatasets are the few-shot datasets whose prediction eval.py cuts to its first
// line before scoring (the model tends to continue with the next example).
var firstLineDatasets = map[string]bool{"trec": true, "triviaqa": true, "samsum": true, "lsht": true}

// LongBenchScore is eval.py's per-sample score for dataset, in [0, 1]: for trec, triviaqa,
// samsum and lsht the prediction is first cut to its first line (after leading newlines),
// then the dataset's metric is taken against every answer and the max kept (0 with no
// answers). An unknown dataset scores 0. dataset may carry the "longbench/" prefix and
// LongBench-E's "_e" suffix.
func LongBenchScore(dataset, pred string, answers, allClasses []string) float64 {
	d := longBenchBase(dataset)
	metric := longBenchMetrics[LongBenchMetric(d)]
	if metric == nil {
		return 0
	}
	if firstLineDatasets[d] {
		pred, _, _ = strings.Cut(strings.TrimLeft(pred, "\n"), "\n")
	}
	best := 0.0
	for _, a := range answers {
		best = math.Max(best, metric(pred, a, allClasses))
	}
	return best
}

// ScoreSample scores a prediction for s: s.Score when set (the formats suite), LongBench's
// metric for a "longbench/<dataset>" task, RULER's (Score) for the rest. In [0, 1].
func ScoreSample(s Sample, pred string) float64 {
	if s.Score != nil {
		return s.Score(pred)
	}
	if strings.HasPrefix(s.Task, "longbench/") {
		return LongBenchScore(s.Task, pred, s.Gold, s.AllClasses)
	}
	return Score(s.Task, pred, s.Gold)
}

// isPySpace is Python's str.isspace for one rune (what str.split() splits on): Go's
// unicode.IsSpace plus the ASCII separators 0x1c..0x1f, which Python counts as space.
func isPySpace(r rune) bool { return unicode.IsSpace(r) || (r >= 0x1c && r <= 0x1f) }

// pyFields is Python's s.split() with no argument.
func pyFields(s string) []string { return strings.FieldsFunc(s, isPySpace) }

// isPyWord is a character of Python's Unicode \w: a letter, a number or "_".
func isPyWord(r rune) bool { return unicode.IsLetter(r) || unicode.IsNumber(r) || r == '_' }

// asciiPunct is Python's string.punctuation.
const asciiPunct = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"

// zhPunct is normalize_zh_answer's extra Chinese punctuation set (metrics.py), added to
// string.punctuation.
const zhPunct = "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏."

// normalizeAnswer is metrics.py's normalize_answer (SQuAD's): lower case, drop ASCII
// punctuation, replace the words "a", "an", "the" by a space, collapse whitespace.
// Lower-casing is Go's strings.ToLower, which differs from Python's str.lower only for a
// few special-cased letters (e.g. "İ").
func normalizeAnswer(s string) string {
	s = strings.ToLower(s)
	s = strings.Map(func(r rune) rune {
		if r < 128 && strings.ContainsRune(asciiPunct, r) {
			return -1
		}
		return r
	}, s)
	// re.sub(r"\b(a|an|the)\b", " ", s): a match is a whole run of word characters equal to
	// an article, since every alternative consists of word characters.
	var b strings.Builder
	for i := 0; i < len(s); {
		r, j := utf8.DecodeRuneInString(s[i:])
		if !isPyWord(r) {
			b.WriteString(s[i : i+j])
			i += j
			continue
		}
		k := i
		for k < len(s) {
			r, n := utf8.DecodeRuneInString(s[k:])
			if !isPyWord(r) {
				break
			}
			k += n
		}
		switch w := s[i:k]; w {
		case "a", "an", "the":
			b.WriteByte(' ')
		default:
			b.WriteString(w)
		}
		i = k
	}
	return strings.Join(pyFields(b.String()), " ")
}

// tokenF1 is metrics.py's f1_score over token lists: the multiset overlap gives precision
// and recall, F1 = 2PR/(P+R), 0 when nothing overlaps.
func tokenF1(pred, gold []string) float64 {
	count := map[string]int{}
	for _, g := range gold {
		count[g]++
	}
	same := 0
	for _, p := range pred {
		if count[p] > 0 {
			count[p]--
			same++
		}
	}
	if same == 0 {
		return 0
	}
	precision := float64(same) / float64(len(pred))
	recall := float64(same) / float64(len(gold))
	return 2 * precision * recall / (precision + recall)
}

// QAF1 is LongBench's qa_f1_score: the token F1 of the normalised prediction and answer
// (normalize_answer: lower case, no punctuation, no articles, whitespace tokens).
func QAF1(pred, gold string) float64 {
	return tokenF1(strings.Fields(normalizeAnswer(pred)), strings.Fields(normalizeAnswer(gold)))
}

// zhTokens approximates jieba.cut (LongBench segments Chinese text into words with jieba,
// which has no Go port here): every Han character (and every other character that is not
// an ASCII letter or digit) is a token of its own, runs of ASCII letters and digits are one
// token each (as jieba keeps them), and whitespace separates tokens. Character-level
// tokens make more tokens match than jieba's words, so Chinese scores here are not
// comparable with published LongBench numbers.
func zhTokens(s string) []string {
	var out []string
	start := -1
	for i, r := range s {
		if r < 128 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			if start < 0 {
				start = i
			}
			continue
		}
		if start >= 0 {
			out = append(out, s[start:i])
			start = -1
		}
		if !isPySpace(r) {
			out = append(out, string(r))
		}
	}
	if start >= 0 {
		out = append(out, s[start:])
	}
	return out
}

// normalizeZh is metrics.py's normalize_zh_answer: lower case, drop ASCII and Chinese
// punctuation and all whitespace.
func normalizeZh(s string) string {
	return strings.Map(func(r rune) rune {
		if isPySpace(r) || (r < 128 && strings.ContainsRune(asciiPunct, r)) || strings.ContainsRune(zhPunct, r) {
			return -1
		}
		return r
	}, strings.ToLower(s))
}

// QAF1Zh is LongBench's qa_f1_zh_score with jieba replaced by zhTokens (see there: an
// approximation): tokens are normalised with normalize_zh_answer, empty ones dropped, and
// the token F1 taken.
func QAF1Zh(pred, gold string) float64 {
	norm := func(s string) []string {
		var out []string
		for _, t := range zhTokens(s) {
			if t = normalizeZh(t); t != "" {
				out = append(out, t)
			}
		}
		return out
	}
	return tokenF1(norm(pred), norm(gold))
}

// RougeLZh is LongBench's rouge_zh_score with jieba replaced by zhTokens (an
// approximation): both texts are segmented, joined with spaces and scored by RougeL.
func RougeLZh(pred, gold string) float64 {
	return RougeL(strings.Join(zhTokens(pred), " "), strings.Join(zhTokens(gold), " "))
}

// rougeSentences is how the rouge package splits a text: at every ".", dropping empty
// pieces, each piece's whitespace collapsed to single spaces (a piece of only whitespace
// becomes "", which still counts as one sentence of one empty word).
func rougeSentences(s string) [][]string {
	var out [][]string
	for _, p := range strings.Split(s, ".") {
		if p != "" {
			out = append(out, strings.Split(strings.Join(pyFields(p), " "), " "))
		}
	}
	return out
}

// lcsWords returns the words of one longest common subsequence of x and y, reconstructed
// as rouge's _recon_lcs does (back from the end: on a match take it, else step along x if
// that keeps a strictly longer LCS, else along y), so ties pick the same words.
func lcsWords(x, y []string) []string {
	n, m := len(x), len(y)
	w := m + 1
	table := make([]int32, (n+1)*w) // table[i*w+j]: LCS length of x[:i], y[:j]
	for i := 1; i <= n; i++ {
		for j := 1; j <= m; j++ {
			if x[i-1] == y[j-1] {
				table[i*w+j] = table[(i-1)*w+j-1] + 1
			} else {
				table[i*w+j] = max(table[(i-1)*w+j], table[i*w+j-1])
			}
		}
	}
	var out []string
	for i, j := n, m; i > 0 && j > 0; {
		switch {
		case x[i-1] == y[j-1]:
			out = append(out, x[i-1])
			i, j = i-1, j-1
		case table[(i-1)*w+j] > table[i*w+j-1]:
			i--
		default:
			j--
		}
	}
	return out
}

// RougeL is LongBench's rouge_score: the "f" of rouge-l from the `rouge` Python package
// (1.0.1, Rouge().get_scores(pred, gold)), which is summary-level ROUGE-L over *sets* of
// words, case-sensitive, without any normalisation:
//
//	sentences = the texts split at "." (empty pieces dropped), words split at whitespace
//	U = union over (reference sentence, predicted sentence) of the word set of their LCS
//	R = |U| / #distinct reference words,  P = |U| / #distinct predicted words
//	F = 2PR / (P + R + 1e-8)
//
// A text with no sentence (empty, or only dots) makes rouge raise, and LongBench scores it
// 0. (LongBench also scores 0 when Python's recursion limit stops rouge's LCS
// reconstruction, for a sentence pair of roughly 1000 words together; here it is scored.)
func RougeL(pred, gold string) float64 {
	hyp, ref := rougeSentences(pred), rougeSentences(gold)
	if len(hyp) == 0 || len(ref) == 0 {
		return 0
	}
	distinct := func(sents [][]string) float64 {
		set := map[string]bool{}
		for _, s := range sents {
			for _, w := range s {
				set[w] = true
			}
		}
		return float64(len(set))
	}
	union := map[string]bool{}
	for _, r := range ref {
		for _, h := range hyp {
			for _, w := range lcsWords(r, h) {
				union[w] = true
			}
		}
	}
	llcs := float64(len(union))
	r := llcs / distinct(ref)
	p := llcs / distinct(hyp)
	return 2.0 * ((p * r) / (p + r + 1e-8))
}

// ClassificationScore is LongBench's classification_score: the classes named in pred
// (substring match) are collected; those that are substrings of gold but not gold itself
// are dropped; the score is 1/#remaining if gold remains, else 0. The dropping loop is
// Python's "remove from a list while iterating over it", which skips the element after
// each removal; it is kept as is so scores match LongBench's.
func ClassificationScore(pred, gold string, allClasses []string) float64 {
	var matches []string
	for _, c := range allClasses {
		if strings.Contains(pred, c) {
			matches = append(matches, c)
		}
	}
	for i := 0; i < len(matches); i++ {
		t := matches[i]
		if strings.Contains(gold, t) && t != gold {
			for j, u := range matches { // list.remove: the first equal element
				if u == t {
					matches = append(matches[:j], matches[j+1:]...)
					break
				}
			}
		}
	}
	for _, m := range matches {
		if m == gold {
			return 1 / float64(len(matches))
		}
	}
	return 0
}

// digits matches Python's r"\d+" on str, which takes any Unicode decimal digit.
var digits = regexp.MustCompile(`\p{Nd}+`)

// numberShare is the fraction of the digit runs in pred that equal want (as strings), 0
// when pred has none: the shared core of count_score and retrieval_score.
func numberShare(pred, want string) float64 {
	nums := digits.FindAllString(pred, -1)
	if len(nums) == 0 {
		return 0
	}
	right := 0
	for _, n := range nums {
		if n == want {
			right++
		}
	}
	return float64(right) / float64(len(nums))
}

// CountScore is LongBench's count_score (passage_count): the fraction of numbers in pred
// that equal gold, compared as digit strings ("07" is not "7").
func CountScore(pred, gold string) float64 { return numberShare(pred, gold) }

var (
	paragraphEn = regexp.MustCompile(`Paragraph (\p{Nd}+)`)
	paragraphZh = regexp.MustCompile(`段落(\p{Nd}+)`)
)

// RetrievalScore is LongBench's retrieval_score (passage_retrieval_en): gold names the
// paragraph as "Paragraph N"; the score is the fraction of numbers in pred equal to N. A
// gold without "Paragraph N" (LongBench would raise) scores 0.
func RetrievalScore(pred, gold string) float64 {
	m := paragraphEn.FindStringSubmatch(gold)
	if m == nil {
		return 0
	}
	return numberShare(pred, m[1])
}

// RetrievalScoreZh is LongBench's retrieval_zh_score (passage_retrieval_zh): as
// RetrievalScore with gold "段落N".
func RetrievalScoreZh(pred, gold string) float64 {
	m := paragraphZh.FindStringSubmatch(gold)
	if m == nil {
		return 0
	}
	return numberShare(pred, m[1])
}

// CodeSim is LongBench's code_sim_score (lcc, repobench-p): the first line of pred (after
// leading newlines) that has no "`", "#" or "//" (none: "") is compared with gold by
// fuzzywuzzy's fuzz.ratio, which is round(100 * ratio) / 100, 1 for equal strings and 0
// when either is empty. The ratio is difflib.SequenceMatcher's 2M/T over code points (M
// characters in matching blocks, T the two lengths summed), with difflib's autojunk rule,
// not python-Levenshtein's: fuzzywuzzy uses the Levenshtein one only if python-Levenshtein
// is installed, and LongBench's requirements.txt installs fuzzywuzzy without it.
func CodeSim(pred, gold string) float64 {
	line := ""
	for _, l := range strings.Split(strings.TrimLeft(pred, "\n"), "\n") {
		if !strings.Contains(l, "`") && !strings.Contains(l, "#") && !strings.Contains(l, "//") {
			line = l
			break
		}
	}
	return float64(fuzzRatio(line, gold)) / 100
}

// fuzzRatio is fuzzywuzzy's fuzz.ratio(a, b) in 0..100 with the difflib matcher; Python's
// round() rounds halves to even.
func fuzzRatio(a, b string) int {
	if a == b {
		return 100
	}
	if a == "" || b == "" {
		return 0
	}
	ra, rb := []rune(a), []rune(b)
	ratio := 2.0 * float64(sequenceMatches(ra, rb)) / float64(len(ra)+len(rb))
	return int(math.RoundToEven(100 * ratio))
}

// sequenceMatches is the number of elements in difflib.SequenceMatcher(None, a, b)'s
// matching blocks: the longest matching block of the range, then the same on the parts
// left and right of it. With autojunk, when b has 200 or more elements, elements that
// occur more than len(b)/100+1 times in b cannot start a match (they can still extend
// one).
func sequenceMatches(a, b []rune) int {
	b2j := map[rune][]int{} // positions of each element in b, ascending
	for j, r := range b {
		b2j[r] = append(b2j[r], j)
	}
	if len(b) >= 200 {
		limit := len(b)/100 + 1
		for r, js := range b2j {
			if len(js) > limit {
				delete(b2j, r)
			}
		}
	}
	type span struct{ alo, ahi, blo, bhi int }
	total := 0
	queue := []span{{0, len(a), 0, len(b)}}
	for len(queue) > 0 {
		s := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		i, j, k := longestMatch(a, b, b2j, s.alo, s.ahi, s.blo, s.bhi)
		if k == 0 {
			continue
		}
		total += k
		if s.alo < i && s.blo < j {
			queue = append(queue, span{s.alo, i, s.blo, j})
		}
		if i+k < s.ahi && j+k < s.bhi {
			queue = append(queue, span{i + k, s.ahi, j + k, s.bhi})
		}
	}
	return total
}

// longestMatch is difflib's find_longest_match(alo, ahi, blo, bhi) without junk: the
// longest a[i:i+k] == b[j:j+k] in the ranges, the earliest in a (then in b) among equals,
// found through b2j and then extended over equal neighbours (which covers autojunk's
// popular elements).
func longestMatch(a, b []rune, b2j map[rune][]int, alo, ahi, blo, bhi int) (besti, bestj, bestk int) {
	besti, bestj = alo, blo
	j2len := map[int]int{} // j2len[j]: length of the match ending at a[i-1], b[j]
	for i := alo; i < ahi; i++ {
		next := map[int]int{}
		for _, j := range b2j[a[i]] {
			if j < blo {
				continue
			}
			if j >= bhi {
				break
			}
			k := j2len[j-1] + 1
			next[j] = k
			if k > bestk {
				besti, bestj, bestk = i-k+1, j-k+1, k
			}
		}
		j2len = next
	}
	for besti > alo && bestj > blo && a[besti-1] == b[bestj-1] {
		besti, bestj, bestk = besti-1, bestj-1, bestk+1
	}
	for besti+bestk < ahi && bestj+bestk < bhi && a[besti+bestk] == b[bestj+bestk] {
		bestk++
	}
	return besti, bestj, bestk
}
