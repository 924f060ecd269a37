package formats

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/lukv/lukv/eval"
)

// AnswerRoom is the tokens an evaluation item keeps free for the answer: a sample of length
// L (eval.Item.Length) has a prompt of at most L - AnswerRoom tokens, as RULER sizes prompt
// plus answer to the length.
const AnswerRoom = 64

// CheckFamilies checks family names (e.g. from a command line), naming the known ones when
// one is unknown; a name given twice would run its samples twice and is refused too. No
// names means every family (AllFamilies).
func CheckFamilies(names []string) ([]string, error) {
	if len(names) == 0 {
		return AllFamilies(), nil
	}
	for i, n := range names {
		if familyByName(n) == nil {
			return nil, fmt.Errorf("unknown family %q (families: %s)", n, strings.Join(AllFamilies(), ", "))
		}
		if slices.Contains(names[:i], n) {
			return nil, fmt.Errorf("family %q given twice", n)
		}
	}
	return names, nil
}

// CheckTasks checks task kinds, naming the known ones when one is unknown; a task given
// twice is refused.
func CheckTasks(names []string) error {
	for i, n := range names {
		if !slices.Contains(allTasks, n) {
			return fmt.Errorf("unknown task %q (tasks: %s)", n, strings.Join(allTasks, ", "))
		}
		if slices.Contains(names[:i], n) {
			return fmt.Errorf("task %q given twice", n)
		}
	}
	return nil
}

// HaystackConfig is the evaluation configuration over a haystack of lines (one paragraph
// each, as eval.DefaultHaystack holds The Devil's Dictionary, one entry a line) and a word
// list, counting tokens with count.
func HaystackConfig(haystack, words []string, count func(string) int, seed uint64) Config {
	return Config{Filler: SplitDocuments(haystack), Words: words, Count: count, Seed: seed}
}

// Items are the evaluation items of the suite `lukv-run eval formats`: samples
// 0..samples-1 of every family x task it renders (a family skips a task it has not, such
// as multivalue in code_assign), at each length, ordered by family, task, length, index.
// Tasks are named "family/task" (Sample.EvalSample); each sample's question position
// alternates with its index, its depth and distractors are drawn. Samples are made when
// they run.
func Items(g *Generator, families, tasks []string, lengths []int, samples int) []eval.Item {
	var items []eval.Item
	for _, fam := range families {
		for _, task := range FamilyTasks(fam) {
			if !slices.Contains(tasks, task) {
				continue
			}
			for _, length := range lengths {
				for i := 0; i < samples; i++ {
					items = append(items, eval.Item{Task: fam + "/" + task, Length: length, Index: i, Make: func() (eval.Sample, error) {
						return g.evalSample(Spec{Family: fam, Task: task, Length: length - AnswerRoom, Index: i, Depth: -1, Distractors: -1})
					}})
				}
			}
		}
	}
	return items
}

// evalSample makes spec's sample as eval's runner takes it; a length too short for the
// task is eval.ErrDoesNotFit, so that the run skips that task and length with a warning.
func (g *Generator) evalSample(spec Spec) (eval.Sample, error) {
	if spec.Length <= 0 {
		return eval.Sample{}, fmt.Errorf("%w: length %d leaves no room for a prompt after the answer's %d tokens", eval.ErrDoesNotFit, spec.Length+AnswerRoom, AnswerRoom)
	}
	s, err := g.Make(spec)
	if errors.Is(err, errTooLong) {
		return eval.Sample{}, fmt.Errorf("%w: %v", eval.ErrDoesNotFit, err)
	}
	if err != nil {
		return eval.Sample{}, err
	}
	return s.EvalSample(), nil
}
