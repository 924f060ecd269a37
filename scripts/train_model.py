#!/usr/bin/env python3
"""Trains lukv-tiny, a small Llama (RMSNorm, RoPE, SwiGLU, GQA) for KV-cache eviction work,
on packed training prose + RULER-format tasks, and writes a Hugging Face checkpoint.

Runs on the GPU machine (one H200) inside one device call: the run is sized by a wall-clock
budget split over a length curriculum (--phases T:batch:fraction,...), or, for an exact
replay, by fixed step counts (--phase-steps). Data are generated on the fly by DataLoader
workers (seeded: worker w of phase p draws from random.Random(seed*7919 + p*131 + w), and
the loader hands batches out round-robin, so the token stream is a function of the seed).

Loss: mean next-token cross-entropy over every position, plus --answer-weight times the mean
over the answer tokens of the task samples (the few tokens that need retrieval).

Writes to --out: config.json, generation_config.json, model.safetensors (bf16),
tokenizer.json, tokenizer_config.json, loss.csv (one row per logged step), train_log.json.

Resumable (lukv-small spans several device calls): --run-seconds S stops this run after S
more seconds of training and saves; --resume DIR continues from DIR (a checkpoint this script
wrote: the Hugging Face files plus train_state.json) on the same schedule (--time-budget is the
total over all runs; the phase and learning rate follow the training seconds done so far). The
checkpoint is the bf16 Hugging Face model itself, so that it fits the device tool's return limit
(fp32 master weights + Adam moments of a 12M model are ~140 MB): resuming widens it to fp32 and
starts fresh Adam moments with a --rewarmup-steps linear warm-up (the bf16 rounding of the master
weights, ~0.4%, is below one late-schedule update). Each run draws new data seeds (run index).

Usage (see scripts/default-model.sh, scripts/small-model.sh):
  python3 scripts/train_model.py --data data/corpus --tokenizer DIR/tokenizer.json --out DIR \
      --time-budget 360 [--phases 2048:64:0.45,4096:32:0.2,16384:8:0.35] [--seed 1234]
"""
import argparse
import csv
import json
import math
import os
import random
import shutil
import signal
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus"))
import tasks  # noqa: E402

# Task mix of the task samples (prose-only rows come on top, --prose-frac).
TASK_WEIGHTS = {
    "niah_single_1": 6, "niah_single_2": 10, "niah_single_3": 8, "niah_multikey_1": 12,
    "niah_multikey_2": 12, "niah_multikey_3": 10, "niah_multivalue": 10, "niah_multiquery": 10,
    "vt": 10, "cwe": 6, "fwe": 6,
}
MIN_BUDGET = {"cwe": 1600, "vt": 800, "fwe": 700}
ANSWER_ROOM = 72  # tokens kept free after a prompt for its answer and EOS
# Training-only densification: NIAH samples whose context holds several single-valued keys
# get 0..MAX_FOLLOWUPS extra question/answer pairs about other keys after their answer.
FOLLOWUP_TASKS = {"niah_multikey_1", "niah_multikey_2", "niah_multikey_3"}
MAX_FOLLOWUPS = 8

STATE = {}  # built in the main process before the loaders fork; read by the workers


def log(*a):
    print(f"[{time.strftime('%H:%M:%S')}]", *a, flush=True)


def build_state(args):
    from tokenizers import Tokenizer
    t0 = time.time()
    tok = Tokenizer.from_file(args.tokenizer)
    bos, eos = tok.token_to_id("<|begin_of_text|>"), tok.token_to_id("<|end_of_text|>")
    if args.samples_cmd:  # the command brings its own documents and words
        STATE.update(tok=tok, bos=bos, eos=eos)
        log(f"data: streamed by --samples-cmd {args.samples_cmd!r}")
        return
    rd = lambda f: tasks.read_lines(os.path.join(args.data, f))  # noqa: E731
    docs = rd("train_prose.txt")
    adjs, nouns = rd("words_train_adj.txt"), rd("words_train_noun.txt")
    encs = tok.encode_batch(docs, add_special_tokens=False)
    prose = []
    for e in encs:
        prose.extend([bos] + e.ids + [eos])
    prose = np.asarray(prose, dtype=np.int32)
    hay = tasks.Haystack(docs, lambda xs: [len(e.ids) for e in tok.encode_batch(xs, add_special_tokens=False)])
    STATE.update(tok=tok, prose=prose, hay=hay, adjs=adjs, nouns=nouns, bos=bos, eos=eos)
    log(f"data: {len(docs)} docs, {len(prose)} prose tokens, {len(hay.sents)} haystack sentences, "
        f"{len(adjs)}+{len(nouns)} key words, built in {time.time() - t0:.1f}s")


