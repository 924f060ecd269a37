#!/usr/bin/env python3
"""Accuracy by needle depth, from eval_model_hf.py --keep-preds output.

    python3 scripts/depth-accuracy.py EVAL.json [--bins 4]

Depth is where the first gold value sits in the prompt (0: the start, farthest from the
question). One row per (task, length, depth bin): summed scores (a multi-value sample scores its
fraction of values found), samples, accuracy.
"""
import argparse
import json


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("eval_json")
    ap.add_argument("--bins", type=int, default=4)
    a = ap.parse_args()
    d = json.load(open(a.eval_json))
    if "samples" not in d:
        raise SystemExit(f"{a.eval_json}: no per-sample rows (run eval_model_hf.py with --keep-preds)")
    cells, unplaced = {}, 0
    for s in d["samples"]:
        if s.get("depth") is None:  # gold not found verbatim in the prompt
            unplaced += 1
            continue
        b = min(a.bins - 1, int(s["depth"] * a.bins))
        cells.setdefault((s["task"], s["length"], b), []).append(s["score"])
    print(f"{a.eval_json}")
    print("| task | length | depth | score sum | samples | accuracy % |")
    print("|---|---|---|---|---|---|")
    for (task, L, b), sc in sorted(cells.items()):
        lo, hi = 100 * b // a.bins, 100 * (b + 1) // a.bins
        print(f"| {task} | {L} | {lo}-{hi} % | {sum(sc):g} | {len(sc)} | {100 * sum(sc) / len(sc):.1f} |")
    if unplaced:
        print(f"\n{unplaced} samples left out: their gold value is not in the prompt verbatim")


if __name__ == "__main__":
    main()
