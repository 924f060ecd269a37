package formats

// heldOut names the families that are for evaluation only: a generator made with
// NewTraining can never render them. This table is the only place that decides it; the
// documentation (eval/formats/README.md) and the report of `lukv-run eval` read it through
// HeldOut and Families.
//
// What each held-out family tests, against its nearest trained family:
//   - narrative: natural phrasings of facts and questions that share no template with
//     "sentence" (storytelling, indirect speech, other verbs)
//   - yaml: records in a syntax never trained on (trained: json, csv, ini, kv_lines)
//   - funcdef: values returned by function definitions (trained: code_assign)
//   - email: facts inside an e-mail thread with headers and quoting (trained: dialogue, chat)
var heldOut = map[string]bool{
	"narrative": true,
	"yaml":      true,
	"funcdef":   true,
	"email":     true,
}

// HeldOut reports whether family is reserved for evaluation.
func HeldOut(family string) bool { return heldOut[family] }

// Families lists every family name in a fixed order; trained (false) or held out (true)
// selects one side of the split.
func Families(heldOutSide bool) []string {
	var out []string
	for _, f := range families {
		if heldOut[f.name] == heldOutSide {
			out = append(out, f.name)
		}
	}
	return out
}

// AllFamilies lists every family name, trained first, in a fixed order.
func AllFamilies() []string { return append(Families(false), Families(true)...) }

// FamilyTasks lists the tasks family renders (nil for an unknown family).
func FamilyTasks(family string) []string {
	if f := familyByName(family); f != nil {
		return append([]string(nil), f.tasks...)
	}
	return nil
}
