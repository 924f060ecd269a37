#!/usr/bin/env python3
"""CPU cross-check of a lukv-tiny checkpoint with numpy only (no torch, transformers or
tokenizers): a byte-level BPE encoder for its tokenizer.json and a float32 Llama forward.

Used on the development machine (2 cores) when no GPU time is left: it measures held-out
perplexity exactly as scripts/eval_model_hf.py does (chunks of BOS + 4095 tokens), and it
checks itself against numbers the transformers run printed (token counts of the evaluation
prompts, greedy answers). Needs numpy and the `regex` module (Debian: python3-numpy,
python3-regex; a BLAS such as libopenblas0-pthread makes it ~15x faster).

Usage: /usr/bin/python3 scripts/eval_model_numpy.py --model models/lukv-tiny \
           [--data data/corpus] [--ppl-chunks 64] [--check-log models/lukv-tiny/train_eval.log] [--out F]
"""
import argparse
import json
import math
import os
import random
import re
import struct
import sys
import time
import zlib

import numpy as np
import regex

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus"))
import tasks  # noqa: E402


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class BPE:
    """Encoder for a byte-level BPE tokenizer.json with a Split(Regex) + ByteLevel pre-tokenizer."""

    def __init__(self, path):
        tj = json.load(open(path, encoding="utf-8"))
        m = tj["model"]
        if m["type"] != "BPE":
            raise SystemExit(f"{path}: model type {m['type']} is not BPE")
        self.vocab = m["vocab"]
        self.ignore_merges = m.get("ignore_merges", False)
        merges = [tuple(x.split(" ")) if isinstance(x, str) else tuple(x) for x in m["merges"]]
        self.ranks = {p: i for i, p in enumerate(merges)}
        pre = tj["pre_tokenizer"]["pretokenizers"][0]
        self.pat = regex.compile(pre["pattern"]["Regex"])
        self.be = bytes_to_unicode()
        self.inv = {v: k for k, v in self.vocab.items()}
        self.bd = {v: k for k, v in self.be.items()}
        self.cache = {}

    def _piece(self, s):
        if s in self.cache:
            return self.cache[s]
        w = "".join(self.be[b] for b in s.encode("utf-8"))
        if self.ignore_merges and w in self.vocab:
            out = [self.vocab[w]]
        else:
            parts = list(w)
            while len(parts) > 1:
                best, bi = None, -1
                for i in range(len(parts) - 1):
                    r = self.ranks.get((parts[i], parts[i + 1]))
                    if r is not None and (best is None or r < best):
                        best, bi = r, i
                if best is None:
                    break
                parts[bi:bi + 2] = [parts[bi] + parts[bi + 1]]
            out = [self.vocab[p] for p in parts]
        self.cache[s] = out
        return out

    def encode(self, text, bos=True):
        ids = [0] if bos else []
        for piece in self.pat.findall(text):
            ids.extend(self._piece(piece))
        return ids

    def decode(self, ids):
        s = "".join(self.inv[i] for i in ids if i > 1)
        return bytes(self.bd[c] for c in s).decode("utf-8", "replace")


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        if t["dtype"] != "BF16":
            raise SystemExit(f"{path}: {name} is {t['dtype']}, expected BF16")
        u = np.frombuffer(data[a:b], dtype=np.uint16).astype(np.uint32) << 16
        out[name] = u.view(np.float32).reshape(t["shape"])
    return out


