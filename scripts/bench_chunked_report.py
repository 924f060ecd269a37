#!/usr/bin/env python3
"""The table of scripts/bench-chunked.sh: one row per lukv-run (and transformers + SDPA).

Usage: python3 scripts/bench_chunked_report.py OUTDIR MODELDIR CHUNK

Reads OUTDIR/*.run (name, status, baseline GPU memory), *.json (lukv-run generate --json:
prompt tokens, prefill time, per-chunk stats), *.mem (nvidia-smi memory.used samples, MiB,
every 100 ms) and peers.json. Peak device memory is the largest sample minus the baseline
before the run (nvidia-smi's whole-GPU figure: it includes the CUDA context). The target
is weights + kept KV + one chunk's KV + 1 GiB, where kept KV is the cache's live bytes
after the last chunk and one chunk's KV is CHUNK tokens in every head (bf16). Writes
OUTDIR/NAME-chunks.csv (position, tokens, seconds, eviction seconds, live KV bytes before
eviction) for every chunked run.
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
    for runf in sorted(glob.glob(os.path.join(out, "*.run")), key=order):
        run = json.load(open(runf))
        name = run["name"]
        base = os.path.join(out, name)
        err = open(base + ".err").read() if os.path.exists(base + ".err") else ""
        mem = [int(x) for x in open(base + ".mem").read().split() if x.strip().isdigit()] if os.path.exists(base + ".mem") else []
        peak = (max(mem) - run["baseline_mib"]) * 2**20 if mem else 0
        status = "ok"
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
            with open(base + "-chunks.csv", "w") as f:
                f.write("pos0,tokens,seconds,evict_seconds,kv_live_bytes_peak\n")
                for c in chunks:
                    f.write(f"{c['pos0']},{c['tokens']},{c['time_ns'] / 1e9:.4f},{c['evict_ns'] / 1e9:.4f},{c['kv_live_bytes_peak']}\n")
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

def order(path):
    name = os.path.basename(path)[:-4]
    n = name.rsplit("-", 1)[-1]
    return (int(n) if n.isdigit() else 0, name)


if __name__ == "__main__":
    main()
