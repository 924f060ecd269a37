package formats

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
)

// attribute is what a fact gives about a key: a phrase for prose, an identifier for code and
// records, and the kind of its values.
type attribute struct {
	phrase, ident, kind string // kind: number | uuid | category
}

var attributes = []attribute{
	{"access code", "access_code", "number"},
	{"serial number", "serial_number", "number"},
	{"account number", "account_number", "number"},
	{"badge number", "badge_number", "number"},
	{"tracking number", "tracking_number", "number"},
	{"extension", "extension", "number"},
	{"license key", "license_key", "uuid"},
	{"session token", "session_token", "uuid"},
	{"order id", "order_id", "uuid"},
}

// statusAttr is the attribute of the aggregation tasks; its values are categories.
var statusAttr = attribute{"status", "status", "category"}

var categories = []string{"pending", "approved", "shipped", "archived", "blocked", "open", "closed", "retired"}

// fact is one statement of a sample: key's attr is value, or (ref != "") equals ref's.
type fact struct {
	key   string
	attr  attribute
	value string
	ref   string
}

// query is what a sample asks.
type query struct {
	task     string
	keys     []string
	attr     attribute
	category string // count: the category counted
}

// family renders facts and questions in its own wording. Scattered families (block false)
// render each fact as its own snippet, placed at its own depth in the filler; block families
// render all facts as one snippet (a table, a file). The other functions give the instruction
// before the context, the question, and the cue after which the answer starts.
type family struct {
	name  string
	block bool
	tasks []string
	// render returns the snippets of facts (one per fact, or one for a block family).
	render func(r *rand.Rand, fs []fact) []string
	// filler, if set, restyles filler paragraph i (e.g. as a speaker's turn).
	filler func(i int, p string) string
	intro  []string
	ask    func(r *rand.Rand, q query) string
	cue    []string
	// chat: the prompt is a user message through the chat template (chat.go).
	chat bool
}

func pick(r *rand.Rand, xs []string) string { return xs[r.IntN(len(xs))] }

// fill replaces {name} placeholders.
func fill(t string, kv ...string) string { return strings.NewReplacer(kv...).Replace(t) }

// list joins ["a","b","c"] as "a, b and c".
func list(xs []string) string {
	if len(xs) <= 1 {
		return strings.Join(xs, "")
	}
	return strings.Join(xs[:len(xs)-1], ", ") + " and " + xs[len(xs)-1]
}

// ident turns a key "falcon-north" into an identifier in the given case:
// snake falcon_north, upper FALCON_NORTH, camel FalconNorth.
func ident(key, style string) string {
	parts := strings.FieldsFunc(key, func(r rune) bool { return r == '-' || r == ' ' || r == '_' })
	switch style {
	case "upper":
		return strings.ToUpper(strings.Join(parts, "_"))
	case "camel":
		for i, p := range parts {
			parts[i] = strings.ToUpper(p[:1]) + p[1:]
		}
		return strings.Join(parts, "")
	}
	return strings.Join(parts, "_")
}

// plural of an attribute phrase.
func plural(p string) string {
	if strings.HasSuffix(p, "x") || strings.HasSuffix(p, "s") {
		return p + "es"
	}
	return p + "s"
}

// questionBank holds question templates by task, with placeholders {attr} {attrs} {key}
// {keys} {cat}; ask fills one, naming keys and the attribute as the family does.
type questionBank map[string][]string

func (b questionBank) ask(r *rand.Rand, q query, key func(string) string, attrName func(attribute) string) string {
	keys := make([]string, len(q.keys))
	for i, k := range q.keys {
		keys[i] = key(k)
	}
	a := attrName(q.attr)
	return fill(pick(r, b[q.task]), "{attr}", a, "{attrs}", plural(a), "{key}", strings.Join(keys, ""),
		"{keys}", list(keys), "{cat}", q.category)
}

