#!/usr/bin/env python3
"""Counts an evaluation's finished cells per length and task (results.jsonl or .jsonl.gz).

    python3 scripts/eval-coverage.py RESULTS [--methods full,snapkv,...] [--ratios 0.5,0.8,0.9] [--samples 50]

A cell is (task, length, sample, method, ratio); the full cache has one per sample, every
other method one per ratio. Prints a table of the required cells found (at most --samples
per method and ratio) and exits 1 when any is missing.
"""
import argparse
import collections
import gzip
import json
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--methods", default="full,snapkv,expected-attention,keydiff,pyramidkv,adakv,lukv,lukv:keydiff")
    ap.add_argument("--ratios", default="0.5,0.8,0.9")
    ap.add_argument("--samples", type=int, default=50)
    a = ap.parse_args()
    methods = a.methods.split(",")
    ratios = [float(r) for r in a.ratios.split(",")]
    opener = gzip.open if a.results.endswith(".gz") else open
    seen = set()
    with opener(a.results, "rt") as f:
        for line in f:
            c = json.loads(line)
            seen.add((c["length"], c["task"], c["index"], c["method"], c["ratio"]))
    lengths = sorted({k[0] for k in seen})
    tasks = sorted({k[1] for k in seen})
    per_sample = sum(1 if m == "full" else len(ratios) for m in methods)
    need = per_sample * a.samples
    print(f"Cells of the {len(methods)} methods ({per_sample} per sample; {need} = {a.samples} samples) per length and task:")
    print("length " + " ".join(tasks) + f" | total of {need * len(tasks)}")
    missing = 0
    for n in lengths:
        row = []
        for t in tasks:
            got = 0
            for m in methods:
                for r in [0.0] if m == "full" else ratios:
                    got += min(a.samples, sum(1 for i in range(a.samples) if (n, t, i, m, r) in seen))
            row.append(got)
            missing += need - got
        print(f"{n} " + " ".join(str(x) for x in row) + f" | {sum(row)}")
    print("complete" if missing == 0 else f"{missing} cells missing")
    return 0 if missing == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
