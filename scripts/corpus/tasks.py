"""Procedural long-context tasks in the formats NVIDIA RULER uses, for training and for the
held-out evaluation of lukv-tiny.

Every task returns a Sample: the prompt text (what a user feeds the model, ending with
RULER's answer prefix), the answer text the model should continue with, the gold strings
scored with RULER's string_match_all, and the task name. Prompt lengths are controlled in
tokens through a `count` callback (a tokenizer), so the same code serves training (training
words, training prose, training seeds) and evaluation (evaluation words, held-out or
reserved prose, other seeds); see models/lukv-tiny/README.md for the split contract.

Task names follow RULER's synthetic.yaml:
  niah_single_1   repeat haystack ("The grass is green..."), word key, 7-digit number
  niah_single_2   essay haystack, word key, number
  niah_single_3   essay haystack, word key, uuid value
  niah_multikey_1 essay haystack, 4 keys (3 distractors), number
  niah_multikey_2 needle haystack (every line is a needle), word keys, numbers
  niah_multikey_3 needle haystack, uuid keys, uuid values
  niah_multivalue essay haystack, one key with 4 numbers
  niah_multiquery essay haystack, 4 keys queried together
  vt              variable tracking, 1 chain of 4 hops in repeat noise
  cwe             common words extraction (10 words x30 among words x3)
  fwe             frequent (coded) words extraction, Zipf-distributed
Standard library only: random.Random drives everything, so a seed fixes every sample.
"""
import re
import uuid

GRASS = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."

NIAH_TEMPLATE = ("Some special magic {type_v} are hidden within the following text. Make sure to "
                 "memorize it. I will quiz you about the {type_v} afterwards.\n{context}\nWhat are all "
                 "the special magic {type_v} for {query} mentioned in the provided text?")
NIAH_PREFIX = " The special magic {type_v} for {query} mentioned in the provided text are"
NEEDLE = "One of the special magic {type_v} for {key} is: {value}."

VT_TEMPLATE = ("Memorize and track the chain(s) of variable assignment hidden in the following text."
               "\n\n{context}\nQuestion: Find all variables that are assigned the value {query} in "
               "the text above.")
VT_PREFIX = (" Answer: According to the chain(s) of variable assignment in the text above, {num_v} "
             "variables are assigned the value {query}, they are:")

CWE_TEMPLATE = ("Below is a numbered list of words. In these words, some appear more often than "
                "others. Memorize the ones that appear most often.\n{context}\nQuestion: What are the "
                "10 most common words in the above list?")
CWE_PREFIX = " Answer: The top 10 words that appear most often in the list are:"

FWE_TEMPLATE = ("Read the following coded text and track the frequency of each coded word. Find the "
                "three most frequently appeared coded words. {context}\nQuestion: Do not provide any "
                "explanation. Please ignore the dots '....'. What are the three most frequently "
                "appeared words in the above coded text?")
FWE_PREFIX = " Answer: According to the coded text above, the three most frequently appeared words are:"

# RULER's tokens_to_generate per task: a prompt of a length-L sample has at most L minus this.
TOKENS_TO_GENERATE = {"niah": 128, "vt": 30, "cwe": 120, "fwe": 50}

NIAH_TASKS = {
    #                  haystack  key      value     n_k n_v n_q
    "niah_single_1": ("repeat", "words", "numbers", 1, 1, 1),
    "niah_single_2": ("essay", "words", "numbers", 1, 1, 1),
    "niah_single_3": ("essay", "words", "uuids", 1, 1, 1),
    "niah_multikey_1": ("essay", "words", "numbers", 4, 1, 1),
    "niah_multikey_2": ("needle", "words", "numbers", 1, 1, 1),
    "niah_multikey_3": ("needle", "uuids", "uuids", 1, 1, 1),
    "niah_multivalue": ("essay", "words", "numbers", 1, 4, 1),
    "niah_multiquery": ("essay", "words", "numbers", 4, 1, 4),
}
ALL_TASKS = list(NIAH_TASKS) + ["vt", "cwe", "fwe"]
DEPTHS = [round(i * 100 / 39) for i in range(40)]  # RULER: 40 depths from 0% to 100%

SENT_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(\u00b6])")


def task_family(task):
    return "niah" if task.startswith("niah") else task