func same(s string) string       { return s }
func phrase(a attribute) string  { return a.phrase }
func identOf(a attribute) string { return a.ident }
func quoted(s string) string     { return `"` + s + `"` }
func jsonString(s string) string { b, _ := json.Marshal(s); return string(b) }

// sentenceQuestions: the trained natural wording (families sentence, chat, dialogue).
var sentenceQuestions = questionBank{
	"single": {"What is the {attr} for {key}?", "What {attr} does {key} have?",
		"Which {attr} belongs to {key}?", "Tell me the {attr} of {key}.", "What is {key}'s {attr}?"},
	"multikey": {"What are the {attrs} for {keys}?", "Give the {attrs} of {keys}.",
		"Which {attrs} belong to {keys}?"},
	"multivalue": {"What are all the {attrs} given for {key}?", "List every {attr} of {key}.",
		"{key} has several {attrs}. Which are they?"},
	"multihop": {"What is the {attr} for {key}?", "What {attr} does {key} have?", "Tell me the {attr} of {key}."},
	"count": {"How many entries have the status {cat}?", "How many of the items are {cat}?",
		"Count the entries whose status is {cat}."},
	"mostfrequent": {"Which status occurs most often?", "What is the most common status?",
		"Which status do most entries have?"},
}

// narrativeQuestions: the held-out natural wording (family narrative); no template is
// shared with sentenceQuestions.
var narrativeQuestions = questionBank{
	"single": {"Which {attr} did {key} end up with?", "Remind me: {key}'s {attr}, what was it again?",
		"Can you recall the {attr} that was assigned to {key}?", "I need the {attr} of {key}; do you remember it?"},
	"multikey": {"I need the {attrs} of {keys}; what were they?", "Can you recall the {attrs} assigned to {keys}?"},
	"multivalue": {"Over time {key} was given more than one {attr}. Which ones?",
		"Name each {attr} that {key} has had."},
	"multihop":     {"Which {attr} did {key} end up with?", "Can you recall the {attr} that was assigned to {key}?"},
	"count":        {"Of all the things mentioned, how many ended up {cat}?", "In the end, how many were {cat}?"},
	"mostfrequent": {"Which outcome came up more often than any other?", "What was the usual outcome, the most frequent one?"},
}

// recordQuestions: questions about identifiers in structured text; {where} names the format.
var recordQuestions = questionBank{
	"single": {"In the {where} above, what is the {attr} of {key}?", "What is the value of {attr} for {key} in the {where}?",
		"Look up {key} in the {where}: what is its {attr}?"},
	"multikey":     {"In the {where} above, what are the {attr} values of {keys}?", "Look up {keys} in the {where}: what is the {attr} of each?"},
	"multivalue":   {"The {where} has several entries for {key}. List all of its {attr} values.", "What are all the {attr} values of {key} in the {where}?"},
	"multihop":     {"In the {where} above, what is the {attr} of {key}? Follow references to the final value.", "Resolve the {attr} of {key} in the {where}."},
	"count":        {"In the {where} above, how many entries have {attr_status} {cat}?", "Count the entries of the {where} whose {attr_status} is {cat}."},
	"mostfrequent": {"In the {where} above, which {attr_status} value is the most frequent?", "Which {attr_status} occurs most often in the {where}?"},
}

func recordAsk(where []string, key func(string) string) func(r *rand.Rand, q query) string {
	return func(r *rand.Rand, q query) string {
		s := recordQuestions.ask(r, q, key, identOf)
		return fill(s, "{where}", pick(r, where), "{attr_status}", statusAttr.ident)
	}
}

var allTasks = []string{"single", "multikey", "multivalue", "multihop", "count", "mostfrequent"}

// noMultivalue: formats in which one name holds one value (a second assignment replaces it).
var noMultivalue = []string{"single", "multikey", "multihop", "count", "mostfrequent"}

var speakers = []string{"Alice", "Bob", "Carol", "Dmitri", "Esther", "Farid", "Grace", "Hiro"}

