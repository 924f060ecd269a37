#!/usr/bin/env python3
"""Outside check for lukv's token scorers (eviction/scorer_*.go): kvpress's scoring
formulas re-implemented in PyTorch, applied to a layer view that lukv dumped.

kvpress itself is not installed where this runs (the GPU machine has torch, numpy and
safetensors), so every scorer below follows the source of NVIDIA/kvpress,
kvpress/presses/<file>.py, named in each function, reading the same tensors that the
press reads from the model (pre-RoPE queries, rotated queries, cached keys and values).

Input: a safetensors file written by eviction.DumpLayerView (all F32):
    queries           [Nq, Tq, D]   rotated queries
    pre_rope_queries  [Nq, Tq, D]   queries before RoPE
    keys              [Nkv, T, D]   rotated keys, as cached
    values            [Nkv, T, D]
    inv_freq          [D/2]         RoPE inverse frequencies
    positions         [T]           key positions
    query_positions   [Tq]          query positions
After a prefill Tq = T and the queries are those of the same tokens (what kvpress sees
at prefill); for a decode-time view the queries are the last Tq tokens'.

Output: a safetensors file with one F32 tensor [Nkv, T] per scorer, named by lukv's CLI
names: expected-attention, snapkv, keydiff, knorm, streaming, tova, h2o (random has no
counterpart: torch's generator cannot be reproduced in Go). eviction.ReadScoreGoldens
reads it. Metadata records the configuration.

Where lukv generalises a kvpress formula beyond a prefill (position-based causality and
counts for decode-time views) this script does the same and says so; for a prefill
view (positions 0..T-1, Tq = T) every formula is kvpress's exactly, which the script
asserts where the two forms differ.

Computation is in float64 by default (--dtype), so the goldens are the exact function of
the dumped float32 tensors up to float64 rounding; kvpress itself runs in the model's
dtype (bf16 usually).

Usage:
    python3 scripts/score_goldens.py VIEW.safetensors OUT.safetensors [options]
    python3 scripts/score_goldens.py --help
"""
import argparse
import math

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file


def load_view(path, dtype):
    """Reads a DumpLayerView file; returns a dict of tensors (batch dim 1 added to the
    per-head tensors, as kvpress's [bsz, heads, seq, dim]) and the metadata."""
    out = {}
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        for name in f.keys():
            out[name] = f.get_tensor(name)
    if meta.get("format") != "lukv-layerview/1":
        raise SystemExit(f"{path}: metadata format {meta.get('format')!r}, want 'lukv-layerview/1'")
    for name in ("queries", "pre_rope_queries", "keys", "values"):
        out[name] = out[name].to(dtype).unsqueeze(0)
    # inv_freq stays float32, as transformers keeps it; positions are integers.
    out["inv_freq"] = out["inv_freq"].to(torch.float32)
    out["positions"] = out["positions"].to(torch.int64)
    out["query_positions"] = out["query_positions"].to(torch.int64)
    return out, meta


def repeat_kv(x, n_rep):
    """transformers' repeat_kv: [b, nkv, s, d] -> [b, nkv*n_rep, s, d], KV head h serving
    query heads h*n_rep .. h*n_rep+n_rep-1."""
    b, nkv, s, d = x.shape
    if n_rep == 1:
        return x
    return x[:, :, None].expand(b, nkv, n_rep, s, d).reshape(b, nkv * n_rep, s, d)


