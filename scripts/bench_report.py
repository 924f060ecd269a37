#!/usr/bin/env python3
"""One Markdown report from `lukv-run bench --json` and scripts/bench_peers.py's JSON:
lukv against the transformers peers and the floors, and the issue's targets, each met
or missed by how much:

  decode        <= 1.2 x floor ((decode weight bytes + live KV bytes) / bandwidth), every row
  decode        >= 2 x faster than the compiled peer (static cache + torch.compile), full cache
  prefill       <= transformers SDPA's prefill time
  eviction      scoring + allocation + compaction <= 3% of the prefill
  KV at 80%     compression keeps 20% +- 2% of the full cache's live bytes

Either file may be missing or partial (a run cut short): what is absent is reported as
such. Standard library only. Usage:
  python3 scripts/bench_report.py LUKV_JSON PEERS_JSON > bench.md
"""
import json
import sys

FLOOR_X = 1.2
PEER_X = 2.0
OVERHEAD_PCT = 3.0
KV_TARGET, KV_SLACK = 0.2, 0.02


def load(path):
    try:
        with open(path) as f:
            return json.load(f), None
    except (OSError, ValueError) as e:
        return None, f"{path}: {e}"


def gib(n):
    if not n:
        return ""
    if abs(n) >= 2**30:
        return f"{n / 2**30:.2f} GiB"
    return f"{n / 2**20:.1f} MiB"


def fmt(v, spec=".3f"):
    return "" if v is None else format(v, spec)