var families = []*family{
	{
		name: "sentence", tasks: allTasks,
		render: sentenceFacts,
		intro: []string{"", "Read the following text.", "Below is a document. Answer the question about it.",
			"Here is some text. Some facts are hidden in it."},
		ask: func(r *rand.Rand, q query) string { return sentenceQuestions.ask(r, q, same, phrase) },
		cue: []string{"Answer:", "A:"},
	},
	{
		name: "kv_lines", block: true, tasks: allTasks,
		render: func(r *rand.Rand, fs []fact) []string {
			sep := pick(r, []string{" = ", ": ", "="})
			lines := []string{"# " + fs[0].attr.ident}
			for _, f := range fs {
				v := f.value
				if f.ref != "" {
					v = f.ref
				}
				lines = append(lines, f.key+sep+v)
			}
			return []string{strings.Join(lines, "\n")}
		},
		intro: []string{"", "The text below contains a list of name-value lines."},
		ask:   recordAsk([]string{"list", "key-value lines"}, same),
		cue:   []string{"Answer:", "Value:"},
	},
	{
		name: "json", block: true, tasks: allTasks,
		render: func(r *rand.Rand, fs []fact) []string {
			objs := make([]string, len(fs))
			for i, f := range fs {
				if f.ref != "" {
					objs[i] = fmt.Sprintf(`{"name": %s, %s: {"same_as": %s}}`, jsonString(f.key), jsonString(f.attr.ident), jsonString(f.ref))
				} else {
					objs[i] = fmt.Sprintf(`{"name": %s, %s: %s}`, jsonString(f.key), jsonString(f.attr.ident), jsonString(f.value))
				}
			}
			if r.IntN(2) == 0 { // JSON Lines
				return []string{strings.Join(objs, "\n")}
			}
			return []string{"[\n  " + strings.Join(objs, ",\n  ") + "\n]"}
		},
		intro: []string{"", "The document below includes JSON records."},
		ask:   recordAsk([]string{"JSON records", "JSON data"}, quoted),
		cue:   []string{"Answer:"},
	},
	{
		name: "csv", block: true, tasks: allTasks,
		render: func(r *rand.Rand, fs []fact) []string {
			refs := false
			for _, f := range fs {
				refs = refs || f.ref != ""
			}
			head := "name," + fs[0].attr.ident
			if refs {
				head += ",same_as"
			}
			lines := []string{head}
			for _, f := range fs {
				row := f.key + "," + f.value
				if refs {
					row += "," + f.ref
				}
				lines = append(lines, row)
			}
			return []string{strings.Join(lines, "\n")}
		},
		intro: []string{"", "The text below contains a CSV table."},
		ask:   recordAsk([]string{"table", "CSV table"}, same),
		cue:   []string{"Answer:"},
	},
	{
		name: "code_assign", block: true, tasks: noMultivalue,
		render: func(r *rand.Rand, fs []fact) []string {
			lang := r.IntN(3) // Python, shell, Go
			style := map[int]string{0: "upper", 1: "upper", 2: "camel"}[lang]
			var lines []string
			for _, f := range fs {
				name, v := ident(f.key+"-"+f.attr.ident, style), quoteIf(f)
				if f.ref != "" {
					v = ident(f.ref+"-"+f.attr.ident, style)
				}
				switch lang {
				case 0:
					lines = append(lines, name+" = "+v)
				case 1:
					if f.ref != "" {
						v = "$" + v
					}
					lines = append(lines, "export "+name+"="+v)
				default:
					lines = append(lines, "const "+name+" = "+v)
				}
			}
			return []string{strings.Join(lines, "\n")}
		},
		intro: []string{"", "The text below includes source code."},
		ask: func(r *rand.Rand, q query) string {
			return "In the code above, " + lowerFirst(sentenceQuestions.ask(r, q, same, phrase))
		},
		cue: []string{"Answer:"},
	},
	{
		name: "ini", block: true, tasks: noMultivalue,
		render: func(r *rand.Rand, fs []fact) []string {
			var b strings.Builder
			for i, f := range fs {
				if i > 0 {
					b.WriteString("\n")
				}
				v := f.value
				if f.ref != "" {
					v = "${" + f.ref + ":" + f.attr.ident + "}"
				}
				fmt.Fprintf(&b, "[%s]\n%s = %s\n", f.key, f.attr.ident, v)
			}
			return []string{strings.TrimRight(b.String(), "\n")}
		},
		intro: []string{"", "The text below includes a configuration file."},
		ask:   recordAsk([]string{"configuration file", "config"}, func(k string) string { return "[" + k + "]" }),
		cue:   []string{"Answer:"},
	},
	{
		name: "dialogue", tasks: allTasks,
		render: each(func(r *rand.Rand, f fact) string {
			sp := pick(r, speakers)
			if f.ref != "" {
				return fill(pick(r, []string{"{sp}: {key} has the same {attr} as {ref}.", "{sp}: For {key} just use {ref}'s {attr}."}),
					"{sp}", sp, "{attr}", f.attr.phrase, "{key}", f.key, "{ref}", f.ref)
			}
			return fill(pick(r, []string{"{sp}: By the way, the {attr} for {key} is {v}.", "{sp}: {key}? Its {attr} is {v}.",
				"{sp}: I checked, {key} has {attr} {v}."}), "{sp}", sp, "{attr}", f.attr.phrase, "{key}", f.key, "{v}", f.value)
		}),
		filler: func(i int, p string) string { return speakers[(i*7+3)%len(speakers)] + ": " + p },
		intro:  []string{"", "The following is a conversation."},
		ask: func(r *rand.Rand, q query) string {
			return "In the conversation above, " + lowerFirst(sentenceQuestions.ask(r, q, same, phrase))
		},
		cue: []string{"Answer:"},
	},
	{
		name: "chat", tasks: allTasks, chat: true,
		render: sentenceFacts,
		intro:  []string{"", "Here is a document:", "Please read this:"},
		ask:    func(r *rand.Rand, q query) string { return sentenceQuestions.ask(r, q, same, phrase) },
	},
	// Held out (split.go).
	{
		name: "narrative", tasks: allTasks,
		render: each(func(r *rand.Rand, f fact) string {
			if f.ref != "" {
				return fill(pick(r, []string{"As it turned out, {key} had been given exactly the same {attr} as {ref}.",
					"Nobody bothered to pick a new {attr} for {key}; it simply reused the one {ref} had."}),
					"{attr}", f.attr.phrase, "{key}", f.key, "{ref}", f.ref)
			}
			return fill(pick(r, []string{"When I asked about {key}, they told me its {attr} had been changed to {v}.",
				"According to the old logbook, {key} was assigned {attr} {v}.",
				"It was {key}, whose {attr} ({v}) nobody could remember without looking it up.",
				"She wrote {v} on the back of the envelope: the {attr} of {key}."}),
				"{attr}", f.attr.phrase, "{key}", f.key, "{v}", f.value)
		}),
		intro: []string{"", "Here is a story."},
		ask:   func(r *rand.Rand, q query) string { return narrativeQuestions.ask(r, q, same, phrase) },
		cue:   []string{"Response:", "Reply:"},
	},
	{
		name: "yaml", block: true, tasks: allTasks,
		render: func(r *rand.Rand, fs []fact) []string {
			var lines []string
			for _, f := range fs {
				lines = append(lines, "- name: "+f.key)
				if f.ref != "" {
					lines = append(lines, "  "+f.attr.ident+"_same_as: "+f.ref)
				} else {
					lines = append(lines, "  "+f.attr.ident+": "+quoted(f.value))
				}
			}
			return []string{strings.Join(lines, "\n")}
		},
		intro: []string{"", "The text below includes YAML."},
		ask:   recordAsk([]string{"YAML", "YAML list"}, same),
		cue:   []string{"Answer:"},
	},
	{
		name: "funcdef", block: true, tasks: noMultivalue,
		render: func(r *rand.Rand, fs []fact) []string {
			python := r.IntN(2) == 0
			var defs []string
			for _, f := range fs {
				fn, ret := ident(f.key+"-"+f.attr.ident, "snake"), quoteIf(f)
				if !python {
					fn = ident(f.key+"-"+f.attr.ident, "camel")
				}
				if f.ref != "" {
					if python {
						ret = ident(f.ref+"-"+f.attr.ident, "snake") + "()"
					} else {
						ret = ident(f.ref+"-"+f.attr.ident, "camel") + "()"
					}
				}
				if python {
					defs = append(defs, "def "+fn+"():\n    return "+ret)
				} else {
					typ := "int"
					if f.attr.kind != "number" {
						typ = "string"
					}
					defs = append(defs, "func "+fn+"() "+typ+" {\n\treturn "+ret+"\n}")
				}
			}
			return []string{strings.Join(defs, "\n\n")}
		},
		intro: []string{"", "The text below includes source code."},
		ask: func(r *rand.Rand, q query) string {
			return "According to the functions above, " + lowerFirst(sentenceQuestions.ask(r, q, same, phrase))
		},
		cue: []string{"Answer:"},
	},
	{
		name: "email", tasks: allTasks,
		render: each(func(r *rand.Rand, f fact) string {
			from := strings.ToLower(pick(r, speakers))
			body := fill("Hi,\n\nthe {attr} for {key} is {v}.\n\nThanks,\n{from}", "{attr}", f.attr.phrase, "{key}", f.key, "{v}", f.value, "{from}", from)
			if f.ref != "" {
				body = fill("Hi,\n\n{key} takes the same {attr} as {ref}.\n\n{from}", "{attr}", f.attr.phrase, "{key}", f.key, "{ref}", f.ref, "{from}", from)
			}
			return "From: " + from + "@example.org\nSubject: " + f.key + "\n\n" + body
		}),
		filler: func(i int, p string) string {
			if i%4 != 0 {
				return p
			}
			return "From: " + strings.ToLower(speakers[(i*5+1)%len(speakers)]) + "@example.org\nSubject: Re: notes\n\n> " +
				strings.ReplaceAll(p, "\n", "\n> ")
		},
		intro: []string{"", "Below is an e-mail thread."},
		ask: func(r *rand.Rand, q query) string {
			return "Based on the e-mails above: " + lowerFirst(sentenceQuestions.ask(r, q, same, phrase))
		},
		cue: []string{"Answer:"},
	},
}

