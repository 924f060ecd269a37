#!/usr/bin/env python3
"""Evaluates a lukv-tiny checkpoint with Hugging Face transformers (full KV cache, greedy):
RULER-format tasks on the held-out split at given lengths, and perplexity on held-out prose.

Held-out split (the contract of models/lukv-tiny/README.md): evaluation words
(words_eval_*.txt), The Devil's Dictionary as the essay haystack (never trained on), and
seeds derived from --seed (training uses other seeds and the training words and prose).
A sample of length L has a prompt of at most L - tokens_to_generate tokens (RULER's rule);
scoring is RULER's string_match_all (fraction of gold strings found in the output).

Usage: python3 scripts/eval_model_hf.py --model models/lukv-tiny [--data data/corpus]
           [--lengths 4096,16384] [--n 50] [--seed 20261128] [--out eval.json] [--keep-preds]
"""
import argparse
import json
import math
import os
import random
import sys
import time
import zlib

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus"))
import tasks  # noqa: E402

MAX_NEW = {"niah": 48, "vt": 30, "cwe": 48, "fwe": 24}  # stops earlier at EOS


def log(*a):
    print(f"[{time.strftime('%H:%M:%S')}]", *a, flush=True)


def load(model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from tokenizers import Tokenizer
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).cuda().eval()
    raw = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    info = {"model_class": type(model).__name__}
    try:
        hf = AutoTokenizer.from_pretrained(model_dir)
        probe = "In the beginning was the Word. The special magic number is 1234567."
        same = hf(probe)["input_ids"] == raw.encode(probe).ids
        info.update(auto_tokenizer=type(hf).__name__, auto_tokenizer_matches=same)
    except Exception as e:  # record, evaluate with the raw tokenizer anyway
        info.update(auto_tokenizer_error=repr(e))
    return model, raw, info


@torch.no_grad()
def generate(model, prompts_ids, max_new, eos, batch):
    """Greedy continuation of each prompt (lists of ids), left-padded batches; returns id lists."""
    from transformers import GenerationConfig
    outs = []
    gc = GenerationConfig(max_new_tokens=max_new, do_sample=False, eos_token_id=eos, pad_token_id=eos,
                          bos_token_id=0)
    for i in range(0, len(prompts_ids), batch):
        chunk = prompts_ids[i:i + batch]
        L = max(len(p) for p in chunk)
        ids = torch.full((len(chunk), L), eos, dtype=torch.long)
        att = torch.zeros((len(chunk), L), dtype=torch.long)
        for j, p in enumerate(chunk):
            ids[j, L - len(p):] = torch.tensor(p)
            att[j, L - len(p):] = 1
        out = model.generate(input_ids=ids.cuda(), attention_mask=att.cuda(), generation_config=gc)
        for j in range(len(chunk)):
            g = out[j, L:].tolist()
            if eos in g:
                g = g[:g.index(eos)]
            outs.append(g)
    return outs


@torch.no_grad()
def perplexity(model, raw, docs, ctx, max_chunks, batch=8):
    ids = []
    for e in raw.encode_batch(docs, add_special_tokens=False):
        ids.extend(e.ids + [1])
    n = min(max_chunks, len(ids) // (ctx - 1))
    if n == 0:
        return None
    chunks = torch.tensor([[0] + ids[i * (ctx - 1):(i + 1) * (ctx - 1)] for i in range(n)])
    tot, cnt = 0.0, 0
    for i in range(0, n, batch):
        x = chunks[i:i + batch].cuda()
        logits = model(input_ids=x).logits[:, :-1].float()
        nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1), reduction="sum")
        tot += nll.item()
        cnt += x[:, 1:].numel()
    text_bytes = sum(len(raw.decode(c[1:].tolist()).encode()) for c in chunks)
    return {"ppl": round(math.exp(tot / cnt), 3), "tokens": cnt, "context": ctx,
            "bits_per_byte": round(tot / math.log(2) / text_bytes, 4)}


