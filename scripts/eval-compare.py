#!/usr/bin/env python3
"""Compares two evaluations (results.jsonl[.gz] of `lukv-run eval`) on the cells both ran:
for one length, restricted to the (task, sample index) pairs present in the first file, it
prints each method's mean over tasks (RULER points) and its share of the full cache, side by
side. Used to compare a partial run of a new model with a complete run of an older one.

Usage: python3 scripts/eval-compare.py NEW.jsonl.gz OLD.jsonl.gz --length 16384 [--names new,old]
"""
import argparse
import collections
import gzip
import json
import sys


def read(path, length):
    op = gzip.open if path.endswith(".gz") else open
    try:
        with op(path, "rt") as f:
            return [r for r in map(json.loads, f) if r["length"] == length]
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"eval-compare: {path}: {e}")


def means(rows):
    per = collections.defaultdict(list)
    for r in rows:
        per[(r["method"], r["ratio"], r["task"])].append(r["score"])
    out = collections.defaultdict(list)
    for (m, ra, _), v in per.items():
        out[(m, ra)].append(100 * sum(v) / len(v))
    return {k: sum(v) / len(v) for k, v in out.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("new")
    ap.add_argument("old")
    ap.add_argument("--length", type=int, required=True)
    ap.add_argument("--names", default="new,old")
    a = ap.parse_args()
    new, old = read(a.new, a.length), read(a.old, a.length)
    keep = {(r["task"], r["index"]) for r in new}
    old = [r for r in old if (r["task"], r["index"]) in keep]
    if not new or not old:
        sys.exit("eval-compare: no common cells at that length")
    tn, to = means(new), means(old)
    if ("full", 0) not in tn or ("full", 0) not in to:
        sys.exit("eval-compare: both files need full-cache cells")
    n1, n2 = a.names.split(",")
    print(f"{len(keep)} samples ({len(new)} cells of {n1}, {len(old)} of {n2}) at {a.length} tokens\n")
    print(f"| method | compression | {n1} | % of full | {n2} | % of full |")
    print("|---|---|---|---|---|---|")
    for k in sorted(tn, key=lambda k: (k[1], k[0])):
        o = to.get(k)
        os_ = f"{o:.1f} | {100 * o / to[('full', 0)]:.1f}%" if o is not None else "- | -"
        print(f"| {k[0]} | {k[1]:.0%} | {tn[k]:.1f} | {100 * tn[k] / tn[('full', 0)]:.1f}% | {os_} |")


if __name__ == "__main__":
    main()
