#!/usr/bin/env python3
"""The table of scripts/bench-chunked.sh: one row per lukv-run (and transformers + SDPA).

Usage: python3 scripts/bench_chunked_report.py OUTDIR MODELDIR CHUNK

Reads OUTDIR/*.run (name, status, baseline GPU memory), *.json (lukv-run generate --json:
prompt tokens, prefill time, per-chunk stats), *.mem (nvidia-smi memory.used samples, MiB,
every 100 ms) and peers.json. Peak device memory is the largest sample minus the baseline
before the run (nvidia-smi's whole-GPU figure: it includes the CUDA context). The target
is weights + kept KV + one chunk's KV + 1 GiB, where kept KV is the cache's live bytes
after the last chunk and one chunk's KV is CHUNK tokens in every head (bf16). Writes
OUTDIR/NAME-chunks.csv (position, tokens, seconds, forward, scoring and eviction seconds,
live KV bytes before eviction, device memory in use, reallocations, and the GPU seconds of
attention / compaction / other kernels when the run was kernel-timed) for every chunked
run, and a second table: where each chunked run's time went, at ten points of the
context.
"""
import glob
import json
import os
import sys

GiB = 2**30


def main():
    out, model, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cfg = json.load(open(os.path.join(model, "config.json")))
    H, L, V, F = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"], cfg["intermediate_size"]
    nq, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = cfg.get("head_dim") or H // nq
    params = V * H * (1 if cfg.get("tie_word_embeddings") else 2) + H + L * (2 * H + 2 * nq * D * H + 2 * nkv * D * H + 3 * F * H)
    weights = 2 * params
    per_token = L * nkv * 2 * D * 2  # bf16 K and V in every head
    print(f"# Chunked prefill with eviction on the GPU\n")
    print(f"model {model}: {params / 1e9:.2f} B parameters, weights {weights / GiB:.1f} GiB (bf16), KV {per_token // 1024} KiB per token; chunk {chunk} "
          f"({chunk * per_token / GiB:.2f} GiB of KV)\n")
    print("| run | prompt tokens | status | prefill s | prefill tok/s | decode tok/s | peak GPU memory | kept KV | target (weights + kept + chunk + 1 GiB) | met | chunk time: first / 25% / 50% / 75% / last |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    breakdown = []
    for runf in sorted(glob.glob(os.path.join(out, "*.run")), key=order):
        run = json.load(open(runf))
        name = run["name"]
        base = os.path.join(out, name)
        err = open(base + ".err").read() if os.path.exists(base + ".err") else ""
        mem = [int(x) for x in open(base + ".mem").read().split() if x.strip().isdigit()] if os.path.exists(base + ".mem") else []
        peak = (max(mem) - run["baseline_mib"]) * 2**20 if mem else 0
        status = "ok"
        if run["rc"] == "skipped":
            print(f"| {name} | | skipped (time budget) | | | | | | | | |")
            continue
        if run["rc"] != 0:
            status = "does not fit (lukv's check)" if "memory: " in err else "OOM" if "out of memory" in err else "timeout" if run["rc"] in (124, 137) else f"error {run['rc']}"
        res = {}
        if status == "ok":
            try:
                res = json.load(open(base + ".json"))
            except (OSError, ValueError):
                status = "no JSON"
        if not res:
            print(f"| {name} | | {status} | | | | {peak / GiB:.1f} GiB | | | | {err.strip().splitlines()[-1][:160] if err.strip() else ''} |")
            continue
        chunks = res.get("chunks") or []
        prefill = res["prefill_ns"] / 1e9
        kept = chunks[-1]["kv_live_bytes"] if chunks else res.get("kv_live_bytes_compressed", 0)
        target = weights + kept + min(chunk, res["prompt_tokens"]) * per_token + GiB
        times = [c["time_ns"] / 1e9 for c in chunks]
        pick = lambda f: times[min(len(times) - 1, int(f * (len(times) - 1)))] if times else 0
        ct = " / ".join(f"{pick(f):.2f}" for f in (0, 0.25, 0.5, 0.75, 1)) + " s" if len(times) > 1 else "one chunk"
        print(f"| {name} | {res['prompt_tokens']} | {status} | {prefill:.1f} | {res['prompt_tokens'] / prefill:.0f} | {res.get('decode_tokens_per_sec', 0):.1f} | "
              f"{peak / GiB:.1f} GiB | {kept / GiB:.2f} GiB | {target / GiB:.1f} GiB | {'yes' if peak <= target else 'no'} | {ct} |")
        if chunks:
            breakdown.append((name, chunks))
            with open(base + "-chunks.csv", "w") as f:
                f.write("pos0,tokens,seconds,forward_seconds,score_seconds,evict_seconds,kv_live_bytes_peak,device_used_bytes,kv_reallocations,gpu_attention_s,gpu_compact_s,gpu_other_s\n")
                for c in chunks:
                    k = c.get("kernel_seconds") or {}
                    f.write(f"{c['pos0']},{c['tokens']},{c['time_ns'] / 1e9:.4f},{c.get('forward_ns', 0) / 1e9:.4f},{c.get('score_ns', 0) / 1e9:.4f},"
                            f"{c['evict_ns'] / 1e9:.4f},{c['kv_live_bytes_peak']},{c.get('device_used_bytes', 0)},{c.get('kv_reallocations', 0)},"
                            f"{k.get('attention', 0):.4f},{k.get('compact', 0):.4f},{k.get('other', 0) + k.get('scoring', 0):.4f}\n")
    peers = os.path.join(out, "peers.json")
    if os.path.exists(peers):
        rep = json.load(open(peers))
        for row in rep["configs"].get("sdpa_dynamic", []):
            T, pre, dec, pk = row["context"], row.get("prefill_seconds"), row.get("decode_ms_per_token"), row.get("peak_memory_bytes")
            cells = [
                "transformers SDPA", str(T), str(row.get("status")),
                f"{pre:.1f}" if pre else "", f"{T / pre:.0f}" if pre else "", f"{1e3 / dec:.1f}" if dec else "",
                f"{pk / GiB:.1f} GiB (torch max allocated)" if pk else "", "full cache", "", "", "",
            ]
            print("| " + " | ".join(cells) + " |")
    if breakdown:
        print_breakdown(breakdown)

def print_breakdown(breakdown):
    """Per run, ten chunks spread over the context: where the chunk's time went."""
    print("\n## Time per chunk as the context grows\n")
    print("Seconds per chunk: total = forward (with scoring) + eviction (keep/compact); scoring is the evictor's host time inside the forward pass. "
          "GPU columns only for kernel-timed runs (timed-*: LUKV_CUDA_KERNEL_TIMES=1, slower). Device memory is cuMemGetInfo's used after the chunk.\n")
    print("| run | chunk at | total | forward | scoring | evict | device used | reallocs | GPU attention | GPU compact | GPU other |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, chunks in breakdown:
        idx = sorted({min(len(chunks) - 1, round(i * (len(chunks) - 1) / 9)) for i in range(10)})
        for i in idx:
            c = chunks[i]
            k = c.get("kernel_seconds")
            gpu = [f"{k.get('attention', 0):.3f}", f"{k.get('compact', 0):.3f}", f"{k.get('other', 0) + k.get('scoring', 0):.3f}"] if k else ["", "", ""]
            print(f"| {name} | {c['pos0']} | {c['time_ns'] / 1e9:.3f} | {c.get('forward_ns', 0) / 1e9:.3f} | {c.get('score_ns', 0) / 1e9:.3f} | "
                  f"{c['evict_ns'] / 1e9:.3f} | {c.get('device_used_bytes', 0) / GiB:.1f} GiB | {c.get('kv_reallocations', 0)} | " + " | ".join(gpu) + " |")


def order(path):
    name = os.path.basename(path)[:-4]
    n = name.rsplit("-", 1)[-1]
    return (int(n) if n.isdigit() else 0, name)


if __name__ == "__main__":
    main()
