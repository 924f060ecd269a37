package formats

import (
	"regexp"

	"github.com/lukv/lukv/eval"
)

// Metrics of the samples. MetricMatchAll is RULER's string_match_all (eval.StringMatchAll):
// the fraction of gold strings contained in the prediction, case-insensitively.
// MetricNumber is for counts, where a substring match would accept "17" for 7: 1 when the
// first integer of the prediction equals the gold number, else 0.
const (
	MetricMatchAll = "string_match_all"
	MetricNumber   = "number_match"
)

var firstInt = regexp.MustCompile(`\d+`)

// Score post-processes pred as RULER does (eval.Postprocess) and scores it in [0, 1] with the
// sample's metric; eval.TaskScore turns a cell's scores into RULER's percentage.
func (s Sample) Score(pred string) float64 {
	pred = eval.Postprocess(pred)
	if s.Metric == MetricNumber {
		if len(s.Gold) == 1 && firstInt.FindString(pred) == s.Gold[0] {
			return 1
		}
		return 0
	}
	return eval.StringMatchAll(pred, s.Gold)
}

// EvalSample is the sample as eval's runner takes it. Its Task is "family/task" so that a
// report can group by family and by task; it carries the family, its side of the split and
// this sample's Score.
func (s Sample) EvalSample() eval.Sample {
	split := eval.SplitTrained
	if s.HeldOut {
		split = eval.SplitHeldOut
	}
	return eval.Sample{Task: s.Family + "/" + s.Task, Prompt: s.Prompt, Context: s.Context,
		Question: s.Question, Gold: s.Gold, MaxNewTokens: s.MaxNewTokens,
		Family: s.Family, Split: split, Score: s.Score}
}
