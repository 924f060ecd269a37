#!/usr/bin/env python3
"""Writes the LU-KV calibration set of the default model, models/lukv-tiny/calibration.json.

LU-KV profiles a model on one long context and many questions about it (the authors: one
~4k-token text, 30 questions). This one is built for lukv-tiny from sources that are NOT the
evaluation suites' (see models/lukv-tiny/README.md for the split contract): the haystack is
the model's held-out prose (data/corpus/heldout_prose.txt, never trained on, not the eval
suite's essay haystack), keys come from the training word lists (the eval suite draws keys
from the eval lists), and the seed is its own. Facts of the kinds the model was trained to
use are planted in the prose: number and UUID needles, a multi-value key, a variable chain.
The 30 questions ask about them in the model's formats, plus a few open prompts, so the
decode after each question exercises retrieval, copying and plain continuation.

Standard library only. Needs data/corpus from scripts/corpus/fetch_sources.sh and
build_corpus.py. Usage: python3 scripts/make_calibration.py [OUT.json]
"""
import json
import random
import re
import sys
import uuid

SEED = 20261128
OUT = sys.argv[1] if len(sys.argv) > 1 else "models/lukv-tiny/calibration.json"
TARGET_WORDS = 2600  # about 3.6k tokens of this prose with lukv-tiny's tokenizer


def words(path):
    return [w.strip() for w in open(path, encoding="utf-8") if w.strip()]


def main():
    rng = random.Random(SEED)
    prose = open("data/corpus/heldout_prose.txt", encoding="utf-8").read().splitlines()
    adjs, nouns = words("data/corpus/words_train_adj.txt"), words("data/corpus/words_train_noun.txt")
    # One held-out document, from a random sentence, long enough for the target.
    doc = max(prose, key=len)
    sents = [s for s in re.split(r"(?<=[.!?])\s+", doc) if s]
    start = rng.randrange(len(sents) // 2)
    picked, n = [], 0
    for s in sents[start:]:
        picked.append(s)
        n += len(s.split())
        if n >= TARGET_WORDS:
            break

    def key():
        return f"{rng.choice(adjs)}-{rng.choice(nouns)}"

    facts, questions = [], []
    for _ in range(10):
        k, v = key(), str(rng.randint(1000000, 9999999))
        facts.append(f"One of the special magic numbers for {k} is: {v}.")
        questions.append(f"\nWhat is the special magic number for {k} mentioned in the provided text? "
                         f"The special magic number for {k} mentioned in the provided text is")
    for _ in range(6):
        k, v = key(), str(uuid.UUID(int=rng.getrandbits(128), version=4))
        facts.append(f"One of the special magic uuids for {k} is: {v}.")
        questions.append(f"\nWhat is the special magic uuid for {k} mentioned in the provided text? "
                         f"The special magic uuid for {k} mentioned in the provided text is")
    mk = key()
    vals = [str(rng.randint(1000000, 9999999)) for _ in range(4)]
    for v in vals:
        facts.append(f"One of the special magic numbers for {mk} is: {v}.")
    for _ in range(3):
        questions.append(f"\nWhat are all the special magic numbers for {mk} mentioned in the provided text? "
                         f"The special magic numbers for {mk} mentioned in the provided text are")
    names = ["".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(5)) for _ in range(5)]
    value = str(rng.randint(10000, 99999))
    facts.append(f"VAR {names[0]} = {value}")
    for a, b in zip(names, names[1:]):
        facts.append(f"VAR {b} = VAR {a}")
    for _ in range(3):
        questions.append(f"\nQuestion: Find all variables that are assigned the value {value} in the text above. "
                         f"Answer: According to the chain(s) of variable assignment in the text above, 5 variables "
                         f"are assigned the value {value}, they are:")
    questions += [
        "\nQuestion: What happened in the text above? Answer:",
        "\nSummarize the text above in a few sentences.",
        "\nContinue the story.",
        "\nQuestion: Who is mentioned in the text above? Answer:",
        "\nWhich special magic numbers appear in the text above? The special magic numbers are",
        "\nQuestion: List the special magic uuids in the text above. Answer:",
        "\nQuestion: What is the last sentence of the text above? Answer:",
        "\nWhat are all the special magic numbers mentioned in the provided text? The special magic numbers mentioned in the provided text are",
    ]
    # Plant the facts at evenly spread depths (the variable chain keeps its order).
    slots = sorted(rng.sample(range(1, len(picked)), len(facts)))
    out = []
    fi = 0
    for i, s in enumerate(picked):
        while fi < len(facts) and slots[fi] == i:
            out.append(facts[fi])
            fi += 1
        out.append(s)
    context = ("Some special magic numbers and uuids are hidden within the following text. Make sure to memorize "
               "them. I will quiz you about them afterwards.\n" + " ".join(out))
    cal = {"name": "lukv-tiny-calibration-v1",
           "note": "LU-KV calibration for lukv-tiny, made by scripts/make_calibration.py (seed %d) from held-out "
                   "prose and training-split key words; not drawn from any evaluation suite." % SEED,
           "context": context, "questions": questions}
    assert len(questions) == 30, len(questions)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(cal, f, ensure_ascii=False, indent=1)
    print(f"wrote {OUT}: {len(context.split())} words, {len(questions)} questions")


if __name__ == "__main__":
    main()