def depth(sample):
    """Where the first gold value sits in the prompt (0: the start, farthest from the
    question), or None when the prompt does not contain it verbatim."""
    at = sample.prompt.find(sample.gold[0]) if sample.gold else -1
    return round(at / len(sample.prompt), 3) if at >= 0 else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default="data/corpus")
    ap.add_argument("--lengths", default="4096,16384")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--tasks", default=",".join(tasks.ALL_TASKS))
    ap.add_argument("--seed", type=int, default=20261128)
    ap.add_argument("--ppl-chunks", type=int, default=64)
    ap.add_argument("--out", default="")
    ap.add_argument("--keep-preds", action="store_true",
                    help="store every sample's gold, prediction and score in the output (error analysis)")
    a = ap.parse_args()
    t0 = time.time()
    model, raw, info = load(a.model)
    log(f"loaded {a.model}: {info}")
    rd = lambda f: tasks.read_lines(os.path.join(a.data, f))  # noqa: E731
    adjs, nouns = rd("words_eval_adj.txt"), rd("words_eval_noun.txt")
    devil = rd("eval_haystack_devil.txt")
    count_batch = lambda xs: [len(e.ids) for e in raw.encode_batch(xs, add_special_tokens=False)]  # noqa: E731
    hay = tasks.Haystack(devil, count_batch)
    count = lambda s: len(raw.encode(s).ids)  # noqa: E731
    res = {"model": a.model, "seed": a.seed, "n": a.n, "load": info, "tasks": {}, "examples": []}
    lengths = [int(x) for x in a.lengths.split(",") if x]

    def save():  # after every step, so a time limit loses only what was not measured yet
        niah = [t for t in res["tasks"] if t in tasks.NIAH_TASKS]
        done = lambda t, L: str(L) in res["tasks"][t]  # noqa: E731
        res["retrieval_mean"] = {str(L): round(sum(res["tasks"][t][str(L)]["accuracy"] for t in niah if done(t, L))
                                               / max(1, sum(done(t, L) for t in niah)), 2) for L in lengths}
        res["eval_s"] = round(time.time() - t0, 1)
        if a.out:
            with open(a.out, "w") as f:
                json.dump(res, f, indent=1)

    # Perplexity first: it is cheap, and the bar needs it.
    res["perplexity"] = {
        "heldout_prose": perplexity(model, raw, rd("heldout_prose.txt"), 4096, a.ppl_chunks),
        "devil_reserved": perplexity(model, raw, devil, 4096, a.ppl_chunks),
    }
    log("perplexity:", res["perplexity"])
    save()
    for L in lengths:
        for task in a.tasks.split(","):
            fam = tasks.task_family(task)
            rng = random.Random(a.seed * 1000003 + zlib.crc32(f"{task}:{L}".encode()))
            gen = tasks.TaskGen(adjs, nouns, adjs + nouns, hay, count, rng)
            budget = L - tasks.TOKENS_TO_GENERATE[fam]
            samples = [gen.make(task, budget) for _ in range(a.n)]
            pids = [raw.encode(s.prompt).ids for s in samples]
            t1 = time.time()
            bs = max(1, min(64, 320000 // L))
            outs = generate(model, pids, MAX_NEW[fam], 1, bs)
            preds = [raw.decode(o, skip_special_tokens=True) for o in outs]
            scores = [tasks.string_match_all(p, s.gold) for p, s in zip(preds, samples)]
            acc = 100.0 * sum(scores) / len(scores)
            res["tasks"].setdefault(task, {})[str(L)] = {
                "accuracy": round(acc, 2), "n": len(samples),
                "prompt_tokens_mean": round(sum(map(len, pids)) / len(pids), 1),
                "prompt_tokens_max": max(map(len, pids))}
            res["examples"].append({"task": task, "length": L, "gold": samples[0].gold, "pred": preds[0]})
            if a.keep_preds:
                res.setdefault("samples", []).extend(
                    {"task": task, "length": L, "index": i, "gold": s.gold, "pred": p, "score": sc,
                     "depth": depth(s)}
                    for i, (s, p, sc) in enumerate(zip(samples, preds, scores)))
            log(f"L={L} {task}: {acc:.1f}% (prompt tokens max {max(map(len, pids))}, "
                f"{time.time() - t1:.1f}s) e.g. gold={samples[0].gold} pred={preds[0][:80]!r}")
            save()
    res["all_mean"] = {str(L): round(sum(v[str(L)]["accuracy"] for v in res["tasks"].values() if str(L) in v)
                                     / max(1, sum(str(L) in v for v in res["tasks"].values())), 2) for L in lengths}
    save()
    log("retrieval mean (niah tasks):", res["retrieval_mean"], "all tasks:", res["all_mean"])


if __name__ == "__main__":
    main()
