#!/usr/bin/env python3
"""Checks train_model.py's --samples-cmd packing (CmdStream) without a GPU or torch.

Stubs the few torch names CmdStream uses and a byte-level tokenizer (id = byte + 2; BOS 0,
EOS 1), runs CmdStream over a real make-train-data binary, and asserts for every row: length
T; every complete answer span (mask run) ends in EOS and is non-empty text;
counts the BOS ids and the rows without a task.

  go build -o /tmp/make-train-data ./scripts/make-train-data
  python3 scripts/corpus/check_samples_stream.py "/tmp/make-train-data -corpus C -words W -prose-frac 0.3"

Needs numpy (Debian python3-numpy).
"""
import os
import sys
import types

import numpy as np


class _Enc:
    def __init__(self, ids):
        self.ids = ids


class ByteTok:
    def encode(self, text, add_special_tokens=True):
        ids = [b + 2 for b in text.encode()]
        return _Enc(([0] if add_special_tokens else []) + ids)


def stub_torch():
    torch = types.ModuleType("torch")
    torch.utils = types.SimpleNamespace(data=types.SimpleNamespace(
        IterableDataset=object, get_worker_info=lambda: None))
    torch.from_numpy = lambda a: a
    nn = types.ModuleType("torch.nn")
    fn = types.ModuleType("torch.nn.functional")
    torch.nn = nn
    nn.functional = fn
    sys.modules.update({"torch": torch, "torch.nn": nn, "torch.nn.functional": fn})


def main():
    cmd = sys.argv[1]
    stub_torch()
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(here, ".."))
    import train_model as tm
    tm.STATE.update(tok=ByteTok(), bos=0, eos=1)
    T, B = 2048, 4
    stream = tm.CmdStream(cmd, T, B, seed=5, phase=0)
    it = iter(stream)
    answers = prompts = prose_rows = 0
    for _ in range(6):
        ids, mask = next(it)
        assert ids.shape == (B, T) and mask.shape == (B, T), ids.shape
        for b in range(B):
            row, m = ids[b], mask[b]
            i = 0
            while i < T:
                if not m[i]:
                    i += 1
                    continue
                j = i
                while j < T and m[j]:
                    j += 1
                span = row[i:j]
                if j < T:  # a complete answer: ends in EOS, text before it is an answer
                    assert span[-1] == 1, f"answer span does not end in EOS: {span[-5:]}"
                    text = bytes(int(x) - 2 for x in span[:-1]).decode()
                    assert text.strip(), "empty answer"
                    answers += 1
                i = j
            prompts += int((row == 0).sum())
            prose_rows += int(not m.any())
    assert answers > 0, "no answer spans"
    print(f"ok: {answers} complete answer spans end in EOS, {prompts} BOS, {prose_rows} rows without a task")


if __name__ == "__main__":
    main()