def rotary_cos_sin(position_ids, inv_freq, dtype):
    """transformers' LlamaRotaryEmbedding (default rope, attention_scaling 1): angles
    position*inv_freq formed in float32, duplicated for the two halves; [n, D]."""
    freqs = position_ids.to(torch.float32)[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def causal_mask(query_positions, positions, dtype):
    """Additive mask [Tq, T]: -inf where a key comes after the query's position."""
    m = torch.zeros(len(query_positions), len(positions), dtype=dtype)
    m[positions[None, :] > query_positions[:, None]] = float("-inf")
    return m


def is_prefill(v):
    T = v["keys"].shape[2]
    return v["queries"].shape[2] == T and torch.equal(v["positions"], torch.arange(T))


def expected_attention(v, epsilon, n_future, n_sink, use_covariance, use_vnorm):
    """kvpress/presses/expected_attention_press.py (ExpectedAttentionPress.score,
    get_query_statistics, apply_avg_rope)."""
    keys, values = v["keys"], v["values"]
    bsz, nkv, T, d = keys.shape
    nq = v["pre_rope_queries"].shape[1]
    groups = nq // nkv
    if T <= n_sink:  # kvpress asserts T > n_sink; lukv scores every token 1
        return torch.ones(nkv, T, dtype=keys.dtype)

    # Query statistics. kvpress drops hidden_states[:, n_sink:]'s first n_sink rows; for
    # a prefill that is the rows at the sink positions, which is what lukv drops in
    # general (no row for a decode-time view). All rows if none is left.
    sink_positions = v["positions"][:n_sink]
    keep = ~torch.isin(v["query_positions"], sink_positions)
    if not keep.any():
        keep[:] = True
    if is_prefill(v):
        assert keep.sum().item() == T - n_sink
    query_states = v["pre_rope_queries"][:, :, keep]
    mu = query_states.mean(dim=2, keepdim=True)
    cov = None
    if use_covariance:
        centered = query_states - mu
        cov = torch.einsum("bnsi,bnsj->bnij", centered, centered) / query_states.shape[2]
    mu = mu.squeeze(2)

    # Average RoPE over the n_future positions after the last one. kvpress starts at
    # q_len (= the number of hidden states), which is last position + 1 after a prefill.
    start = int(v["positions"][-1].item()) + 1
    if is_prefill(v):
        assert start == v["queries"].shape[2]
    position_ids = torch.arange(start, start + n_future)
    cos, sin = rotary_cos_sin(position_ids, v["inv_freq"], mu.dtype)
    Id = torch.eye(d, dtype=cos.dtype)
    P = torch.zeros((d, d), dtype=cos.dtype)
    P[d // 2 :, : d // 2], P[: d // 2, d // 2 :] = torch.eye(d // 2), -torch.eye(d // 2)
    R = cos.unsqueeze(1) * Id + sin.unsqueeze(1) * P
    R = R.mean(dim=0)
    mu = torch.matmul(mu, R.T)
    if cov is not None:
        cov = torch.matmul(R, torch.matmul(cov, R.T))

    # Scores of the keys after the sinks.
    keys = keys[:, :, n_sink:]
    values = values[:, :, n_sink:]
    n = keys.shape[2]
    keys = repeat_kv(keys, groups).transpose(2, 3)
    scores = torch.matmul(mu.unsqueeze(2), keys).squeeze(2) / math.sqrt(d)
    if use_covariance:
        scores += torch.einsum("bhin, bhij, bhjn->bhn", keys, cov, keys) / d / 2
    scores = F.softmax(scores, dim=-1)
    scores = scores.view(bsz, nkv, groups, n).mean(dim=2)
    if use_vnorm:
        scores = (scores + epsilon) * values.norm(dim=-1)
    scores = F.pad(scores, (n_sink, 0), value=scores.max().item() + 1)
    return scores[0]


def window_attention(v, window):
    """kvpress SnapKVPress.compute_window_attention (snapkv_press.py): the last `window`
    rotated queries against all keys, causal, softmax, then the columns before the
    window. Causality is by position (kvpress: torch.triu(..., diagonal=k_len-window+1),
    the same mask for a prefill, asserted)."""
    q = v["queries"][:, :, -window:]
    keys = v["keys"]
    nq, nkv, T, d = q.shape[1], keys.shape[1], keys.shape[2], keys.shape[3]
    key_states = repeat_kv(keys, nq // nkv)
    attn = torch.matmul(q, key_states.transpose(2, 3)) / math.sqrt(d)
    mask = causal_mask(v["query_positions"][-window:], v["positions"], attn.dtype)
    if is_prefill(v):
        triu = torch.triu(torch.ones(window, T, dtype=attn.dtype) * float("-inf"), diagonal=T - window + 1)
        assert torch.equal(torch.isinf(mask), torch.isinf(triu))
    attn = attn + mask
    attn = F.softmax(attn, dim=-1)
    return attn[..., :-window]


def snapkv(v, window, kernel, pool):
    """kvpress/presses/snapkv_press.py (SnapKVPress.score). pool "max" is the LU-KV
    authors' variant (F.max_pool1d in place of F.avg_pool1d). The window is capped at
    the number of query rows (a decode-time view has fewer)."""
    keys = v["keys"]
    bsz, nkv, T, _ = keys.shape
    nq = v["queries"].shape[1]
    w = min(window, v["queries"].shape[2])
    if T <= w:  # kvpress asserts q_len > window_size; lukv scores every token 1
        return torch.ones(nkv, T, dtype=keys.dtype)
    attn = window_attention(v, w)
    scores = attn.mean(dim=-2)
    if pool == "max":
        scores = F.max_pool1d(scores, kernel_size=kernel, padding=kernel // 2, stride=1)
    else:
        scores = F.avg_pool1d(scores, kernel_size=kernel, padding=kernel // 2, stride=1)
    scores = scores.view(bsz, nkv, nq // nkv, T - w).mean(2)
    scores = F.pad(scores, (0, w), value=scores.max().item() + 1)
    return scores[0]


def tova(v):
    """kvpress/presses/tova_press.py (TOVAPress.score): the last query's attention,
    averaged over all query heads of the layer, the same for every KV head."""
    keys = v["keys"]
    nkv, T = keys.shape[1], keys.shape[2]
    if T <= 1:
        return torch.ones(nkv, T, dtype=keys.dtype)
    attn = window_attention(v, 1)
    scores = attn.mean(1)
    scores = scores.repeat(1, nkv, 1)
    scores = F.pad(scores, (0, 1), value=scores.max().item() + 1)
    return scores[0]


def observed_attention(v):
    """kvpress/presses/observed_attention_press.py (ObservedAttentionPress.score) on
    eager attention weights: summed over the queries, divided by how many queries see
    each key (kvpress: arange(T, 0, -1), the same after a prefill, asserted), averaged
    over the KV group. A key no query sees scores 0."""
    q, keys = v["queries"], v["keys"]
    bsz, nkv, T, d = keys.shape
    nq = q.shape[1]
    attn = torch.matmul(q, repeat_kv(keys, nq // nkv).transpose(2, 3)) / math.sqrt(d)
    attn = F.softmax(attn + causal_mask(v["query_positions"], v["positions"], attn.dtype), dim=-1)
    scores = attn.sum(2)
    seen = (v["query_positions"][:, None] >= v["positions"][None, :]).sum(0).to(scores.dtype)
    if is_prefill(v):
        assert torch.equal(seen, torch.arange(T, 0, -1).to(seen.dtype))
    scores = torch.where(seen > 0, scores / seen.clamp(min=1), torch.zeros_like(scores))
    scores = scores.view(bsz, nkv, -1, T).mean(2)
    return scores[0]


def keydiff(v):
    """kvpress/presses/keydiff_press.py (KeyDiffPress.score)."""
    keys = v["keys"]
    anchor = F.normalize(keys, p=2, dim=-1).mean(dim=2, keepdim=True)
    return (-F.cosine_similarity(keys, anchor, dim=-1))[0]


def knorm(v):
    """kvpress/presses/knorm_press.py (KnormPress.score)."""
    return (-v["keys"].norm(dim=-1))[0]


def streaming(v, sink):
    """lukv's StreamingLLMScorer (kvpress's StreamingLLMPress writes 1/0 from the
    compression ratio; lukv ranks instead, keeping the same set under top-k): token j
    scores j, the first `sink` tokens score T."""
    nkv, T = v["keys"].shape[1], v["keys"].shape[2]
    scores = torch.arange(T, dtype=v["keys"].dtype).repeat(nkv, 1)
    scores[:, :sink] = T
    return scores


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("view", help="layer view written by eviction.DumpLayerView")
    ap.add_argument("out", help="safetensors file to write the scores to")
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    ap.add_argument("--ea-epsilon", type=float, default=0.02)
    ap.add_argument("--ea-n-future", type=int, default=512)
    ap.add_argument("--ea-n-sink", type=int, default=4)
    ap.add_argument("--ea-no-covariance", action="store_true")
    ap.add_argument("--ea-no-vnorm", action="store_true")
    ap.add_argument("--snapkv-window", type=int, default=64)
    ap.add_argument("--snapkv-kernel", type=int, default=5)
    ap.add_argument("--snapkv-pool", choices=["avg", "max"], default="avg")
    ap.add_argument("--streaming-sink", type=int, default=4)
    args = ap.parse_args()

    dtype = {"float64": torch.float64, "float32": torch.float32}[args.dtype]
    v, meta = load_view(args.view, dtype)
    scores = {
        "expected-attention": expected_attention(
            v, args.ea_epsilon, args.ea_n_future, args.ea_n_sink, not args.ea_no_covariance, not args.ea_no_vnorm
        ),
        "snapkv": snapkv(v, args.snapkv_window, args.snapkv_kernel, args.snapkv_pool),
        "keydiff": keydiff(v),
        "knorm": knorm(v),
        "streaming": streaming(v, args.streaming_sink),
        "tova": tova(v),
        "h2o": observed_attention(v),
    }
    nkv, T = v["keys"].shape[1], v["keys"].shape[2]
    for name, s in scores.items():
        assert tuple(s.shape) == (nkv, T), f"{name}: shape {tuple(s.shape)}, want {(nkv, T)}"
    out = {name: s.to(torch.float32).contiguous() for name, s in scores.items()}
    config = {k: str(val) for k, val in vars(args).items() if k not in ("view", "out")}
    config.update({"source_view": args.view, "layer": meta.get("layer", "")})
    save_file(out, args.out, metadata=config)
    print(f"{args.out}: {', '.join(out)} for {nkv} KV heads x {T} tokens")


if __name__ == "__main__":
    main()
