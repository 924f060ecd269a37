#!/usr/bin/env python3
"""The peers of `lukv-run bench`: Hugging Face transformers on the same checkpoint and
contexts, measured the same way (random token ids, batch 1, bf16, greedy).

Configurations:
  sdpa_dynamic   eager PyTorch, SDPA attention, DynamicCache (transformers' default);
  static_compile StaticCache sized to the context plus the decode steps, the decode step
                 compiled with torch.compile (mode reduce-overhead: CUDA graphs,
                 fullgraph), as transformers' "Optimizing inference" guide does it;
                 its prefill runs eagerly into the static cache (generate() does the same).

Per context: prefill latency (one forward of the whole context, logits of the last row
only), decode ms/token (2 warmup steps, then --decode-steps timed ones; for the compiled
decode the warmup is 3 steps and its time is reported as compile_seconds), and peak
memory (torch.cuda.max_memory_allocated, reset before each context). Timing:
torch.cuda.synchronize() around time.perf_counter().

Every context of every configuration runs under try/except: an out-of-memory or a
compile failure is recorded and the rest goes on. --max-seconds bounds the whole run:
a measurement that would start with less than its reserve left is skipped (a compiled
context needs --compile-reserve seconds, the first one twice that). The JSON file is
rewritten after every measurement, so a run killed from outside keeps what it finished.

Usage: python3 scripts/bench_peers.py --model DIR --contexts 8192,32768,65536 --json peers.json
"""
import argparse
import json
import os
import sys
import time
import traceback

import torch
import transformers
from transformers import AutoModelForCausalLM, DynamicCache, StaticCache


def sync():
    torch.cuda.synchronize()


def forward(model, **kw):
    """model(...) keeping only the last row's logits (logits_to_keep, transformers >= 4.50)."""
    return model(use_cache=True, logits_to_keep=1, **kw)


def random_ids(vocab, n, seed):
    g = torch.Generator(device="cpu")
    g.manual_seed(seed * 1000003 + n)
    return torch.randint(0, vocab, (1, n), generator=g).cuda()


def make_static_cache(model, max_len):
    """StaticCache across transformers versions: 5.x takes (config, max_cache_len) and
    allocates lazily on the first update; 4.x wants batch size, device and dtype."""
    try:
        return StaticCache(config=model.config, max_cache_len=max_len)
    except TypeError:
        return StaticCache(config=model.config, max_batch_size=1, max_cache_len=max_len, device=model.device, dtype=model.dtype)


class Budget:
    def __init__(self, seconds):
        self.end = time.time() + seconds if seconds > 0 else None

    def left(self):
        return float("inf") if self.end is None else self.end - time.time()


def status_of(e):
    if isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower():
        return "oom"
    return "error"


def run_dynamic(model, ids, steps):
    """Eager SDPA with a DynamicCache: prefill, then steps timed decode steps."""
    row = {}
    cache = DynamicCache()
    sync()
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = forward(model, input_ids=ids, past_key_values=cache)
        tok = out.logits[:, -1].argmax(-1, keepdim=True)
        sync()
        row["prefill_seconds"] = time.perf_counter() - t0
        del out
        for i in range(2 + steps):
            if i == 2:
                sync()
                t0 = time.perf_counter()
            out = forward(model, input_ids=tok, past_key_values=cache)
            tok = out.logits[:, -1].argmax(-1, keepdim=True)
        sync()
    row["decode_ms_per_token"] = (time.perf_counter() - t0) / steps * 1e3
    del cache
    return row


def decode_step(model, tok, cache_position, cache):
    out = forward(model, input_ids=tok, cache_position=cache_position, past_key_values=cache)
    return out.logits[:, -1].argmax(-1, keepdim=True)


def run_static(model, compiled, ids, steps):
    """StaticCache: eager prefill, then the compiled decode step (3 warmup steps, which
    compile and record the CUDA graph, then steps timed ones)."""
    T = ids.shape[1]
    row = {}
    cache = make_static_cache(model, T + steps + 8)
    sync()
    t0 = time.perf_counter()
    with torch.no_grad():  # as the guide; inference_mode tensors and CUDA graphs mix less well
        out = forward(model, input_ids=ids, cache_position=torch.arange(T, device=ids.device), past_key_values=cache)
        tok = out.logits[:, -1].argmax(-1, keepdim=True)
        sync()
        row["prefill_seconds"] = time.perf_counter() - t0
        del out
        mark = getattr(torch.compiler, "cudagraph_mark_step_begin", lambda: None)
        for i in range(3 + steps):
            if i == 3:
                sync()
                row["compile_seconds"] = time.perf_counter() - t0
                t0 = time.perf_counter()
            elif i == 0:
                t0 = time.perf_counter()
            mark()
            tok = compiled(model, tok, torch.tensor([T + i], device=ids.device), cache).clone()
        sync()
    row["decode_ms_per_token"] = (time.perf_counter() - t0) / steps * 1e3
    del cache
    return row