// sentenceFacts: the trained natural phrasings of a fact (families sentence and chat).
var sentenceFacts = each(func(r *rand.Rand, f fact) string {
	if f.ref != "" {
		return fill(pick(r, []string{"The {attr} for {key} is the same as the {attr} for {ref}.",
			"{key} uses the same {attr} as {ref}.", "For {key}, use the {attr} of {ref}."}),
			"{attr}", f.attr.phrase, "{key}", f.key, "{ref}", f.ref)
	}
	return fill(pick(r, []string{"The {attr} for {key} is {v}.", "{key}'s {attr} is {v}.",
		"Note: the {attr} of {key} is {v}.", "Remember this: the {attr} for {key} is {v}.",
		"For {key}, the {attr} is {v}.", "{key} has the {attr} {v}."}),
		"{attr}", f.attr.phrase, "{key}", f.key, "{v}", f.value)
})

// each makes a scattered family's render from a one-fact renderer.
func each(one func(r *rand.Rand, f fact) string) func(r *rand.Rand, fs []fact) []string {
	return func(r *rand.Rand, fs []fact) []string {
		out := make([]string, len(fs))
		for i, f := range fs {
			out[i] = one(r, f)
		}
		return out
	}
}

// quoteIf quotes non-numeric values (code literals).
func quoteIf(f fact) string {
	if f.attr.kind == "number" {
		return f.value
	}
	return quoted(f.value)
}

func lowerFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToLower(s[:1]) + s[1:]
}

func familyByName(name string) *family {
	for _, f := range families {
		if f.name == name {
			return f
		}
	}
	return nil
}
