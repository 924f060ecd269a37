package eval

import (
	"regexp"
	"strings"
)

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
