#!/usr/bin/env python3
"""Splits a merged evaluation (results.jsonl or .jsonl.gz, as `lukv-run eval report`
writes it) into the per-shard folders scripts/eval-default-model.sh resumes from:
EVAL_DIR/<length>-<task>/results.jsonl. Refuses to overwrite a shard that has cells.

    python3 scripts/eval-seed-shards.py results/eval/2026-11-28-lukv-tiny/results.jsonl.gz out/eval
"""
import collections
import gzip
import json
import os
import sys


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dst = sys.argv[1], sys.argv[2]
    opener = gzip.open if src.endswith(".gz") else open
    shards = collections.defaultdict(list)
    with opener(src, "rt") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                c = json.loads(line)
                shards[(c["length"], c["task"])].append(line if line.endswith("\n") else line + "\n")
            except (ValueError, KeyError) as e:
                sys.exit(f"{src}:{n}: {e}")
    for (length, task), lines in sorted(shards.items()):
        d = os.path.join(dst, f"{length}-{task}")
        p = os.path.join(d, "results.jsonl")
        if os.path.exists(p) and os.path.getsize(p) > 0:
            sys.exit(f"{p} already has cells: not overwriting (remove it or use another EVAL_DIR)")
        os.makedirs(d, exist_ok=True)
        with open(p, "w") as f:
            f.writelines(lines)
        print(f"{p}: {len(lines)} cells")


if __name__ == "__main__":
    main()