def verdict(ok, how):
    return ("met" if ok else "**MISSED**") + (f" ({how})" if how else "")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    lukv, lerr = load(sys.argv[1])
    peers, perr = load(sys.argv[2])
    out = []
    w = out.append
    w("# GPU benchmark: lukv vs transformers\n")
    if lukv:
        m = lukv["model"]
        w(f"Model: {m['arch']} {m['layers']} layers, hidden {m['hidden']}, {m['heads']}/{m['kv_heads']} heads of {m['head_dim']}, "
          f"MLP {m['intermediate']}, vocab {m['vocab']} ({m['dir']}); weights {gib(m['weight_bytes'])}, a decode step reads {gib(m['decode_weight_bytes'])}.  ")
        w(f"lukv: `{lukv['command']}` on {lukv['device_name']}, {lukv['date']}.  ")
        w(f"lukv prefill matmul: {lukv['matmul_path']}.  ")
        kv_fmt = "bf16" if m['kv_bytes_per_token'] == m['kv_bytes_per_token_bf16'] else "float32"
        w(f"Floors: {lukv['bandwidth_bytes_per_sec'] / 1e12:.1f} TB/s, {lukv['peak_tflops']:.0f} TFLOP/s. lukv's KV cache is {kv_fmt} "
          f"({m['kv_bytes_per_token']} B/token), the peers' bf16 ({m['kv_bytes_per_token_bf16']} B/token): each is held to the floor of its own format.  ")
    else:
        w(f"lukv: no results ({lerr}).  ")
    if peers:
        w(f"Peers: transformers {peers['transformers']}, torch {peers['torch']} on {peers['device']}; compile mode {peers.get('compile_mode')}"
          + (", fullgraph failed: " + peers["fullgraph_error"][:200] if peers.get("fullgraph_error") else "") + ".  ")
        for e in peers.get("errors", []):
            w(f"Peer error: {e}  ")
    else:
        w(f"Peers: no results ({perr}).  ")
    w("")

    lctx = {c["context"]: c for c in (lukv or {}).get("contexts", [])}
    pcfg = (peers or {}).get("configs", {})
    prow = {cfg: {r["context"]: r for r in rows} for cfg, rows in pcfg.items()}
    contexts = sorted(set(lctx) | {T for rows in prow.values() for T in rows})
    targets = []  # (target, context, value, verdict)

    def peer(cfg, T):
        r = prow.get(cfg, {}).get(T)
        if r is None:
            return None, "not run"
        if r.get("status") != "ok":
            return None, f"{r.get('status')}: {r.get('error', '')[:80]}"
        return r, ""

    def lstatus(c):
        return "" if c is None or c["status"] == "ok" else f"{c['status']}: {c.get('error', '')[:80]}"

    w("## Prefill (seconds)\n")
    w("| context | lukv | lukv TFLOP/s (% of peak) | transformers SDPA | static + compile (eager prefill) | lukv <= SDPA |")
    w("|---|---|---|---|---|---|")
    for T in contexts:
        c = lctx.get(T)
        p = c.get("prefill") if c else None
        sd, sderr = peer("sdpa_dynamic", T)
        st, sterr = peer("static_compile", T)
        cell = "n/a"
        if p and sd:
            ok = p["seconds"] <= sd["prefill_seconds"]
            x = p["seconds"] / sd["prefill_seconds"]
            cell = verdict(ok, f"{x:.2f}x SDPA's time" if not ok else f"{1 / x:.2f}x faster")
            targets.append(("prefill <= transformers SDPA", T, f"{p['seconds']:.3f} s vs {sd['prefill_seconds']:.3f} s", cell))
        w(f"| {T} | {fmt(p and p['seconds']) or lstatus(c)} | {fmt(p and p['tflops'], '.1f')} ({fmt(p and p['pct_peak'], '.1f')}%) | "
          f"{fmt(sd and sd['prefill_seconds']) or sderr} | {fmt(st and st['prefill_seconds']) or sterr} | {cell} |")
    w("")

    w("## Decode (ms per token)\n")
    w("| context | KV | lukv | lukv floor | lukv x floor | <= 1.2x floor | SDPA eager | static + compile | peers' floor (bf16 KV) | lukv vs compiled | >= 2x faster |")
    w("|---|---|---|---|---|---|---|---|---|---|---|")
    for T in contexts:
        c = lctx.get(T)
        sd, sderr = peer("sdpa_dynamic", T)
        st, sterr = peer("static_compile", T)
        rows = (c or {}).get("decode") or [None]
        for d in rows:
            kv, ms, floor, x, fcell, speed, scell = lstatus(c) or "", "", "", "", "", "", ""
            peers_floor = ""
            if d:
                kv = "full" if d["compression"] == 0 else f"{100 * d['compression']:.0f}% evicted ({100 * d['kv_fraction']:.1f}% kept)"
                ms, floor, x = f"{d['ms_per_token']:.3f}", f"{d['floor_ms']:.3f}", f"{d['floor_ratio']:.2f}"
                ok = d["floor_ratio"] <= FLOOR_X
                over = d["floor_ratio"] / FLOOR_X
                fcell = verdict(ok, "" if ok else (f"{100 * (over - 1):.0f}% over the bound" if over < 2 else f"{over:.1f}x the bound"))
                targets.append((f"decode <= 1.2x floor ({kv})", T, f"{d['ms_per_token']:.3f} ms, x{d['floor_ratio']:.2f}", fcell))
                if d["compression"] == 0:
                    peers_floor = f"{d['floor_bf16_kv_ms']:.3f}"
                if st:
                    s = st["decode_ms_per_token"] / d["ms_per_token"]
                    speed = f"{s:.2f}x"
                    if d["compression"] == 0:
                        ok = s >= PEER_X
                        scell = verdict(ok, f"{s:.2f}x" if ok else f"{s:.2f}x, needs {PEER_X / s:.2f}x more")
                        targets.append(("decode >= 2x faster than compiled peer (full KV)", T, f"{d['ms_per_token']:.3f} vs {st['decode_ms_per_token']:.3f} ms", scell))
                    else:
                        scell = "(vs peer's full KV)"
            first = d is None or d["compression"] == 0
            w(f"| {T} | {kv} | {ms} | {floor} | {x} | {fcell} | {fmt(sd and sd['decode_ms_per_token']) or sderr if first else ''} | "
              f"{fmt(st and st['decode_ms_per_token']) or sterr if first else ''} | {peers_floor} | {speed} | {scell} |")
    w("")

    w("## Eviction overhead (share of the prefill)\n")
    w("| context | scorer | prefill s | scoring s | allocation + compaction s | share | <= 3% |")
    w("|---|---|---|---|---|---|---|")
    for T in contexts:
        o = (lctx.get(T) or {}).get("overhead")
        if not o:
            continue
        ok = o["share_pct"] <= OVERHEAD_PCT
        cell = verdict(ok, "" if ok else f"{o['share_pct'] / OVERHEAD_PCT:.1f}x the budget")
        targets.append(("eviction overhead <= 3% of prefill", T, f"{o['share_pct']:.1f}%", cell))
        w(f"| {T} | {o['scorer']} at {100 * o['ratio']:.0f}% | {o['prefill_seconds']:.3f} | {o['score_seconds']:.3f} | {o['alloc_compact_seconds']:.3f} | {o['share_pct']:.1f}% | {cell} |")
    w("")

    w("## Memory\n")
    w("| context | lukv peak device use | lukv KV full (allocated) | lukv KV at 80% (allocated) | device memory freed by compaction | SDPA peak allocated | static + compile peak allocated |")
    w("|---|---|---|---|---|---|---|")
    for T in contexts:
        c = lctx.get(T) or {}
        mem = c.get("memory") or {}
        dec = {d["compression"]: d for d in c.get("decode", [])}
        full, k80 = dec.get(0), dec.get(0.8)
        freed = sum(d.get("mem_released_bytes", 0) for d in c.get("decode", []))
        sd, _ = peer("sdpa_dynamic", T)
        st, _ = peer("static_compile", T)
        w(f"| {T} | {gib(mem.get('peak_used', 0))} | {gib(full['kv_bytes']) if full else ''} | {gib(k80['kv_bytes']) if k80 else ''} | {gib(freed)} | "
          f"{gib(sd['peak_memory_bytes']) if sd else ''} | {gib(st['peak_memory_bytes']) if st else ''} |")
        k = c.get("kv_target")
        if k:
            ok = abs(k["live_fraction"] - KV_TARGET) <= KV_SLACK
            targets.append(("KV at 80% compression = 20% +- 2%", T, f"{100 * k['live_fraction']:.2f}% live ({100 * k['bytes_fraction']:.2f}% allocated)",
                            verdict(ok, "" if ok else f"{100 * (k['live_fraction'] - KV_TARGET):+.2f} points")))
    w("")

    w("## Targets\n")
    w("| target | context | measured | result |")
    w("|---|---|---|---|")
    for t, T, v, r in targets:
        w(f"| {t} | {T} | {v} | {r} |")
    met = sum(r.startswith("met") for _, _, _, r in targets)
    w(f"\n{met} of {len(targets)} targets met.")
    print("\n".join(out))


if __name__ == "__main__":
    main()
