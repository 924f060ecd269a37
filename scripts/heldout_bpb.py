#!/usr/bin/env python3
"""Held-out perplexity of checkpoints with different tokenizers, made comparable: bits per
byte (total next-token negative log-likelihood in bits over the UTF-8 bytes of the scored
text) and, per model, the per-token perplexity too. Each document is cut into windows of at
most --window tokens (BOS + text), scored with transformers (full attention, bf16).

Text sets: --broad FILE (JSONL.gz of scripts/corpus/build_broad.py, e.g. data/broad/heldout.jsonl.gz:
manuals, code and literature never trained on) and --prose FILE (one document per line, e.g.
data/corpus/heldout_prose.txt: lukv-tiny's held-out literature). --max-bytes caps each set
(documents in file order).

Usage: python3 scripts/heldout_bpb.py --model models/lukv-small --model models/lukv-tiny \
           --broad data/broad/heldout.jsonl.gz --prose data/corpus/heldout_prose.txt [--out bpb.json]
"""
import argparse
import gzip
import json
import math
import time

import torch
import torch.nn.functional as F


def read_sets(a):
    sets = {}
    if a.broad:
        docs = []
        with gzip.open(a.broad, "rt", encoding="utf-8") as f:
            for line in f:
                docs.append(json.loads(line)["text"])
        sets["broad-heldout"] = docs
    if a.prose:
        with open(a.prose, encoding="utf-8") as f:
            sets["literature-heldout"] = [line.rstrip("\n") for line in f if line.strip()]
    for k, docs in sets.items():
        out, n = [], 0
        for d in docs:
            if n >= a.max_bytes:
                break
            out.append(d)
            n += len(d.encode())
        sets[k] = out
    return sets


@torch.no_grad()
def score(model, tok, docs, window, dev):
    bos = tok.bos_token_id
    nll_nats, ntok, nbytes = 0.0, 0, 0
    for d in docs:
        ids = tok(d, add_special_tokens=False)["input_ids"]
        nbytes += len(d.encode())
        for s in range(0, len(ids), window - 1):
            piece = [bos] + ids[s:s + window - 1]
            x = torch.tensor([piece], device=dev)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = model(input_ids=x).logits
            nll = F.cross_entropy(logits[0, :-1].float(), x[0, 1:], reduction="sum")
            nll_nats += nll.item()
            ntok += len(piece) - 1
    return {"bits_per_byte": nll_nats / math.log(2) / nbytes, "token_ppl": math.exp(nll_nats / ntok),
            "tokens": ntok, "bytes": nbytes, "docs": len(docs)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--broad", default="")
    ap.add_argument("--prose", default="")
    ap.add_argument("--max-bytes", type=int, default=2_000_000)
    ap.add_argument("--window", type=int, default=4096)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer
    dev = "cuda"
    sets = read_sets(a)
    res = {"window": a.window, "max_bytes": a.max_bytes, "models": {}}
    for m in a.model:
        t0 = time.time()
        tok = AutoTokenizer.from_pretrained(m)
        model = AutoModelForCausalLM.from_pretrained(m, dtype=torch.bfloat16, attn_implementation="sdpa").to(dev).eval()
        res["models"][m] = {k: score(model, tok, docs, a.window, dev) for k, docs in sets.items()}
        print(m, json.dumps(res["models"][m]), f"{time.time() - t0:.0f}s", flush=True)
    print("\n| model | " + " | ".join(f"{k} bits/byte" for k in sets) + " |")
    print("|---|" + "---|" * len(sets))
    for m, r in res["models"].items():
        print(f"| {m} | " + " | ".join(f"{r[k]['bits_per_byte']:.4f} ({r[k]['bytes']:,} bytes)" for k in sets) + " |")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
