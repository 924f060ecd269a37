#!/usr/bin/env python3
"""Chunked against one-shot eviction: the table and plot of scripts/chunked-quality/gpu.sh.

Usage: python3 compare.py --out DIR --lengths 8192,16384 --chunk 2048

Reads DIR/oneshot-N/results.jsonl and DIR/chunked-N/results.jsonl (lukv-run eval's cells:
task, length, index, method, ratio, score) for every length N, averages the scores per
(method, ratio) over the samples both runs finished, and writes DIR/chunked-quality.json,
the Markdown table on stdout and, where matplotlib imports, DIR/chunked-quality.png.
Scores are in points (0-100); "within 2" is |chunked - one-shot| <= 2, the issue's target
for LU-KV.
"""
import argparse
import json
import os
from collections import defaultdict


def load(path):
    cells = []
    if os.path.exists(path):
        for line in open(path):
            if line.strip():
                cells.append(json.loads(line))
    return cells


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--lengths", required=True)
    ap.add_argument("--chunk", type=int, required=True)
    a = ap.parse_args()
    rows = []
    for n in [int(x) for x in a.lengths.split(",") if x.strip()]:
        by = {}
        for mode in ("oneshot", "chunked"):
            d = defaultdict(dict)
            for c in load(os.path.join(a.out, f"{mode}-{n}", "results.jsonl")):
                d[(c["method"], round(c["ratio"], 4))][(c["task"], c["index"])] = 100.0 * c["score"]
            by[mode] = d
        for key in sorted(set(by["oneshot"]) | set(by["chunked"])):
            one, ch = by["oneshot"].get(key, {}), by["chunked"].get(key, {})
            both = sorted(set(one) & set(ch))
            row = {"length": n, "method": key[0], "ratio": key[1], "samples": len(both),
                   "oneshot_only": len(one) - len(both), "chunked_only": len(ch) - len(both)}
            if both:
                row["oneshot"] = sum(one[k] for k in both) / len(both)
                row["chunked"] = sum(ch[k] for k in both) / len(both)
                row["diff"] = row["chunked"] - row["oneshot"]
                row["same_answers"] = sum(1 for k in both if one[k] == ch[k])
            rows.append(row)
    json.dump({"chunk": a.chunk, "rows": rows}, open(os.path.join(a.out, "chunked-quality.json"), "w"), indent=1)
    print(f"# Chunked (chunk {a.chunk}) against one-shot eviction\n")
    print("Mean score in points over the samples both runs finished; diff = chunked - one-shot; target for LU-KV: within 2 points.\n")
    print("| length | method | ratio | samples | one-shot | chunked | diff | within 2 | same score |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "diff" not in r:
            print(f"| {r['length']} | {r['method']} | {r['ratio']} | 0 | | | | | (one-shot {r['oneshot_only']}, chunked {r['chunked_only']} cells) |")
            continue
        print(f"| {r['length']} | {r['method']} | {r['ratio']} | {r['samples']} | {r['oneshot']:.1f} | {r['chunked']:.1f} | {r['diff']:+.1f} | "
              f"{'yes' if abs(r['diff']) <= 2 else 'no'} | {r['same_answers']}/{r['samples']} |")
    plot(rows, os.path.join(a.out, "chunked-quality.png"), a.chunk)


def plot(rows, path, chunk):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("\n(no matplotlib: no plot; the table above has the numbers)")
        return
    rows = [r for r in rows if "diff" in r and r["ratio"] > 0]
    lengths = sorted({r["length"] for r in rows})
    methods = sorted({r["method"] for r in rows})
    if not rows:
        return
    fig, axes = plt.subplots(1, len(lengths), figsize=(6 * len(lengths), 4), squeeze=False)
    for ax, n in zip(axes[0], lengths):
        for i, m in enumerate(methods):
            rs = sorted((r for r in rows if r["length"] == n and r["method"] == m), key=lambda r: r["ratio"])
            if not rs:
                continue
            color = f"C{i}"
            ax.plot([r["ratio"] for r in rs], [r["oneshot"] for r in rs], "-o", color=color, label=f"{m} one-shot")
            ax.plot([r["ratio"] for r in rs], [r["chunked"] for r in rs], "--x", color=color, label=f"{m} chunked")
        ax.set_title(f"{n} tokens (chunk {chunk})")
        ax.set_xlabel("compression ratio")
        ax.set_ylabel("score (points)")
        ax.set_ylim(-2, 102)
    axes[0][-1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"\nplot: {path}")


if __name__ == "__main__":
    main()
