#!/usr/bin/env python3
"""The serving benchmark's client, its transformers peer and its report
(scripts/bench-serve.sh runs all three).

  client  sends, for each compression level, N concurrent streamed completions (random
          text of about --prompt-tokens tokens, --gen-tokens tokens each with ignore_eos,
          kv_method/kv_compression per request) to a running `lukv-run serve`, and
          measures per request the time to first token and the gaps between streamed
          tokens (one SSE event per token; a piece held back for incomplete UTF-8 merges
          two, which the gap then counts once). The server's --step-log (one JSON line per
          batched decode step: batch, seconds, live KV bytes) gives the most sequences
          decoded at once, the decode-step throughput and the per-step time against its
          memory floor, (weights + live KV bytes) / --bandwidth.
  peer    Hugging Face transformers' batched greedy generate with a static cache
          (cache_implementation="static", SDPA, bf16) on the same checkpoint, random
          prompts of the same length, at each --batches size it fits: prefill time and
          decode tokens/s (a logits processor stamps every generated token; the decode
          rate is over tokens 2..G).
  report  one JSON document and a readable table from the two.

The client uses the standard library only; the peer needs torch and transformers.
"""
import argparse
import http.client
import json
import os
import random
import socket
import statistics
import sys
import threading
import time
import urllib.parse


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(round(p / 100 * (len(xs) - 1)))))
    return xs[k]


def make_prompts(model_dir, n, tokens, seed):
    """n distinct texts of about `tokens` tokens for the model's tokenizer (byte-level BPE,
    as Llama 3's and lukv-tiny's): random whole-word vocabulary entries (" word", one
    token each when re-encoded), joined. The server reports the exact count (usage)."""
    vocab = json.load(open(os.path.join(model_dir, "tokenizer.json")))["model"]["vocab"]
    words = sorted(t[1:] for t in vocab if t.startswith("\u0120") and t[1:].isascii() and t[1:].isalpha())
    if len(words) < 100:
        sys.exit(f"{model_dir}/tokenizer.json: only {len(words)} whole-word tokens; want a byte-level BPE vocabulary")
    rng = random.Random(seed)
    return ["".join(" " + rng.choice(words) for _ in range(tokens - 1)) for _ in range(n)]


