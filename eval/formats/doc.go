// Package formats renders long-context tasks through many template families, so that a
// model can be trained on some wordings and formats and evaluated on others it never saw.
//
// A family is a generator with its own wording of facts and questions: natural sentences,
// key-value lines, JSON, CSV, YAML, INI, code assignments, function definitions, dialogue,
// e-mail, chat turns (families.go). Every family renders the same task kinds (Tasks):
// retrieval of one key, several keys, all values of one key, multi-hop references, and
// aggregation (count, most frequent), with the question before or after the context, the
// target fact at a chosen depth, distractor facts, and filler drawn from corpus documents
// (Filler). split.go is the one table that holds families out of training: NewTraining
// returns a generator that cannot render them, NewEvaluation one that renders all.
//
// Each Sample carries its family, task, gold answers, metric and a Score method built on
// eval's RULER scoring (string_match_all, or number_match for counts); EvalSample converts
// it for eval's runner. scripts/make-train-data streams training samples for
// scripts/train_model.py and writes evaluation sets; eval/formats/README.md documents the
// families, the split and how to reproduce the data.
package formats