class Sample:
    """One task instance. followups (training only): extra (question, answer) pairs about
    other keys of the same context, appended after the answer to densify retrieval signal."""
    __slots__ = ("task", "prompt", "answer", "gold", "followups")

    def __init__(self, task, prompt, answer, gold, followups=()):
        self.task, self.prompt, self.answer, self.gold = task, prompt, answer, gold
        self.followups = list(followups)


class Haystack:
    """Prose split into sentences with their token counts, for length-controlled windows.

    docs: list of documents (strings). count_batch: list[str] -> list[int] token counts; each
    sentence is counted with a leading space, as it appears inside a RULER essay context.
    """

    def __init__(self, docs, count_batch):
        sents = []
        for d in docs:
            sents.extend(s for s in SENT_RE.split(d.strip()) if s)
        if not sents:
            raise ValueError("Haystack: no sentences in the given documents")
        self.sents = sents
        self.ntok = count_batch([" " + s for s in sents])

    def window(self, rng, ntokens, start=None):
        """Consecutive sentences (wrapping around) from a random start totalling ~ntokens."""
        n = len(self.sents)
        i = rng.randrange(n) if start is None else start
        out, total = [], 0
        while total < ntokens and len(out) < n:
            out.append(self.sents[i % n])
            total += self.ntok[i % n]
            i += 1
        return out


