#!/usr/bin/env python3
"""The report of scripts/bench-decode.sh: the decode step of the 8B shape beside its floor
and the peer, per-kernel bandwidth, and where the step's GPU time goes. Reads the files
bench-decode.sh leaves in --out; any of them may be missing (a step that failed or was
skipped), and the report says so. Writes Markdown to stdout and everything to --json.

Targets (issues #19, #20):
  decode step             <= 1.2 x floor, floor = (decode weight bytes + live KV bytes) /
                          the copy bandwidth measured in the same run
  int8 decode step        <= 0.65 x the bf16 step at 8k (full cache)
  GEMV                    >= 90% of the copy bandwidth (bf16), >= 85% (int8), one row
  decode attention        >= 80% of the copy bandwidth at 32k
Standard library only. Usage:
  python3 scripts/bench_decode_report.py --out DIR --json decode.json > decode.md
"""
import argparse
import json
import os
import re

FLOOR_X = 1.2
INT8_X = 0.65
GEMV_PCT = {"bf16": 90.0, "int8": 85.0}
ATTN_PCT = 80.0


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def fmt(v, spec=".3f"):
    return "" if v is None else format(v, spec)


def verdict(ok):
    return "met" if ok else "**missed**"


def go_benchmarks(text):
    """Benchmark lines of `go test -bench` output: name -> {metric unit: value}."""
    out = {}
    for line in (text or "").splitlines():
        m = re.match(r"^(Benchmark\S+?)(-\d+)?\s+(\d+)\s+(.*)$", line)
        if not m:
            continue
        fields = m.group(4).split()
        metrics = {}
        for i in range(0, len(fields) - 1, 2):
            try:
                metrics[fields[i + 1]] = float(fields[i])
            except ValueError:
                pass
        out[m.group(1)] = metrics
    return out