def stream_one(host, port, body, res):
    """One streamed completion: records ttft, gaps, tokens (SSE content events), status."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=3600)
    res["conn"] = conn  # the main thread shuts its socket down at the level's deadline
    try:
        conn.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        res["status"] = r.status
        if r.status != 200:
            res["error"] = r.read().decode(errors="replace")[:300]
            return
        last = None
        gaps = []
        events = 0
        buf = b""
        while True:
            chunk = r.readline()
            if not chunk:
                break
            line = chunk.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            ev = json.loads(data)
            if "error" in ev:
                res["error"] = json.dumps(ev["error"])[:300]
                continue
            if ev.get("usage"):
                res["usage"] = ev["usage"]
            ch = ev.get("choices") or []
            if ch and ch[0].get("text"):
                now = time.perf_counter()
                if last is None:
                    res["ttft"] = now - t0
                else:
                    gaps.append(now - last)
                last = now
                events += 1
        res["gaps"] = gaps
        res["events"] = events
        res["seconds"] = time.perf_counter() - t0
    except Exception as e:  # noqa: BLE001 (recorded, the run goes on)
        res["error"] = repr(e)
    finally:
        conn.close()


def read_steps(path, skip):
    with open(path) as f:
        lines = f.readlines()
    head = json.loads(lines[0]) if lines else {}
    steps = [json.loads(l) for l in lines[max(1, skip):] if l.strip()]
    return head, steps, len(lines)


def client(args):
    u = urllib.parse.urlparse(args.url)
    host, port = u.hostname, u.port or 80
    levels = [float(x) for x in args.compressions.split(",")]
    counts = [int(x) for x in args.requests.split(",")]
    if len(counts) == 1:
        counts = counts * len(levels)
    if len(counts) != len(levels):
        sys.exit("--requests: one count, or one per compression level")
    prompts = make_prompts(args.model, max(counts), args.prompt_tokens, args.seed)
    out = {"prompt_tokens_target": args.prompt_tokens, "gen_tokens": args.gen_tokens, "bandwidth": args.bandwidth, "levels": []}
    for c, n in zip(levels, counts):
        head, _, skip = read_steps(args.step_log, 0)
        body = lambda i: {"model": "", "prompt": prompts[i], "max_tokens": args.gen_tokens, "stream": True, "ignore_eos": True,
                          "temperature": 0, "stream_options": {"include_usage": True},
                          "kv_method": args.method if c > 0 else "full", "kv_compression": c}
        results = [dict() for _ in range(n)]
        threads = [threading.Thread(target=stream_one, args=(host, port, body(i), results[i]), daemon=True) for i in range(n)]
        t0 = time.perf_counter()
        for th in threads:
            th.start()
        deadline = t0 + args.level_seconds
        for th in threads:
            th.join(max(0.0, deadline - time.perf_counter()))
        wall = time.perf_counter() - t0
        timed_out = sum(th.is_alive() for th in threads)
        if timed_out:
            # Cut the unfinished requests (the server cancels a sequence whose client goes)
            # and wait until the server is idle, so they do not run into the next level.
            for th, r in zip(threads, results):
                if th.is_alive() and r.get("conn") is not None and r["conn"].sock is not None:
                    r["cut"] = True
                    try:
                        r["conn"].sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
            for th in threads:
                th.join(10)
            for _ in range(60):
                try:
                    h = http.client.HTTPConnection(host, port, timeout=5)
                    h.request("GET", "/health")
                    st = json.loads(h.getresponse().read())
                    h.close()
                    if st.get("running", 0) == 0 and st.get("waiting", 0) == 0:
                        break
                except (OSError, ValueError):
                    pass
                time.sleep(1)
            print(f"[bench-serve] compression {c}: {timed_out} requests cut at the {args.level_seconds:.0f}s limit", file=sys.stderr, flush=True)
        _, steps, _ = read_steps(args.step_log, skip)
        ok = [r for r in results if r.get("status") == 200 and "error" not in r and r.get("events") and not r.get("cut")]
        ttft = [r["ttft"] for r in ok if "ttft" in r]
        gaps = [g for r in ok for g in r["gaps"]]
        gen = sum(r.get("usage", {}).get("completion_tokens", r.get("events", 0)) for r in ok)
        ptoks = [r["usage"]["prompt_tokens"] for r in ok if r.get("usage")]
        most = max((s["batch"] for s in steps), default=0)
        dec_tokens = sum(s["batch"] for s in steps)
        dec_secs = sum(s["seconds"] for s in steps)
        peak = [s for s in steps if s["batch"] >= max(1, int(0.9 * most))]
        wb = head.get("weight_bytes", 0)
        floor = [(wb + s["live_kv_bytes"]) / args.bandwidth for s in peak]
        lvl = {
            "compression": c, "requests": n, "completed": len(ok), "timed_out": timed_out,
            "errors": [r.get("error") for r in results if "error" in r][:5],
            "prompt_tokens_mean": statistics.mean(ptoks) if ptoks else None,
            "generated_tokens": gen, "wall_seconds": wall,
            "max_concurrent_sequences": most,
            "decode_steps": len(steps),
            "decode_tokens_per_second": dec_tokens / dec_secs if dec_secs else None,
            "decode_tokens_per_second_at_peak": sum(s["batch"] for s in peak) / sum(s["seconds"] for s in peak) if peak else None,
            "end_to_end_generated_tokens_per_second": gen / wall if wall else None,
            "ttft_p50": pct(ttft, 50), "ttft_p99": pct(ttft, 99),
            "itl_p50": pct(gaps, 50), "itl_p99": pct(gaps, 99),
            "peak_batch_step_seconds_median": statistics.median([s["seconds"] for s in peak]) if peak else None,
            "peak_batch_floor_seconds_median": statistics.median(floor) if floor else None,
            "peak_batch_live_kv_bytes_median": statistics.median([s["live_kv_bytes"] for s in peak]) if peak else None,
        }
        if lvl["peak_batch_step_seconds_median"] and lvl["peak_batch_floor_seconds_median"]:
            lvl["step_over_floor"] = lvl["peak_batch_step_seconds_median"] / lvl["peak_batch_floor_seconds_median"]
        out["levels"].append(lvl)
        out["server"] = head
        print(f"[bench-serve] compression {c}: {len(ok)}/{n} done in {wall:.1f}s, at most {most} sequences at once, "
              f"decode {lvl['decode_tokens_per_second'] or 0:.0f} tok/s", file=sys.stderr, flush=True)
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


def peer(args):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, LogitsProcessor, LogitsProcessorList

    out = {"transformers": transformers.__version__, "torch": torch.__version__, "prompt_tokens": args.prompt_tokens,
           "gen_tokens": args.gen_tokens, "rows": []}
    end = time.time() + args.max_seconds
    t = time.time()
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16, device_map="cuda", attn_implementation="sdpa")
    model.eval()
    out["load_seconds"] = time.time() - t

    class Stamp(LogitsProcessor):
        def __init__(self):
            self.times = []

        def __call__(self, input_ids, scores):
            torch.cuda.synchronize()
            self.times.append(time.perf_counter())
            return scores

    for b in [int(x) for x in args.batches.split(",")]:
        row = {"batch": b}
        if time.time() > end:
            row["status"] = "skipped (time budget)"
            out["rows"].append(row)
            continue
        try:
            g = torch.Generator(device="cpu").manual_seed(b)
            ids = torch.randint(300, 8000, (b, args.prompt_tokens), generator=g).cuda()
            stamp = Stamp()
            torch.cuda.reset_peak_memory_stats()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.inference_mode():
                res = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.gen_tokens,
                                     min_new_tokens=args.gen_tokens, do_sample=False, cache_implementation="static",
                                     logits_processor=LogitsProcessorList([stamp]), pad_token_id=0)
            torch.cuda.synchronize()
            t1 = time.perf_counter()
            n = res.shape[1] - ids.shape[1]
            row.update(status="ok", generated=n, total_seconds=t1 - t0, prefill_seconds=stamp.times[0] - t0,
                       peak_memory_gb=torch.cuda.max_memory_allocated() / 1e9)
            if len(stamp.times) > 1:
                dt = (stamp.times[-1] - stamp.times[0]) / (len(stamp.times) - 1)
                row.update(decode_step_seconds=dt, decode_tokens_per_second=b / dt)
            del res, ids
        except Exception as e:  # noqa: BLE001
            row["status"] = "oom" if "out of memory" in str(e).lower() else "error: " + repr(e)[:200]
        torch.cuda.empty_cache()
        out["rows"].append(row)
        print(f"[bench-serve] transformers batch {b}: {row.get('status')} {row.get('decode_tokens_per_second', 0):.0f} tok/s",
              file=sys.stderr, flush=True)
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


def fmt(x, spec=".3g"):
    return "-" if x is None else format(x, spec)


def report(args):
    lukv = json.load(open(args.lukv)) if os.path.exists(args.lukv) else {"levels": []}
    peers = json.load(open(args.peer)) if args.peer and os.path.exists(args.peer) else {"rows": []}
    doc = {"lukv": lukv, "transformers": peers, "targets": []}
    lv = {l["compression"]: l for l in lukv["levels"]}
    full = lv.get(0.0)
    tgt = doc["targets"]

    def ratio(a, b):
        return a / b if a and b else None

    if full:
        for c, want_seq, want_tps in ((0.8, 4, 3), (0.9, None, 5.2)):
            l = lv.get(c)
            if not l:
                continue
            if want_seq:
                r = ratio(l["max_concurrent_sequences"], full["max_concurrent_sequences"])
                tgt.append({"target": f"concurrent sequences at {c} >= {want_seq}x full", "value": r, "met": bool(r and r >= want_seq)})
            r = ratio(l["decode_tokens_per_second_at_peak"], full["decode_tokens_per_second_at_peak"])
            tgt.append({"target": f"decode tok/s at {c} >= {want_tps}x full", "value": r, "met": bool(r and r >= want_tps)})
        same = [p for p in peers["rows"] if p.get("batch") == full["max_concurrent_sequences"] and p.get("decode_tokens_per_second")]
        if same:
            r = ratio(full["decode_tokens_per_second_at_peak"], same[0]["decode_tokens_per_second"])
            tgt.append({"target": f"full-cache decode tok/s >= transformers at batch {same[0]['batch']}", "value": r, "met": bool(r and r >= 1)})
    for l in lukv["levels"]:
        if l.get("step_over_floor"):
            tgt.append({"target": f"step time <= 1.3x floor at batch {l['max_concurrent_sequences']} (compression {l['compression']})",
                        "value": l["step_over_floor"], "met": l["step_over_floor"] <= 1.3})
    with open(args.json, "w") as f:
        json.dump(doc, f, indent=1)
    p = print
    srv = lukv.get("server", {})
    p(f"# lukv-run serve on the GPU: {lukv.get('prompt_tokens_target')}-token prompts, {lukv.get('gen_tokens')} tokens each")
    p(f"KV pool {fmt(srv.get('kv_pool_bytes', 0) / 2**30, '.1f')} GiB in blocks of {srv.get('block_tokens')} tokens; weights "
      f"{fmt(srv.get('weight_bytes', 0) / 1e9, '.2f')} GB; floor = (weights + live KV) / {fmt(lukv.get('bandwidth', 0) / 1e12, '.1f')} TB/s\n")
    p("| compression | done | max seqs at once | decode tok/s (all steps) | decode tok/s (peak batch) | end-to-end tok/s | TTFT p50 / p99 s | ITL p50 / p99 ms | step ms at peak vs floor |")
    p("|---|---|---|---|---|---|---|---|---|")
    for l in lukv["levels"]:
        p(f"| {l['compression']} | {l['completed']}/{l['requests']} | {l['max_concurrent_sequences']} | {fmt(l['decode_tokens_per_second'], '.0f')} | "
          f"{fmt(l['decode_tokens_per_second_at_peak'], '.0f')} | {fmt(l['end_to_end_generated_tokens_per_second'], '.0f')} | "
          f"{fmt(l['ttft_p50'], '.2f')} / {fmt(l['ttft_p99'], '.2f')} | {fmt(l['itl_p50'] and l['itl_p50'] * 1e3, '.1f')} / "
          f"{fmt(l['itl_p99'] and l['itl_p99'] * 1e3, '.0f')} | {fmt(l['peak_batch_step_seconds_median'] and l['peak_batch_step_seconds_median'] * 1e3, '.2f')} vs "
          f"{fmt(l['peak_batch_floor_seconds_median'] and l['peak_batch_floor_seconds_median'] * 1e3, '.2f')} ({fmt(l.get('step_over_floor'), '.2f')}x) |")
    if peers["rows"]:
        p(f"\n## transformers {peers.get('transformers')} batched generate, static cache, SDPA, bf16")
        p("| batch | status | prefill s | decode ms/step | decode tok/s | peak GB |")
        p("|---|---|---|---|---|---|")
        for r in peers["rows"]:
            p(f"| {r['batch']} | {r.get('status')} | {fmt(r.get('prefill_seconds'), '.2f')} | {fmt(r.get('decode_step_seconds') and r['decode_step_seconds'] * 1e3, '.1f')} | "
              f"{fmt(r.get('decode_tokens_per_second'), '.0f')} | {fmt(r.get('peak_memory_gb'), '.1f')} |")
    if tgt:
        p("\n## targets")
        for t in tgt:
            p(f"| {t['target']} | {fmt(t['value'], '.2f')} | {'met' if t['met'] else '**MISSED**'} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("client")
    c.add_argument("--url", default="http://127.0.0.1:8000")
    c.add_argument("--model", required=True, help="checkpoint folder (its tokenizer.json makes the prompts)")
    c.add_argument("--step-log", required=True)
    c.add_argument("--compressions", default="0,0.8,0.9")
    c.add_argument("--requests", default="4,10,18", help="requests per level (one count for all, or one per level)")
    c.add_argument("--prompt-tokens", type=int, default=32768)
    c.add_argument("--gen-tokens", type=int, default=256)
    c.add_argument("--method", default="expected-attention")
    c.add_argument("--level-seconds", type=float, default=150)
    c.add_argument("--bandwidth", type=float, default=4.3e12)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--json", required=True)
    p = sub.add_parser("peer")
    p.add_argument("--model", required=True)
    p.add_argument("--batches", default="1,2,4,8")
    p.add_argument("--prompt-tokens", type=int, default=32768)
    p.add_argument("--gen-tokens", type=int, default=256)
    p.add_argument("--max-seconds", type=float, default=150)
    p.add_argument("--json", required=True)
    r = sub.add_parser("report")
    r.add_argument("--lukv", required=True)
    r.add_argument("--peer", default="")
    r.add_argument("--json", required=True)
    a = ap.parse_args()
    {"client": client, "peer": peer, "report": report}[a.cmd](a)


if __name__ == "__main__":
    main()