class Stream(torch.utils.data.IterableDataset):
    """Endless batches (ids [B, T] int64, answer mask [B, T] bool) for one curriculum phase."""

    def __init__(self, T, B, seed, phase, prose_frac, weights):
        super().__init__()
        self.T, self.B, self.seed, self.phase, self.prose_frac = T, B, seed, phase, prose_frac
        self.weights = weights  # task -> weight for this phase

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid = info.id if info else 0
        rng = random.Random(self.seed * 7919 + self.phase * 131 + wid)
        st = STATE
        tok = st["tok"]
        count = lambda s: len(tok.encode(s).ids)  # noqa: E731
        gen = tasks.TaskGen(st["adjs"], st["nouns"], st["adjs"] + st["nouns"], st["hay"], count, rng)
        names, weights = list(self.weights), list(self.weights.values())
        while True:
            ids = np.zeros((self.B, self.T), dtype=np.int64)
            mask = np.zeros((self.B, self.T), dtype=bool)
            for b in range(self.B):
                self._row(rng, gen, tok, names, weights, ids[b], mask[b])
            yield torch.from_numpy(ids), torch.from_numpy(mask)

    def _prose(self, rng, out):
        p = STATE["prose"]
        i = rng.randrange(len(p) - len(out))
        out[:] = p[i:i + len(out)]

    def _row(self, rng, gen, tok, names, weights, ids, mask):
        T = self.T
        if rng.random() < self.prose_frac:
            self._prose(rng, ids)
            return
        pos, first = 0, True
        while pos < T:
            room = T - pos
            task = rng.choices(names, weights)[0]
            lo = MIN_BUDGET.get(task, 256) + ANSWER_ROOM
            if room < lo or (not first and rng.random() < 0.15):
                self._prose(rng, ids[pos:])
                return
            if first and rng.random() < 0.4:
                budget = room  # a sample spanning the whole row: the longest distances
            else:
                budget = int(math.exp(rng.uniform(math.log(lo), math.log(room))))
            n_fu = rng.randint(0, MAX_FOLLOWUPS) if task in FOLLOWUP_TASKS else 0
            fu_room = n_fu * (110 if task == "niah_multikey_3" else 45)
            if budget - ANSWER_ROOM - fu_room < lo - ANSWER_ROOM:
                n_fu, fu_room = 0, 0
            s = gen.make(task, budget - ANSWER_ROOM - fu_room, icl=rng.random() < 0.5,
                         followups=n_fu, vary_keys=True)
            enc = lambda t: tok.encode(t, add_special_tokens=False).ids  # noqa: E731
            seq = tok.encode(s.prompt).ids
            m = [False] * len(seq)
            a_ids = enc(s.answer)
            seq += a_ids
            m += [True] * len(a_ids)
            for q, a in s.followups:
                q_ids, fa_ids = enc(q), enc(a)
                seq += q_ids + fa_ids
                m += [False] * len(q_ids) + [True] * len(fa_ids)
            seq.append(STATE["eos"])
            m.append(True)
            n = min(len(seq), room)
            ids[pos:pos + n] = seq[:n]
            mask[pos:pos + n] = m[:n]
            pos += n
            first = False


