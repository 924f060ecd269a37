#!/usr/bin/env python3
"""Trains lukv-tiny's tokenizer: a byte-level BPE (Llama-3 pre-tokenizer, vocabulary 8192)
with the Hugging Face `tokenizers` library, on the training prose plus RULER-format task
text made with the training vocabularies (so templates, digits, uuids and VAR names get
sensible merges). Ids 0 and 1 are <|begin_of_text|> and <|end_of_text|>; encoding adds BOS.

Runs on the GPU machine (the `tokenizers` package is there, not here); CPU only, ~20 s.

Usage: python3 scripts/train_tokenizer.py [--data data/corpus] [--out DIR] [--vocab 8192] [--seed 1]

lukv-small's tokenizer (issue 16) adds --broad data/broad (a seeded sample of the broad
corpus's training documents, --broad-bytes of them: manuals, code, literature) and --samples
FILE (JSON lines of scripts/make-train-data: task samples of the trained format families), and
--special: the chat tokens, as special added tokens with the ids right after BOS and EOS.
"""
import argparse
import gzip
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus"))
import tasks  # noqa: E402

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"


def task_text(data, seed, n_per_task):
    """RULER-format samples (prompt + answer) of ~400-1500 tokens, training vocabularies."""
    rd = lambda f: tasks.read_lines(os.path.join(data, f))  # noqa: E731
    adjs, nouns = rd("words_train_adj.txt"), rd("words_train_noun.txt")
    docs = rd("train_prose.txt")
    rough = lambda s: len(s) // 4 + 1  # noqa: E731
    hay = tasks.Haystack(docs[:40], lambda xs: [rough(x) for x in xs])
    gen = tasks.TaskGen(adjs, nouns, adjs + nouns, hay, rough, random.Random(seed))
    out, rng = [], random.Random(seed + 1)
    for t in tasks.ALL_TASKS:
        for _ in range(n_per_task):
            s = gen.make(t, rng.randint(400, 1500) if t != "cwe" else 1800)
            out.append(s.prompt + s.answer)
    return out


def broad_text(folder, max_bytes, seed):
    """A seeded sample of the broad corpus's training documents, up to max_bytes of text."""
    docs = []
    with gzip.open(os.path.join(folder, "train.jsonl.gz"), "rt", encoding="utf-8") as f:
        for line in f:
            docs.append(json.loads(line)["text"])
    random.Random(seed).shuffle(docs)
    out, n = [], 0
    for d in docs:
        if n >= max_bytes:
            break
        out.append(d)
        n += len(d)
    return out


def sample_text(path):
    """prompt + answer (or text) of each make-train-data line."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            out.append(r["text"] if "text" in r else r["prompt"] + r["answer"])
    return out


def build(data, vocab, seed, n_per_task=150, broad="", broad_bytes=0, samples="", special=()):
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, min_frequency=2, special_tokens=[BOS, EOS, *special],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    if broad:  # lukv-small: broad documents and the format families instead of RULER tasks
        texts = broad_text(broad, broad_bytes, seed) + (sample_text(samples) if samples else [])
    else:
        texts = tasks.read_lines(os.path.join(data, "train_prose.txt")) + task_text(data, seed, n_per_task)
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    bos = tok.token_to_id(BOS)
    if bos != 0 or tok.token_to_id(EOS) != 1:
        raise SystemExit("train_tokenizer.py: special tokens did not get ids 0 and 1")
    for i, t in enumerate(special):
        if tok.token_to_id(t) != 2 + i:
            raise SystemExit(f"train_tokenizer.py: special token {t} did not get id {2 + i}")
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos)])
    return tok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/corpus")
    ap.add_argument("--out", default="models/lukv-tiny")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--broad", default="", help="broad corpus folder (data/broad): train on its documents")
    ap.add_argument("--broad-bytes", type=int, default=40_000_000, help="bytes of broad documents to train on")
    ap.add_argument("--samples", default="", help="JSON lines of make-train-data to train on as well")
    ap.add_argument("--special", default="", help="comma list of extra special tokens (ids 2, 3, ...)")
    a = ap.parse_args()
    if a.vocab > 8192:
        raise SystemExit("train_tokenizer.py: --vocab must be at most 8192")
    t0 = time.time()
    special = [t for t in a.special.split(",") if t]
    tok = build(a.data, a.vocab, a.seed, broad=a.broad, broad_bytes=a.broad_bytes, samples=a.samples, special=special)
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "tokenizer.json")
    tok.save(path)
    tok = Tokenizer.from_file(path)
    sample = "In the beginning God created the heaven and the earth. The special magic number is 1234567."
    enc = tok.encode(sample)
    print(f"tokenizer: vocab {tok.get_vocab_size()} -> {path} in {time.time() - t0:.1f}s; "
          f"{len(sample)} chars -> {len(enc.ids)} ids: {enc.tokens[:24]}")
    if tok.decode(enc.ids, skip_special_tokens=True) != sample:
        raise SystemExit("train_tokenizer.py: decode(encode(x)) != x")


if __name__ == "__main__":
    main()
