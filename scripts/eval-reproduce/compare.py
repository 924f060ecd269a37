#!/usr/bin/env python3
"""Compares the cells of a small evaluation rerun with a committed evaluation's cells.

usage: compare.py COMMITTED_results.jsonl[.gz] RERUN_results.jsonl

Cells are matched by (task, length, index, method, ratio). Prints, per method, how many
rerun cells have the committed prediction exactly and the same score, and every cell
that differs; exits 1 when a cell is missing from the committed run or any differs.
"""
import collections
import gzip
import json
import sys


def load(path):
    opener = gzip.open if path.endswith(".gz") else open
    cells = {}
    with opener(path, "rt") as f:
        for line in f:
            c = json.loads(line)
            cells[(c["task"], c["length"], c["index"], c["method"], round(c["ratio"], 4))] = c
    return cells


def main():
    committed, rerun = load(sys.argv[1]), load(sys.argv[2])
    same = collections.Counter()
    total = collections.Counter()
    bad = 0
    for key, c in sorted(rerun.items()):
        m = (key[3], key[4])
        total[m] += 1
        ref = committed.get(key)
        if ref is None:
            print("missing in committed run:", key)
            bad += 1
            continue
        if ref["pred"] == c["pred"] and ref["score"] == c["score"]:
            same[m] += 1
        else:
            bad += 1
            print(f"differs {key}: committed {ref['pred']!r} ({ref['score']}) rerun {c['pred']!r} ({c['score']})")
    print(f"{'method':<24} {'ratio':>5} {'same':>5} / cells")
    for m in sorted(total):
        print(f"{m[0]:<24} {m[1]:>5} {same[m]:>5} / {total[m]}")
    print(f"{sum(same.values())} of {sum(total.values())} cells reproduce exactly")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