class TaskGen:
    """Builds RULER-format samples.

    adjs, nouns: key vocabularies (keys are "adj-noun"); words: vocabulary for cwe;
    haystack: Haystack for "essay" contexts; count: str -> token count of a prompt as the
    model sees it (BOS included); rng: random.Random.
    """

    def __init__(self, adjs, nouns, words, haystack, count, rng):
        self.adjs, self.nouns, self.words = adjs, nouns, words
        self.hay, self.count, self.rng = haystack, count, rng
        self.grass_tok = max(1, count("\n" + GRASS) - 1)

    # ---- values -----------------------------------------------------------------------
    def _rand(self, kind):
        r = self.rng
        if kind == "numbers":
            return str(r.randint(1000000, 9999999))
        if kind == "words":
            return f"{r.choice(self.adjs)}-{r.choice(self.nouns)}"
        if kind == "uuids":
            return str(uuid.UUID(int=r.getrandbits(128), version=4))
        raise ValueError(f"unknown needle type {kind}")

    def _distinct(self, kind, n, avoid=()):
        out, seen = [], set(avoid)
        while len(out) < n:
            v = self._rand(kind)
            if v not in seen:
                seen.add(v)
                out.append(v)
        return out

    # ---- length control ---------------------------------------------------------------
    def _fit(self, build, budget, guess):
        """Calls build(h) with haystack sizes h until count(prompt) is within 3% under budget.

        Returns the largest sample that fits (or the smallest tried, if none fits)."""
        h = max(0, guess)
        best = None
        for _ in range(8):
            s = build(h)
            n = self.count(s.prompt)
            if n <= budget:
                if best is None or n > best[1]:
                    best = (s, n)
                if n >= 0.97 * budget:
                    break
                h = int(h + (budget - n) * 0.98)
            else:
                if h == 0:
                    break
                h = max(0, int(h - (n - budget) * 1.05) - 4)
        return best if best is not None else (s, n)

    # ---- NIAH -------------------------------------------------------------------------
    def niah(self, task, budget, followups=0, vary_keys=False):
        """followups: up to this many extra questions about other single-valued keys of the
        context (training). vary_keys: niah_multikey_1 gets 2..12 keys instead of 4 (training)."""
        hay, k_kind, v_kind, n_k, n_v, n_q = NIAH_TASKS[task]
        r = self.rng
        if vary_keys and task == "niah_multikey_1":
            n_k = r.randint(2, 12)
        keys = self._distinct(k_kind, n_k)
        values = [self._distinct(v_kind, n_v) for _ in keys]
        needles = [(ki, NEEDLE.format(type_v=v_kind, key=k, value=v))
                   for ki, k in enumerate(keys) for v in values[ki]]
        r.shuffle(needles)
        q_idx = sorted(r.sample(range(n_k), n_q))
        queries = [keys[i] for i in q_idx]
        query = queries[0] if n_q == 1 else ", ".join(queries[:-1]) + ", and " + queries[-1]
        template, prefix, type_v = NIAH_TEMPLATE, NIAH_PREFIX, v_kind
        if n_q * n_v == 1:
            template = template.replace("Some", "A").replace("are all", "is").replace("are", "is")
            prefix = prefix.replace("are", "is")
            type_v = v_kind[:-1]
        depth_pos = sorted(r.sample(DEPTHS, len(needles)))
        hay_start = r.randrange(len(self.hay.sents))
        distractor_seed = r.getrandbits(32)
        used = set(keys)
        fu_seed = r.getrandbits(32)
        fu_type = v_kind[:-1]
        fu_q = ("\nWhat is the special magic {t} for {k} mentioned in the provided text? "
                "The special magic {t} for {k} mentioned in the provided text is")

        def build(h):
            pairs = [(keys[ki], nd.rsplit(" ", 1)[1][:-1]) for ki, nd in needles] if n_v == 1 else []
            if hay == "essay":
                sents = self.hay.window(r, h, start=hay_start)
                pos = [int(len(sents) * d / 100) for d in depth_pos]
                parts, prev = [], 0
                for (ki, nd), p in zip(needles, pos):
                    parts.extend(sents[prev:p])
                    parts.append(nd)
                    prev = p
                parts.extend(sents[prev:])
                context = " ".join(parts)
            else:
                if hay == "repeat":
                    lines = [GRASS] * max(0, h // self.grass_tok)
                else:
                    import random as _random
                    dr = _random.Random(distractor_seed)
                    saved, self.rng = self.rng, dr
                    per = 19 if k_kind == "words" else 46
                    nd = max(0, h // per)
                    dkeys = self._distinct(k_kind, nd, avoid=used)
                    dvals = [self._rand(v_kind) for _ in dkeys]
                    lines = [NEEDLE.format(type_v=v_kind, key=k, value=v) for k, v in zip(dkeys, dvals)]
                    pairs = pairs + list(zip(dkeys, dvals))
                    self.rng = saved
                idx = sorted((int(len(lines) * d / 100) for d in depth_pos), reverse=True)
                for (ki, nd), p in zip(reversed(needles), idx):
                    lines.insert(p, nd)
                context = "\n".join(lines)
            prompt = template.format(type_v=type_v, context=context, query=query)
            prompt += prefix.format(type_v=type_v, query=query)
            # Gold values in order of appearance in the context.
            gold = [nd.rsplit(" ", 1)[1][:-1] for ki, nd in needles if keys[ki] in queries]
            order = {v: context.find(v) for v in gold}
            gold.sort(key=lambda v: order[v])
            fus = []
            if followups:
                import random as _random
                cand = [kv for kv in pairs if kv[0] not in queries]
                for k, v in _random.Random(fu_seed).sample(cand, min(followups, len(cand))):
                    fus.append((fu_q.format(t=fu_type, k=k), f" {v}."))
            return Sample(task, prompt, " " + ", ".join(gold) + ".", gold, fus)

        overhead = self.count(template.format(type_v=type_v, context="", query=query)) + 16
        overhead += sum(self.count(nd) for _, nd in needles)
        return self._fit(build, budget, budget - overhead)[0]

    # ---- variable tracking --------------------------------------------------------------
    def _vt_core(self, noise_tokens, num_chains=1, num_hops=4, name_len=5):
        r = self.rng
        names = set()
        while len(names) < num_chains * (num_hops + 1):
            names.add("".join(r.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(name_len)))
        names = sorted(names)
        r.shuffle(names)
        chains, allvars = [], []
        for c in range(num_chains):
            vs = names[c * (num_hops + 1):(c + 1) * (num_hops + 1)]
            ch = [f"VAR {vs[0]} = {r.randint(10000, 99999)}"]
            ch += [f"VAR {vs[j + 1]} = VAR {vs[j]} " for j in range(num_hops)]
            chains.append(ch)
            allvars.append(vs)
        n_noise = max(len(chains[0]) + 1, noise_tokens // self.grass_tok)
        sents = [GRASS + "\n"] * n_noise
        for ch in chains:
            pos = sorted(r.sample(range(len(sents)), len(ch)))
            for j, (p, line) in enumerate(zip(pos, ch)):
                sents.insert(p + j, line)
        context = " ".join(sents).replace(". \n", ".\n")
        value = chains[0][0].split("=")[-1].strip()
        prompt = VT_TEMPLATE.format(context=context, query=value)
        prompt += VT_PREFIX.format(num_v=num_hops + 1, query=value)
        return prompt, allvars[0]

    def vt(self, budget, icl=True):
        r = self.rng
        seed = r.getrandbits(32)
        ex = ""
        if icl:
            p, vs = self._vt_core(300, name_len=5)
            ex = p + " " + " ".join(vs) + "\n\n"
        ex_tok = self.count(ex) if ex else 0

        def build(h):
            import random as _random
            saved, self.rng = self.rng, _random.Random(seed)
            p, vs = self._vt_core(h)
            self.rng = saved
            return Sample("vt", ex + p, " " + " ".join(vs), vs)

        return self._fit(build, budget, budget - ex_tok - 80)[0]

    # ---- common words extraction ----------------------------------------------------------
    def _cwe_core(self, n_words, freq_cw=30, freq_ucw=3, num_cw=10):
        r = self.rng
        n_ucw = max(0, (n_words - freq_cw * num_cw) // freq_ucw)
        vocab = r.sample(self.words, num_cw + n_ucw)
        common, uncommon = vocab[:num_cw], vocab[num_cw:]
        lst = common * freq_cw + uncommon * freq_ucw
        r.shuffle(lst)
        context = " ".join(f"{i + 1}. {w}" for i, w in enumerate(lst))
        return CWE_TEMPLATE.format(context=context) + CWE_PREFIX, common

    def cwe(self, budget, icl=True):
        r = self.rng
        seed = r.getrandbits(32)
        ex = ""
        if icl:
            p, cw = self._cwe_core(150, freq_cw=6, freq_ucw=1)
            ex = p + " " + " ".join(cw) + "\n\n"
        ex_tok = self.count(ex) if ex else 0
        per_word = 4.3  # tokens per "123. word" item, refined by _fit

        def build(h):
            import random as _random
            saved, self.rng = self.rng, _random.Random(seed)
            p, cw = self._cwe_core(max(330, int(h / per_word)))
            self.rng = saved
            return Sample("cwe", ex + p, " " + " ".join(cw), cw)

        return self._fit(build, budget, budget - ex_tok - 60)[0]

    # ---- frequent words extraction --------------------------------------------------------
    def _fwe_core(self, n_words, alpha=2.0, vocab_size=1000):
        r = self.rng
        vocab = set()
        while len(vocab) < vocab_size:
            vocab.add("".join(r.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(r.randint(4, 6))))
        vocab = sorted(vocab)
        r.shuffle(vocab)
        weights = [1.0 / (k + 1) ** alpha for k in range(vocab_size)]
        words = r.choices(vocab, weights=weights, k=n_words)
        counts = {}
        for w in words:
            counts[w] = counts.get(w, 0) + 1
        top = sorted(counts, key=lambda w: (-counts[w], w))[:3]
        # Ties with the third would make the gold ambiguous: ensure a strict top 3.
        ranked = sorted(counts.values(), reverse=True)
        if len(ranked) > 3 and ranked[2] == ranked[3]:
            words.append(top[2])
        context = " .... ".join(words)
        return FWE_TEMPLATE.format(context=context) + FWE_PREFIX, top

    def fwe(self, budget, icl=True):
        r = self.rng
        seed = r.getrandbits(32)
        ex = ""
        if icl:
            p, top = self._fwe_core(60, vocab_size=30)
            ex = p + " " + " ".join(top) + "\n\n"
        ex_tok = self.count(ex) if ex else 0
        per_word = 5.0

        def build(h):
            import random as _random
            saved, self.rng = self.rng, _random.Random(seed)
            p, top = self._fwe_core(max(20, int(h / per_word)))
            self.rng = saved
            return Sample("fwe", ex + p, " " + " ".join(top), top)

        return self._fit(build, budget, budget - ex_tok - 60)[0]

    def make(self, task, budget, icl=True, followups=0, vary_keys=False):
        if task in NIAH_TASKS:
            return self.niah(task, budget, followups=followups, vary_keys=vary_keys)
        return getattr(self, task)(budget, icl=icl)


def string_match_all(pred, gold):
    """RULER's string_match_all for one sample: fraction of gold strings found in pred."""
    p = pred.lower()
    return sum(1.0 for g in gold if g.lower() in p) / len(gold)


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        return [ln.rstrip("\n") for ln in f if ln.strip()]