class Llama:
    """float32 Llama forward (RMSNorm, RoPE default, SwiGLU, GQA, tied embeddings)."""

    def __init__(self, model_dir):
        c = json.load(open(os.path.join(model_dir, "config.json")))
        self.c = c
        self.w = load_safetensors(os.path.join(model_dir, "model.safetensors"))
        self.nh, self.nkv = c["num_attention_heads"], c["num_key_value_heads"]
        self.hd = c.get("head_dim") or c["hidden_size"] // self.nh
        theta = (c.get("rope_parameters") or {}).get("rope_theta", c.get("rope_theta", 10000.0))
        self.inv_freq = 1.0 / (theta ** (np.arange(0, self.hd, 2, dtype=np.float64) / self.hd))
        self.eps = c["rms_norm_eps"]
        emb = self.w["model.embed_tokens.weight"]
        self.lm_head = self.w.get("lm_head.weight", emb)

    def norm(self, x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + self.eps) * w

    def forward(self, ids):
        """ids [T] -> logits [T, V] (float32)."""
        W, T = self.w, len(ids)
        x = W["model.embed_tokens.weight"][np.asarray(ids)]
        ang = np.outer(np.arange(T, dtype=np.float64), self.inv_freq)
        cos = np.cos(np.concatenate([ang, ang], -1)).astype(np.float32)
        sin = np.sin(np.concatenate([ang, ang], -1)).astype(np.float32)
        h2 = self.hd // 2

        def rope(t):  # [H, T, D]
            rot = np.concatenate([-t[..., h2:], t[..., :h2]], -1)
            return t * cos + rot * sin

        mask = np.triu(np.full((T, T), -np.inf, dtype=np.float32), 1)
        grp = self.nh // self.nkv
        for i in range(self.c["num_hidden_layers"]):
            p = f"model.layers.{i}."
            h = self.norm(x, W[p + "input_layernorm.weight"])
            q = (h @ W[p + "self_attn.q_proj.weight"].T).reshape(T, self.nh, self.hd).transpose(1, 0, 2)
            k = (h @ W[p + "self_attn.k_proj.weight"].T).reshape(T, self.nkv, self.hd).transpose(1, 0, 2)
            v = (h @ W[p + "self_attn.v_proj.weight"].T).reshape(T, self.nkv, self.hd).transpose(1, 0, 2)
            q, k = rope(q), rope(k)
            o = np.empty((self.nh, T, self.hd), dtype=np.float32)
            for hh in range(self.nh):
                s = (q[hh] @ k[hh // grp].T) / math.sqrt(self.hd) + mask
                s -= s.max(-1, keepdims=True)
                np.exp(s, out=s)
                s /= s.sum(-1, keepdims=True)
                o[hh] = s @ v[hh // grp]
            x = x + o.transpose(1, 0, 2).reshape(T, -1) @ W[p + "self_attn.o_proj.weight"].T
            h = self.norm(x, W[p + "post_attention_layernorm.weight"])
            g = h @ W[p + "mlp.gate_proj.weight"].T
            u = h @ W[p + "mlp.up_proj.weight"].T
            x = x + ((g / (1 + np.exp(-g))) * u) @ W[p + "mlp.down_proj.weight"].T
        return self.norm(x, W["model.norm.weight"]) @ self.lm_head.T

    def greedy(self, ids, max_new, eos=1):
        ids, out = list(ids), []
        for _ in range(max_new):
            t = int(self.forward(ids)[-1].argmax())
            if t == eos:
                break
            out.append(t)
            ids.append(t)
        return out


def perplexity(model, bpe, docs, ctx, max_chunks):
    ids = []
    for d in docs:
        ids.extend(bpe.encode(d, bos=False) + [1])
    n = min(max_chunks, len(ids) // (ctx - 1))
    tot, cnt, nbytes = 0.0, 0, 0
    for i in range(n):
        x = [0] + ids[i * (ctx - 1):(i + 1) * (ctx - 1)]
        lg = model.forward(x)[:-1].astype(np.float64)
        lg -= lg.max(-1, keepdims=True)
        lse = np.log(np.exp(lg).sum(-1))
        tgt = np.asarray(x[1:])
        tot += float((lse - lg[np.arange(len(tgt)), tgt]).sum())
        cnt += len(tgt)
        nbytes += len(bpe.decode(x[1:]).encode())
    return {"ppl": round(math.exp(tot / cnt), 3), "tokens": cnt, "context": ctx,
            "bits_per_byte": round(tot / math.log(2) / nbytes, 4)}


def check_log(model, bpe, data, log_path, seed=20261128, n=50):
    """Rebuilds the evaluation prompts of eval_model_hf.py with this BPE and compares the
    maximum prompt length per task (4096 only) and the greedy answer of each task's first
    sample with what the transformers run printed in log_path."""
    text = open(log_path, encoding="utf-8").read()
    pat = re.compile(r"L=(\d+) (\w+): [\d.]+% \(prompt tokens max (\d+), [\d.]+s\) e\.g\. gold=(\[.*?\]) pred='(.*?)'\n")
    rd = lambda f: tasks.read_lines(os.path.join(data, f))  # noqa: E731
    adjs, nouns = rd("words_eval_adj.txt"), rd("words_eval_noun.txt")
    hay = tasks.Haystack(rd("eval_haystack_devil.txt"), lambda xs: [len(bpe.encode(x, bos=False)) for x in xs])
    count = lambda s: len(bpe.encode(s))  # noqa: E731
    res = []
    for L, task, mx, gold, pred in pat.findall(text):
        L, mx = int(L), int(mx)
        if L != 4096:
            continue
        fam = tasks.task_family(task)
        rng = random.Random(seed * 1000003 + zlib.crc32(f"{task}:{L}".encode()))
        gen = tasks.TaskGen(adjs, nouns, adjs + nouns, hay, count, rng)
        samples = [gen.make(task, L - tasks.TOKENS_TO_GENERATE[fam]) for _ in range(n)]
        lens = [count(s.prompt) for s in samples]
        row = {"task": task, "length": L, "prompt_max_hf": mx, "prompt_max_numpy": max(lens),
               "gold_hf": gold, "gold_numpy": str(samples[0].gold)}
        if task.startswith("niah_single") or task == "vt":
            out = model.greedy(bpe.encode(samples[0].prompt), 24 if task != "niah_single_3" else 40)
            row.update(pred_hf=pred, pred_numpy=bpe.decode(out))
        res.append(row)
        print(json.dumps(row), flush=True)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default="data/corpus")
    ap.add_argument("--ppl-chunks", type=int, default=64)
    ap.add_argument("--check-log", default="")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    t0 = time.time()
    bpe = BPE(os.path.join(a.model, "tokenizer.json"))
    model = Llama(a.model)
    res = {"model": a.model, "method": "numpy float32 forward on the CPU (scripts/eval_model_numpy.py)"}
    if a.check_log:
        res["check_against_transformers_log"] = check_log(model, bpe, a.data, a.check_log)
    rd = lambda f: tasks.read_lines(os.path.join(a.data, f))  # noqa: E731
    res["perplexity"] = {
        "heldout_prose": perplexity(model, bpe, rd("heldout_prose.txt"), 4096, a.ppl_chunks),
        "devil_reserved": perplexity(model, bpe, rd("eval_haystack_devil.txt"), 4096, a.ppl_chunks),
    }
    res["elapsed_s"] = round(time.time() - t0, 1)
    print(json.dumps(res["perplexity"]), flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