class CmdStream(Stream):
    """--samples-cmd: rows packed from the JSON lines of an external generator
    (scripts/make-train-data) instead of tasks.TaskGen and the prose of --data. Each worker runs
    CMD -seed S -max-length L (S as the other streams' seeds, L = T - ANSWER_ROOM) and reads
    its stdout: a {"prompt", "answer"} line is a task sample (BOS + prompt, then answer + EOS
    trained with the answer loss), a {"text"} line a document (BOS + text + EOS, all-token loss
    only). A sample that does not fit in the rest of a row waits for the next row, and the rest
    is filled with document tokens; once a row's worth of document tokens is waiting, the next
    row is all documents (so -prose-frac of the generator sets the share of document rows);
    a sample longer than a row (possible when the generator
    estimates lengths instead of counting with -tokenizer) is dropped."""

    def __init__(self, cmd, T, B, seed, phase):
        super().__init__(T, B, seed, phase, 0.0, {})
        self.cmd = cmd

    def __iter__(self):
        import shlex
        import subprocess
        info = torch.utils.data.get_worker_info()
        wid = info.id if info else 0
        seed = self.seed * 7919 + self.phase * 131 + wid
        argv = shlex.split(self.cmd) + ["-seed", str(seed), "-max-length", str(self.T - ANSWER_ROOM)]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, bufsize=1 << 20)
        tok, bos, eos = STATE["tok"], STATE["bos"], STATE["eos"]
        enc = lambda t: tok.encode(t, add_special_tokens=False).ids  # noqa: E731
        prose, pending = [], None

        def record():
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"--samples-cmd {argv}: ended (exit {proc.wait()})")
            return json.loads(line)

        def fill_prose(n):
            nonlocal prose
            while len(prose) < n:
                r = record()
                if "text" in r:
                    prose += [bos] + enc(r["text"]) + [eos]
            out, prose = prose[:n], prose[n:]
            return out

        while True:
            ids = np.zeros((self.B, self.T), dtype=np.int64)
            mask = np.zeros((self.B, self.T), dtype=bool)
            for b in range(self.B):
                if len(prose) >= self.T:  # a whole row of documents keeps the buffer bounded
                    ids[b] = fill_prose(self.T)
                    continue
                pos = 0
                while pos < self.T:
                    if pending is None:
                        r = record()
                        if "text" in r:
                            prose += [bos] + enc(r["text"]) + [eos]
                            continue
                        p_ids, a_ids = [bos] + enc(r["prompt"]), enc(r["answer"]) + [eos]
                        pending = (p_ids + a_ids, [False] * len(p_ids) + [True] * len(a_ids))
                    seq, m = pending
                    if len(seq) > self.T:  # longer than a row (token estimate too low): drop it
                        pending = None
                        continue
                    room = self.T - pos
                    if len(seq) > room:
                        ids[b, pos:] = fill_prose(room)
                        break
                    ids[b, pos:pos + len(seq)] = seq
                    mask[b, pos:pos + len(seq)] = m
                    pos += len(seq)
                    pending = None
            yield torch.from_numpy(ids), torch.from_numpy(mask)


def parse_weights(spec, flag):
    """TASK_WEIGHTS with the overrides of "task:weight,...", checked (a typo must not
    silently train on the default mix)."""
    w = dict(TASK_WEIGHTS)
    for item in filter(None, (x.strip() for x in spec.split(","))):
        name, _, val = item.partition(":")
        if name not in TASK_WEIGHTS:
            sys.exit(f"{flag}: unknown task {name!r} (tasks: {', '.join(TASK_WEIGHTS)})")
        try:
            w[name] = float(val)
        except ValueError:
            sys.exit(f"{flag}: {item!r}: want task:weight")
        if w[name] < 0:
            sys.exit(f"{flag}: {item!r}: weight must be >= 0")
    if sum(w.values()) <= 0:
        sys.exit(f"{flag}: all weights are zero")
    return w


def make_model(args, vocab):
    from transformers import LlamaConfig, LlamaForCausalLM
    kw = dict(vocab_size=vocab, hidden_size=args.hidden, intermediate_size=args.inter,
              num_hidden_layers=args.layers, num_attention_heads=args.heads,
              num_key_value_heads=args.kv_heads, head_dim=args.head_dim or args.hidden // args.heads,
              max_position_embeddings=args.max_pos, rms_norm_eps=1e-5, hidden_act="silu",
              tie_word_embeddings=True, bos_token_id=0, eos_token_id=1, attention_bias=False,
              mlp_bias=False, initializer_range=0.02)
    try:
        cfg = LlamaConfig(rope_parameters={"rope_type": "default", "rope_theta": args.rope_theta}, **kw)
    except TypeError:
        cfg = LlamaConfig(rope_theta=args.rope_theta, **kw)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(cfg)
    return model