def main():
    ap = argparse.ArgumentParser(description="transformers peers of lukv-run bench")
    ap.add_argument("--model", required=True)
    ap.add_argument("--contexts", default="8192,32768,65536")
    ap.add_argument("--decode-steps", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=256)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--configs", default="sdpa_dynamic,static_compile")
    ap.add_argument("--compile-mode", default="reduce-overhead")
    ap.add_argument("--compile-reserve", type=float, default=45, help="seconds a compiled context needs at least (the first: twice)")
    ap.add_argument("--max-seconds", type=float, default=0, help="budget of the whole run (0: none)")
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    budget = Budget(args.max_seconds)
    contexts = [int(c) for c in args.contexts.split(",") if c.strip()]
    configs = [c for c in args.configs.split(",") if c.strip()]
    start = time.time()
    rep = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "model": os.path.abspath(args.model),
        "contexts": contexts,
        "decode_steps": args.decode_steps,
        "compile_mode": args.compile_mode,
        "configs": {c: [] for c in configs},
        "errors": [],
    }

    def save():
        rep["seconds"] = time.time() - start
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(rep, f, indent=2)
        os.replace(tmp, args.json)

    def log(msg):
        print(f"bench_peers: {msg}", file=sys.stderr, flush=True)

    try:
        t0 = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16, device_map="cuda", attn_implementation="sdpa")
        model.eval()
        rep["load_seconds"] = time.perf_counter() - t0
        rep["weight_bytes"] = sum(p.numel() * p.element_size() for p in model.parameters())
        log(f"loaded {args.model} in {rep['load_seconds']:.1f} s")
    except Exception as e:
        rep["errors"].append(f"loading the model: {e!r}")
        save()
        raise
    vocab = model.config.vocab_size
    # Warmup (kernels, cuBLAS handles, allocator) on the eager path.
    with torch.inference_mode():
        forward(model, input_ids=random_ids(vocab, min(args.warmup, min(contexts)), args.seed), past_key_values=DynamicCache())
    sync()
    save()

    compiled, fullgraph = None, True
    for cfg in configs:
        for k, T in enumerate(contexts):
            row = {"context": T, "status": "ok"}
            need = 30.0
            if cfg == "static_compile":
                need = args.compile_reserve * (2 if compiled is None else 1)
            if budget.left() < need:
                row["status"], row["error"] = "skipped", f"less than {need:.0f} s left of --max-seconds"
                rep["configs"][cfg].append(row)
                save()
                log(f"{cfg} {T}: skipped (time budget)")
                continue
            ids = random_ids(vocab, T, args.seed)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            t0 = time.time()
            try:
                if cfg == "sdpa_dynamic":
                    row.update(run_dynamic(model, ids, args.decode_steps))
                elif cfg == "static_compile":
                    if compiled is None:
                        for attr in ("cache_size_limit", "recompile_limit"):
                            if hasattr(torch._dynamo.config, attr):
                                setattr(torch._dynamo.config, attr, 64)
                        compiled = torch.compile(decode_step, mode=args.compile_mode, fullgraph=True)
                    try:
                        row.update(run_static(model, compiled, ids, args.decode_steps))
                    except Exception as e:
                        if status_of(e) == "oom" or not fullgraph:
                            raise
                        # The whole step did not compile as one graph: once, allow graph breaks.
                        fullgraph = False
                        rep["fullgraph_error"] = f"{type(e).__name__}: {str(e)[:500]}"
                        log(f"static_compile: fullgraph compile failed ({rep['fullgraph_error'][:200]}); retrying with graph breaks")
                        traceback.print_exc(limit=3)
                        torch._dynamo.reset()
                        compiled = torch.compile(decode_step, mode=args.compile_mode)
                        torch.cuda.empty_cache()
                        row.update(run_static(model, compiled, ids, args.decode_steps))
                    row["fullgraph"] = fullgraph
                else:
                    raise ValueError(f"unknown config {cfg!r} (want sdpa_dynamic or static_compile)")
                row["prefill_tokens_per_sec"] = T / row["prefill_seconds"]
            except Exception as e:
                row["status"] = status_of(e)
                row["error"] = f"{type(e).__name__}: {str(e)[:500]}"
                log(f"{cfg} {T}: {row['status']}: {row['error']}")
                traceback.print_exc(limit=3)
            row["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
            row["seconds"] = time.time() - t0
            ids = None
            rep["configs"][cfg].append(row)
            save()
            if row["status"] == "ok":
                log(f"{cfg} {T}: prefill {row['prefill_seconds']:.3f} s, decode {row['decode_ms_per_token']:.2f} ms/token, "
                    f"peak {row['peak_memory_bytes'] / 2**30:.1f} GiB" + (f", compile {row['compile_seconds']:.0f} s" if "compile_seconds" in row else ""))
            torch.cuda.empty_cache()
    save()


if __name__ == "__main__":
    main()
