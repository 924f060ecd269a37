package eval

import (
	"regexp"
	"strconv"
	"strings"
)

// The functions below follow NVIDIA RULER's scripts/eval/evaluate.py (postprocess_pred,
// run_evaluation_per_task) and scripts/eval/synthetic/constants.py (string_match_all,
// string_match_part), checked against the repository at commit c3f5e3b4 (those two files are
// unchanged since they were added in 4f6507e). Known, deliberate edge differences: RULER
// raises on a sample with no gold strings, here it scores 0; Python's str.lower and Go's
// strings.ToLower differ on a few non-ASCII letters (e.g. U+0130, final sigma), which cannot
// change a match against RULER's ASCII gold strings.

// controlChars matches ASCII control characters; RULER's postprocess_pred (scripts/eval/
// evaluate.py) replaces them with "\n" and strips the result. It does not cut at the first
// newline.
var controlChars = regexp.MustCompile(`[\x00-\x1f]`)

// Postprocess applies RULER's post-processing to a raw prediction.
func Postprocess(pred string) string {
	return strings.TrimSpace(controlChars.ReplaceAllString(strings.TrimSpace(pred), "\n"))
}

// StringMatchAll is RULER's string_match_all for one sample: the fraction of gold strings
// contained in pred, case-insensitively (RULER reports it x100, averaged over samples).
func StringMatchAll(pred string, gold []string) float64 {
	if len(gold) == 0 {
		return 0
	}
	p := strings.ToLower(pred)
	hit := 0
	for _, g := range gold {
		if strings.Contains(p, strings.ToLower(g)) {
			hit++
		}
	}
	return float64(hit) / float64(len(gold))
}

// StringMatchPart is RULER's string_match_part for one sample: 1 if any gold string is
// contained in pred (case-insensitive), else 0.
func StringMatchPart(pred string, gold []string) float64 {
	p := strings.ToLower(pred)
	for _, g := range gold {
		if strings.Contains(p, strings.ToLower(g)) {
			return 1
		}
	}
	return 0
}

// Metric returns RULER's metric name for a task: every synthetic task here (niah, vt, cwe,
// fwe) uses string_match_all; string_match_part is RULER's metric for the QA tasks.
func Metric(task string) string {
	if strings.HasPrefix(task, "qa") {
		return "string_match_part"
	}
	return "string_match_all"
}

// Score post-processes pred and scores it with the task's RULER metric, in [0, 1].
func Score(task, pred string, gold []string) float64 {
	pred = Postprocess(pred)
	if Metric(task) == "string_match_part" {
		return StringMatchPart(pred, gold)
	}
	return StringMatchAll(pred, gold)
}

// TaskScore is RULER's task-level score: the mean of the per-sample scores (each in [0, 1],
// from Score) times 100, rounded to 2 decimals as Python's round(x, 2) does (correctly
// rounded from the exact binary value, ties to even). The sum runs left to right like
// Python's sum() before 3.12 (RULER's container ships 3.10). No samples gives 0, as RULER's
// evaluate.py does for an empty prediction file.
func TaskScore(scores []float64) float64 {
	if len(scores) == 0 {
		return 0
	}
	var sum float64
	for _, s := range scores {
		sum += s
	}
	v := sum / float64(len(scores)) * 100
	// strconv formats the exact binary value with round-half-even, which is what CPython's
	// float round with ndigits does; parsing the text back gives the nearest float to it.
	r, err := strconv.ParseFloat(strconv.FormatFloat(v, 'f', 2, 64), 64)
	if err != nil { // unreachable for finite v; keep the unrounded value rather than fail
		return v
	}
	return r
}