def lr_at(frac, args):
    if frac < args.warmup:
        return args.lr * frac / args.warmup
    p = min(1.0, (frac - args.warmup) / max(1e-9, 1 - args.warmup))
    return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/corpus")
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--phases", default="2048:64:0.45,4096:32:0.2,16384:8:0.35",
                    help="T:batch:fraction of the time budget, in order")
    ap.add_argument("--phase-steps", default="", help="T:batch:steps,...: fixed steps instead of time")
    ap.add_argument("--time-budget", type=float, default=360.0, help="seconds of training")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--warmup", type=float, default=0.03, help="fraction of the run")
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--answer-weight", type=float, default=1.0)
    ap.add_argument("--prose-frac", type=float, default=0.2)
    ap.add_argument("--task-weights", default="",
                    help="task:weight,... overrides of the task mix (TASK_WEIGHTS) in every phase")
    ap.add_argument("--long-task-weights", default="",
                    help="task:weight,... overrides for phases with T >= --long-from (on top of --task-weights)")
    ap.add_argument("--long-from", type=int, default=16384)
    ap.add_argument("--workers", type=int, default=14)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--inter", type=int, default=704)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=0,
                    help="attention head size (0: hidden / heads); q/o then map hidden <-> heads*head_dim")
    ap.add_argument("--rope-theta", type=float, default=500000.0)
    ap.add_argument("--max-pos", type=int, default=16384)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--run-seconds", type=float, default=0.0,
                    help="stop this run after this many seconds of training (0: train to --time-budget)")
    ap.add_argument("--resume", default="", help="checkpoint folder of an earlier run to continue")
    ap.add_argument("--rewarmup-steps", type=int, default=100,
                    help="after --resume: linear learning-rate warm-up over this many steps (fresh Adam moments)")
    ap.add_argument("--special", default="",
                    help="comma list of extra special tokens of the tokenizer (chat roles) written to tokenizer_config.json")
    ap.add_argument("--chat-template", default="", help="Jinja chat template file for tokenizer_config.json")
    ap.add_argument("--eos-extra", default="",
                    help="comma list of tokens that also end generation (generation_config eos_token_id list)")
    ap.add_argument("--name", default="lukv-tiny", help="model name in logs and the loss plot")
    ap.add_argument("--samples-cmd", default="",
                    help="command that streams training samples as JSON lines (scripts/make-train-data; "
                         "-seed and -max-length are appended per worker and phase); replaces the "
                         "RULER tasks and the prose of --data (which still gives the tokenizer's data)")
    args = ap.parse_args()

    torch.backends.cuda.matmul.allow_tf32 = True
    dev = "cuda"
    random.seed(args.seed)
    np.random.seed(args.seed)
    build_state(args)
    tok = STATE["tok"]
    state = {"train_s": 0.0, "step": 0, "tokens": 0, "rows": [], "phases": [], "runs": []}
    if args.resume:
        model, state = load_checkpoint(args.resume)
        model = model.to(dev)
        log(f"resumed from {args.resume}: step {state['step']}, {state['train_s']:.0f}s of "
            f"{args.time_budget:.0f}s trained, {state['tokens'] / 1e6:.1f}M tokens, run {len(state['runs']) + 1}")
    else:
        model = make_model(args, tok.get_vocab_size()).to(dev)
    nparam = sum(p.numel() for p in model.parameters())
    log(f"model: {nparam / 1e6:.2f}M parameters, config {model.config.to_dict().get('rope_parameters')}")

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=True)

    weights = parse_weights(args.task_weights, "--task-weights")
    long_weights = parse_weights(",".join(filter(None, [args.task_weights, args.long_task_weights])), "--long-task-weights")
    fixed = bool(args.phase_steps)
    spec = args.phase_steps or args.phases
    phases = []
    for item in spec.split(","):
        T, B, x = item.split(":")
        phases.append((int(T), int(B), float(x)))
    total_steps = sum(int(x) for _, _, x in phases) if fixed else None

    os.makedirs(args.out, exist_ok=True)
    rows, t_start, step, tokens = state["rows"], time.time(), state["step"], state["tokens"]
    train_time = state["train_s"]
    phase_log = state["phases"]
    run_index = len(state["runs"])
    run_start_s, run_start_step = train_time, step
    stop_at = train_time + args.run_seconds if args.run_seconds > 0 else float("inf")
    # SIGTERM (the device call's timeout) ends the run at the next step, and it saves.
    term = []
    signal.signal(signal.SIGTERM, lambda *_: term.append(1))
    frac_start = 0.0
    stopped = False
    for pi, (T, B, x) in enumerate(phases):
        if stopped:
            break
        if not fixed and frac_start + x <= train_time / args.time_budget:
            frac_start += x  # done in an earlier run
            continue
        if args.samples_cmd:
            stream = CmdStream(args.samples_cmd, T, B, args.seed + 1_000_003 * run_index, pi)
        else:
            stream = Stream(T, B, args.seed + 1_000_003 * run_index, pi, args.prose_frac, long_weights if T >= args.long_from else weights)
        loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=args.workers,
                                             prefetch_factor=4, pin_memory=True)
        it = iter(loader)
        phase_steps, t_phase = 0, time.time()
        frac_end = frac_start + x if not fixed else None
        log(f"phase {pi}: T={T} batch={B} " + (f"steps={int(x)}" if fixed else f"time fraction {x}"))
        acc = {"loss": 0.0, "ans": 0.0, "acc": 0.0, "n": 0}
        while True:
            if fixed:
                if phase_steps >= int(x):
                    break
                frac = step / total_steps
            else:
                frac = train_time / args.time_budget
                if frac >= frac_end:
                    break
            if train_time >= stop_at or term:
                stopped = True
                break
            lr = lr_at(frac, args)
            if args.resume and step - run_start_step < args.rewarmup_steps:
                lr *= (step - run_start_step + 1) / args.rewarmup_steps
            for g in opt.param_groups:
                g["lr"] = lr
            t0 = time.time()
            xb, mb = next(it)
            xb = xb.to(dev, non_blocking=True)
            mb = mb.to(dev, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = model(input_ids=xb).logits
            lg = logits[:, :-1].float()
            y = xb[:, 1:]
            m = mb[:, 1:].float()
            nll = F.cross_entropy(lg.reshape(-1, lg.size(-1)), y.reshape(-1), reduction="none").view_as(m)
            loss_all = nll.mean()
            na = m.sum().clamp(min=1.0)
            loss_ans = (nll * m).sum() / na
            loss = loss_all + args.answer_weight * loss_ans
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            with torch.no_grad():
                ans_acc = (((lg.argmax(-1) == y).float() * m).sum() / na)
            acc["loss"] += loss_all.item()
            acc["ans"] += loss_ans.item()
            acc["acc"] += ans_acc.item()
            acc["n"] += 1
            torch.cuda.synchronize()
            dt = time.time() - t0
            train_time += dt
            step += 1
            phase_steps += 1
            tokens += xb.numel()
            if step % args.log_every == 0 or step == 1:
                n = acc["n"]
                row = {"step": step, "phase": pi, "seq_len": T, "tokens": tokens,
                       "loss": round(acc["loss"] / n, 4), "answer_loss": round(acc["ans"] / n, 4),
                       "answer_acc": round(acc["acc"] / n, 4), "lr": lr, "grad_norm": round(gn.item(), 3),
                       "train_s": round(train_time, 1), "tok_per_s": round(xb.numel() / dt)}
                rows.append(row)
                log(" ".join(f"{k}={v}" for k, v in row.items()))
                acc = {"loss": 0.0, "ans": 0.0, "acc": 0.0, "n": 0}
        del it, loader
        phase_log.append({"phase": pi, "seq_len": T, "batch": B, "steps": phase_steps,
                          "wall_s": round(time.time() - t_phase, 1), "run": run_index})
        if not fixed:
            frac_start = frac_end
    wall = time.time() - t_start
    done = train_time >= args.time_budget * 0.999 or fixed
    log(f"trained {step} steps, {tokens / 1e6:.1f}M tokens, {train_time:.0f}s in steps, {wall:.0f}s wall "
        f"({'schedule complete' if done else f'{train_time / args.time_budget:.0%} of the schedule: resume to go on'})")
    state["runs"].append({"run": run_index, "from_s": round(run_start_s, 1), "to_s": round(train_time, 1),
                          "steps": step - run_start_step, "wall_s": round(wall, 1), "resumed_from": args.resume or None,
                          "args": vars(args)})

    # ---- save -----------------------------------------------------------------------------
    from transformers import PreTrainedTokenizerFast
    model = model.to(torch.bfloat16)
    model.config.dtype = "bfloat16"
    eos_ids = [1] + [tok.token_to_id(t) for t in filter(None, args.eos_extra.split(","))]
    if None in eos_ids:
        sys.exit(f"--eos-extra {args.eos_extra!r}: a token is not in the vocabulary")
    model.generation_config.bos_token_id = 0
    model.generation_config.eos_token_id = eos_ids if len(eos_ids) > 1 else 1
    model.generation_config.pad_token_id = 1
    model.save_pretrained(args.out, safe_serialization=True)
    tok_dst = os.path.join(args.out, "tokenizer.json")
    if os.path.abspath(args.tokenizer) != os.path.abspath(tok_dst):
        shutil.copy(args.tokenizer, tok_dst)
    hf_tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(args.out, "tokenizer.json"),
                                     bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>")
    hf_tok.model_max_length = model.config.max_position_embeddings
    extra = [t for t in args.special.split(",") if t]
    if extra:
        hf_tok.add_special_tokens({"additional_special_tokens": extra})
    if args.chat_template:
        with open(args.chat_template) as f:
            hf_tok.chat_template = f.read()
    tmp = os.path.join(args.out, "_tok")
    hf_tok.save_pretrained(tmp)
    with open(os.path.join(tmp, "tokenizer_config.json")) as f:
        tcfg = json.load(f)
    if args.chat_template:  # in tokenizer_config.json itself, where lukv and older transformers read it
        with open(args.chat_template) as f:
            tcfg["chat_template"] = f.read()
    with open(os.path.join(args.out, "tokenizer_config.json"), "w") as f:
        json.dump(tcfg, f, indent=2, ensure_ascii=False)
    shutil.rmtree(tmp)
    with open(os.path.join(args.out, "loss.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with open(os.path.join(args.out, "train_state.json"), "w") as f:
        json.dump({"train_s": train_time, "step": step, "tokens": tokens, "rows": rows, "phases": phase_log,
                   "runs": state["runs"], "complete": done}, f)
    with open(os.path.join(args.out, "train_log.json"), "w") as f:
        json.dump({"args": vars(args), "parameters": nparam, "steps": step, "tokens": tokens,
                   "train_s": round(train_time, 1), "wall_s": round(wall, 1), "phases": phase_log,
                   "runs": state["runs"], "complete": done,
                   "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                   "task_weights": weights, "long_task_weights": long_weights, "long_from": args.long_from}, f, indent=1)
    plot_loss(rows, os.path.join(args.out, "loss.png"), args.name)
    log(f"saved to {args.out}: " + ", ".join(sorted(os.listdir(args.out))))


def load_checkpoint(folder):
    """The model and training state of an earlier run (--resume): the bf16 Hugging Face
    checkpoint widened to fp32 for training, and train_state.json."""
    from transformers import LlamaForCausalLM
    path = os.path.join(folder, "train_state.json")
    if not os.path.exists(path):
        sys.exit(f"--resume {folder}: no train_state.json (not a checkpoint of this script)")
    with open(path) as f:
        state = json.load(f)
    model = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="sdpa")
    return model, state


def plot_loss(rows, path, name="lukv-tiny"):
    """loss.png: training loss and answer-token loss against tokens, phases marked."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib missing: no loss.png")
        return
    tok = [r["tokens"] / 1e6 for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    ax[0].plot(tok, [r["loss"] for r in rows], label="all tokens")
    ax[0].plot(tok, [r["answer_loss"] for r in rows], label="answer tokens")
    ax[0].set_yscale("log")
    ax[0].set_xlabel("training tokens (M)")
    ax[0].set_ylabel("cross-entropy (nats)")
    ax[0].legend()
    ax[1].plot(tok, [r["answer_acc"] for r in rows], color="C2")
    ax[1].set_xlabel("training tokens (M)")
    ax[1].set_ylabel("answer-token accuracy (teacher forced)")
    for a in ax:
        for i in range(1, len(rows)):
            if rows[i]["seq_len"] != rows[i - 1]["seq_len"]:
                a.axvline(tok[i], color="gray", ls=":")
                a.text(tok[i], a.get_ylim()[1], f" T={rows[i]['seq_len']}", va="top", fontsize=8)
        a.grid(alpha=0.3)
    fig.suptitle(f"{name} training (phases: sequence length T)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
