#!/usr/bin/env python3
"""A random-weight checkpoint shaped like Llama-3.1-8B, for speed benchmarks.

Llama-3.1-8B's shapes: hidden 4096, 32 layers, 32 query heads and 8 KV heads of 128,
MLP 14336, vocabulary 128256, untied LM head, RoPE theta 500000 with Llama 3.1's
"llama3" frequency scaling (factor 8, low/high frequency factors 1 and 4, original
context 8192), a 131072-token context, bf16. Every matrix and the embedding are drawn
from N(0, 0.02^2) (the config's initializer_range), the norm weights are 1. Speed does
not depend on the values; the text the model writes is noise.

Writes into OUTDIR (on local disk, not in the repository: ~16 GB):
  config.json                         LlamaForCausalLM, transformers 5.x style
  model-0000K-of-0000N.safetensors    shards of at most --shard-gb GB
  model.safetensors.index.json        tensor -> shard
  tokenizer.json, tokenizer_config.json   lukv-tiny's (its ids are < 8192 < the vocabulary),
                                      because lukv's loader wants a tokenizer
  .complete                           written last: a folder without it is rebuilt

The values are generated on the GPU (one seeded generator; CPU if there is none) and
written shard by shard. Usage:
  python3 scripts/make_bench_model.py OUTDIR [--seed 0] [--shard-gb 5] [--layers 32]
(--layers makes a shallower model of the same widths, for quick trials.)
"""
import argparse
import json
import os
import shutil
import sys
import time

import torch
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "models", "lukv-tiny")


def config(layers):
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 0,  # lukv-tiny's tokenizer's special tokens
        "eos_token_id": 1,
        "dtype": "bfloat16",
        "head_dim": 128,
        "hidden_act": "silu",
        "hidden_size": 4096,
        "initializer_range": 0.02,
        "intermediate_size": 14336,
        "max_position_embeddings": 131072,
        "mlp_bias": False,
        "num_attention_heads": 32,
        "num_hidden_layers": layers,
        "num_key_value_heads": 8,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_parameters": {
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        "tie_word_embeddings": False,
        "use_cache": True,
        "vocab_size": 128256,
    }


def tensors(cfg):
    """Yields (name, shape, kind) in checkpoint order; kind is "normal" or "ones"."""
    H, F, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    q = cfg["num_attention_heads"] * cfg["head_dim"]
    kv = cfg["num_key_value_heads"] * cfg["head_dim"]
    yield "model.embed_tokens.weight", (V, H), "normal"
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", (H,), "ones"
        yield p + "self_attn.q_proj.weight", (q, H), "normal"
        yield p + "self_attn.k_proj.weight", (kv, H), "normal"
        yield p + "self_attn.v_proj.weight", (kv, H), "normal"
        yield p + "self_attn.o_proj.weight", (H, q), "normal"
        yield p + "post_attention_layernorm.weight", (H,), "ones"
        yield p + "mlp.gate_proj.weight", (F, H), "normal"
        yield p + "mlp.up_proj.weight", (F, H), "normal"
        yield p + "mlp.down_proj.weight", (H, F), "normal"
    yield "model.norm.weight", (H,), "ones"
    yield "lm_head.weight", (V, H), "normal"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shard-gb", type=float, default=5.0)
    ap.add_argument("--layers", type=int, default=32)
    args = ap.parse_args()
    out = os.path.abspath(args.outdir)
    if os.path.exists(os.path.join(out, ".complete")):
        print(f"make_bench_model: {out} is complete; nothing to do")
        return
    if os.path.abspath(out).startswith(ROOT + os.sep):
        sys.exit(f"make_bench_model: {out} is inside the repository; write the ~16 GB model elsewhere (e.g. /tmp/lukv-bench-8b)")
    os.makedirs(out, exist_ok=True)
    for f in os.listdir(out):  # an incomplete earlier attempt
        if f.endswith(".safetensors"):
            os.remove(os.path.join(out, f))
    start = time.time()
    cfg = config(args.layers)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator(device=dev)
    gen.manual_seed(args.seed)
    std = cfg["initializer_range"]
    limit = int(args.shard_gb * 1e9)

    # Plan the shards first (names are model-K-of-N), then generate and write each.
    shards, cur, size, total = [], [], 0, 0
    for name, shape, kind in tensors(cfg):
        n = 2
        for d in shape:
            n *= d
        if cur and size + n > limit:
            shards.append(cur)
            cur, size = [], 0
        cur.append((name, shape, kind))
        size += n
        total += n
    shards.append(cur)
    weight_map = {}
    for k, shard in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        data = {}
        for name, shape, kind in shard:
            if kind == "ones":
                t = torch.ones(shape, dtype=torch.bfloat16)
            else:
                t = torch.randn(shape, generator=gen, device=dev, dtype=torch.float32).mul_(std).to(torch.bfloat16).cpu()
            data[name] = t
            weight_map[name] = fname
        save_file(data, os.path.join(out, fname), metadata={"format": "pt"})
        print(f"make_bench_model: wrote {fname} ({sum(t.numel() for t in data.values()) * 2 / 1e9:.2f} GB), {time.time() - start:.0f} s", flush=True)
        del data
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        src = os.path.join(TINY, name)
        if os.path.exists(src):
            shutil.copy(src, os.path.join(out, name))
    with open(os.path.join(out, ".complete"), "w") as f:
        f.write(f"seed {args.seed}, {total / 1e9:.2f} GB\n")
    print(f"make_bench_model: {out}: {len(shards)} shards, {total / 1e9:.2f} GB in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