def decode_rows(run, bw, wt, bf16_weight_bytes):
    rows = []
    if not run:
        return rows
    wbytes = run["model"]["decode_weight_bytes"]
    estimated = False
    if wt.startswith("int8") and bf16_weight_bytes and wbytes >= bf16_weight_bytes:
        # This lukv-run reports the bf16 size for int8 weights: 1 byte and 4/32 bytes of
        # scale per weight instead of 2 bytes.
        wbytes, estimated = bf16_weight_bytes / 2 * 1.125, True
    for c in run.get("contexts", []):
        for d in c.get("decode") or []:
            ms = d.get("ms_per_token")
            live = d.get("live_kv_bytes") or 0
            floor = (wbytes + live) / bw * 1e3
            rows.append({
                "weights": wt, "context": c["context"], "compression": d.get("compression", 0),
                "ms_per_token": ms, "live_kv_bytes": live, "weight_bytes": wbytes,
                "weight_bytes_estimated": estimated, "floor_ms": floor,
                "x_floor": ms / floor if ms else None, "status": c.get("status"),
            })
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    p = lambda name: os.path.join(a.out, name)
    res = {"missing": []}
    lines = []
    w = lines.append
    bwj = load(p("bandwidth.json"))
    if bwj:
        bw = bwj["bytes_per_sec"]
    else:
        bw = 4.3e12
        res["missing"].append("bandwidth.json (floors use 4.3e12 B/s)")
    res["bandwidth_bytes_per_sec"] = bw
    labels = ["bf16", "int8"] + sorted(f[5:-5] for f in os.listdir(a.out)
                                       if f.startswith("lukv-") and f.endswith(".json") and f[5:-5] not in ("bf16", "int8"))
    runs = {wt: load(p(f"lukv-{wt}.json")) for wt in labels}
    peers = load(p("peers.json"))
    bf16_wbytes = runs["bf16"]["model"]["decode_weight_bytes"] if runs["bf16"] else None
    rows = []
    for wt in labels:
        rows += decode_rows(runs[wt], bw, wt, bf16_wbytes if wt.startswith("int8") else None)
    peer = {}
    for r in (peers or {}).get("configs", {}).get("static_compile", []):
        if r.get("status") == "ok":
            peer[r["context"]] = r.get("decode_ms_per_token")
    bf16_full = {r["context"]: r["ms_per_token"] for r in rows if r["weights"] == "bf16" and not r["compression"]}
    for r in rows:
        r["peer_ms"] = peer.get(r["context"]) if not r["compression"] else None
        r["target_floor"] = r["x_floor"] is not None and r["x_floor"] <= FLOOR_X
        if r["weights"].startswith("int8") and bf16_full.get(r["context"]) and r["ms_per_token"]:
            r["x_bf16"] = r["ms_per_token"] / bf16_full[r["context"]]
    res["decode"] = rows

    dev = (runs["bf16"] or runs["int8"] or {}).get("device_name", "")
    w(f"# Decode step, Llama-3.1-8B shape, batch 1\n")
    w(f"Device: {dev or (bwj or {}).get('device', '?')}. Copy bandwidth measured in this run: "
      f"**{bw / 1e12:.2f} TB/s** (4 GiB device-to-device copy, bytes read + written); every floor uses it.\n")
    w("| context | KV | weights | lukv ms | floor ms | x floor | <= 1.2x floor | peer ms (StaticCache + compile) | int8 / bf16 |")
    w("|---|---|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["context"], r["compression"], r["weights"])):
        kv = "full" if not r["compression"] else f"{r['compression']:.0%} evicted"
        x8 = ""
        if "x_bf16" in r:
            x8 = f"{r['x_bf16']:.2f}"
            if r["context"] == 8192 and not r["compression"]:
                x8 += f" ({verdict(r['x_bf16'] <= INT8_X)}: <= {INT8_X})"
        est = " (est.)" if r["weight_bytes_estimated"] else ""
        w(f"| {r['context']} | {kv} | {r['weights']} | {fmt(r['ms_per_token'])} | {fmt(r['floor_ms'])}{est} | "
          f"{fmt(r['x_floor'], '.2f')} | {verdict(r['target_floor'])} | {fmt(r['peer_ms'])} | {x8} |")
    for wt, run in runs.items():
        if not run and wt in ("bf16", "int8"):
            res["missing"].append(f"lukv-{wt}.json")

    bench = go_benchmarks(read(p("kernels-bench.txt")))
    kern = []
    for name, m in sorted(bench.items()):
        gbs = m.get("GB/s")
        if gbs is None:
            continue
        pct = 100 * gbs * 1e9 / bw
        row = {"benchmark": name, "gb_per_sec": gbs, "pct_of_copy": pct, "ns_per_op": m.get("ns/op")}
        if name.startswith("BenchmarkMatMulDecode8B") and name.endswith("/n=1"):
            wt = "int8" if "Int8" in name else "bf16"
            row["target_pct"] = GEMV_PCT[wt]
        elif name.startswith(("BenchmarkAttentionDecodeKV/bf16/ctx=32768", "BenchmarkAttentionDecodeSplitK/bf16/ctx=32768")):
            row["target_pct"] = ATTN_PCT
        kern.append(row)
    res["kernels"] = kern
    w("\n## Kernels (gpubin/cuda.test benchmarks; % of the copy bandwidth above)\n")
    if kern:
        w("| benchmark | GB/s | % of copy | target |")
        w("|---|---|---|---|")
        for k in kern:
            t = ""
            if "target_pct" in k:
                t = f">= {k['target_pct']:.0f}%: {verdict(k['pct_of_copy'] >= k['target_pct'])}"
            w(f"| {k['benchmark'].removeprefix('Benchmark')} | {k['gb_per_sec']:.0f} | {k['pct_of_copy']:.1f}% | {t} |")
    else:
        res["missing"].append("kernels-bench.txt")
        w("(no kernel benchmarks)")

    w("\n## Where the decode step's GPU time goes\n")
    nsys = read(p("nsys-stats.txt"))
    kt = load(p("kernel-times.json"))
    if nsys:
        # The kernel summary of `nsys profile --stats=true` (cuda_gpu_kern_sum).
        sec = re.search(r"cuda_gpu_kern_sum.*?\n\n(.*?)(\n\n|\Z)", nsys, re.S)
        table = sec.group(1) if sec else nsys[-4000:]
        res["nsys_kernel_summary"] = table
        w("`nsys profile --stats=true`, whole run (prefill and 16 decode steps at 80% evicted), kernel summary:\n")
        w("```")
        w("\n".join(table.splitlines()[:30]))
        w("```")
    elif kt:
        res["kernel_times"] = []
        for c in kt.get("contexts", []):
            for d in c.get("decode") or []:
                ks, steps = d.get("kernels"), d.get("kernel_steps") or 1
                if not ks:
                    continue
                kv = "full" if not d.get("compression") else f"{d['compression']:.0%} evicted"
                total = sum(k["seconds"] for k in ks)
                res["kernel_times"].append({"context": c["context"], "compression": d.get("compression"), "kernels": ks, "steps": steps})
                w(f"Context {c['context']}, {kv}: {1e3 * total / steps:.3f} ms of GPU time per step "
                  f"(LUKV_CUDA_KERNEL_TIMES=1; wall {fmt(d.get('ms_per_token'))} ms with the timing's cost)\n")
                w("| kernel | calls/step | us/step | share |\n|---|---|---|---|")
                for k in ks[:15]:
                    w(f"| {k['name']} | {k['calls'] / steps:.1f} | {1e6 * k['seconds'] / steps:.1f} | {100 * k['seconds'] / total:.1f}% |")
                w("")
    else:
        res["missing"].append("nsys-stats.txt and kernel-times.json")
        w("(no profile)")
    if res["missing"]:
        w("\nMissing: " + "; ".join(res["missing"]) + ".")
    print("\n".join(lines))
    with open(a.json, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
