#!/usr/bin/env python3
"""Outside oracle for lukv's CPU path: tiny random-weight checkpoints and tokenizers,
with what Hugging Face transformers and tokenizers compute for them.

Runs on the GPU machine (torch, transformers, tokenizers are there; see shared/GPU.md);
the CPU is enough, the models are tiny. Writes into OUTDIR (default $OUT/goldens):

  tokenizers/<name>.tokenizer.json   trained here with `tokenizers` on text this script makes
  tokenizers/<name>.golden.json      {"cases": [{"text", "ids", "ids_special", "decoded"}]}
  models/<arch>/                     an HF checkpoint: config.json, *.safetensors, tokenizer.json
  models/<arch>/golden.json          prompt ids, greedy continuation, its top-2 margins
  models/<arch>/golden.safetensors   "logits" [T, V] float32 for every prompt position

Logits are computed in float64 on the CPU from the stored (rounded) weights, so they are
the exact function of the checkpoint, up to float64 rounding.

Config variants (RoPE scaling types, sliding window, Llama attention biases) are tiny
Llama/Mistral checkpoints written to OUTDIR/models/<variant>/ like the architectures above:
  rope-linear      linear RoPE scaling, factor 2
  rope-dynamic     dynamic NTK scaling, factor 4, max_position_embeddings 48 < the prompt,
                   so the scaled base is in use; greedy decoding runs with a KV cache
                   (each step's base follows the sequence length, as in generate())
  rope-yarn        YaRN, factor 4 over an original context of 64 (attention factor 1.139)
  mistral-sliding  Mistral with sliding_window 16, shorter than the prompt
  llama-bias       Llama with attention_bias (q, k, v and o_proj biases)

Usage: python3 scripts/make_goldens.py [OUTDIR]
       python3 scripts/make_goldens.py --only rope-linear,rope-dynamic,rope-yarn --out tests/testdata
                                        (just those variants, into OUTDIR/models/<variant>)
       python3 scripts/make_goldens.py --checkpoint MODEL_DIR OUTDIR   (goldens of an existing checkpoint)
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

OUT = sys.argv[1] if len(sys.argv) == 2 and not sys.argv[1].startswith("--") else os.path.join(os.environ.get("OUT", "out"), "goldens")

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
QWEN2_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

PROSE = """The old lighthouse keeper climbed the spiral stairs every evening at dusk.
He counted the steps, one hundred and twelve of them, and wrote the number in his log.
Ships passed in the night; some of them answered his light with a horn, others did not.
In the spring the gulls returned, and the keeper's daughter painted the door blue again.
"Don't forget the oil," she said. "We'll need it before the storm comes in on Tuesday."
It's 3:45 pm, and the temperature is 21.5 degrees; the barometer reads 1013 hPa.
A quick brown fox jumps over the lazy dog while the committee debates the budget for 2026.
They're reviewing items 1, 2 and 3 of the agenda: roads, schools, and the new library.
Café owners in Zürich and São Paulo reported naïve estimates of the coöperative's revenue.
Die Straße war lang, und über den Fluß führte eine schmale Brücke aus Holz.
Москва и Санкт-Петербург — крупнейшие города России.
東京は日本の首都です。北京是中国的首都。서울은 한국의 수도입니다.
مرحبا بالعالم، هذه جملة قصيرة باللغة العربية.
def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a
for (int i = 0; i < 10; i++) { sum += values[i] * 2; }
{"key": "value", "numbers": [1, 2, 3], "nested": {"ok": true}}
Emoji are fun 😀🎉👍🏽 and flags like 🇫🇷 🇯🇵 and families 👨‍👩‍👧‍👦 too.
"""

HARD_STRINGS = [
    "",
    " ",
    "Hello, world!",
    "  leading and trailing spaces  ",
    "multiple     spaces\tand\ttabs\t\tdone",
    "line one\nline two\n\n\nline five\r\nwindows line",
    "\n\n   \n\t\n",
    "I'm sure they'll say it's fine, but DON'T and WE'LL and You'Re",
    "Numbers: 0 12 345 6789 1234567890 3.14159 -42 1e10 0x1F 2026-11-28",
    "The year 1999 and 12345678901234567890 digits",
    "Café naïve coöperate résumé Zürich São Paulo",
    "東京は日本の首都です。北京是中国的首都。",
    "Москва — столица России.",
    "مرحبا بالعالم",
    "Emoji 😀 🎉 👍🏽 🇫🇷 👨‍👩‍👧‍👦 done",
    "😀😀😀",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math 𝑥² + 𝑦² = 𝑧²",
    "<|begin_of_text|>special at start",
    "text with <|end_of_text|> in the middle <|end_of_text|>",
    "<s> sentencepiece specials </s> and <unk>",
    "def f(x):\n    return x ** 2  # square\n",
    "{\"a\": [1, 2, {\"b\": null}]}",
    "a\u00a0non-breaking\u2003em-space\u200bzero-width",
    "ﬁ ligature and Å (A + ring) and Å (precomposed)",
    "!!!??? ... --- *** ###",
    "x" * 300,
    "The quick brown fox jumps over the lazy dog. " * 5,
]


def training_text():
    lines = PROSE.splitlines()
    out = []
    for rep in range(40):
        for i, line in enumerate(lines):
            out.append(line)
            out.append(f"Item {rep * 37 + i}: value {rep * 1009 % 9973} at {rep}:{i:02d}.")
    return out


def train_bytelevel(name, pattern, nfc):
    tok = Tokenizer(models.BPE(ignore_merges=(name == "bytelevel_llama3")))
    if nfc:
        tok.normalizer = normalizers.NFC()
    if pattern is None:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    tok.decoder = decoders.ByteLevel()
    specials = ["<|begin_of_text|>", "<|end_of_text|>"]
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(training_text(), trainer=trainer)
    if pattern is None:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    else:
        bos = tok.token_to_id("<|begin_of_text|>")
        tok.post_processor = processors.TemplateProcessing(
            single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
            special_tokens=[("<|begin_of_text|>", bos)])
    return tok


def train_sentencepiece_bpe():
    # Llama-2 / Mistral layout: "▁" marks spaces, unknown characters fall back to <0xNN> bytes.
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    # Train with words split at "▁" so merges stay inside words, then encode like Llama-2 (no pre-tokenizer).
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    trainer = trainers.BpeTrainer(vocab_size=640, special_tokens=specials, show_progress=False,
                                  limit_alphabet=120)
    tok.train_from_iterator(training_text(), trainer=trainer)
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", bos)])
    # Specials that must never be split, as Llama-2 marks them.
    return tok


def write_tokenizer_goldens(outdir):
    os.makedirs(outdir, exist_ok=True)
    toks = {
        "bytelevel_gpt2": train_bytelevel("bytelevel_gpt2", None, False),
        "bytelevel_llama3": train_bytelevel("bytelevel_llama3", LLAMA3_PATTERN, False),
        "bytelevel_qwen2": train_bytelevel("bytelevel_qwen2", QWEN2_PATTERN, True),
        "sp_bytefallback": train_sentencepiece_bpe(),
    }
    for name, tok in toks.items():
        path = os.path.join(outdir, f"{name}.tokenizer.json")
        tok.save(path)
        tok = Tokenizer.from_file(path)  # encode with exactly what was saved
        cases = []
        for text in HARD_STRINGS:
            ids = tok.encode(text, add_special_tokens=False).ids
            ids_special = tok.encode(text, add_special_tokens=True).ids
            cases.append({"text": text, "ids": ids, "ids_special": ids_special,
                          "decoded": tok.decode(ids, skip_special_tokens=False),
                          "decoded_skip_special": tok.decode(ids, skip_special_tokens=True)})
        with open(os.path.join(outdir, f"{name}.golden.json"), "w") as f:
            json.dump({"tokenizer": f"{name}.tokenizer.json", "tokenizers_version": __import__("tokenizers").__version__,
                       "cases": cases}, f, ensure_ascii=False, indent=1)
        print(f"tokenizer {name}: vocab {tok.get_vocab_size()}, {len(cases)} cases")
    return toks


PROMPT = ("The old lighthouse keeper climbed the stairs at dusk. He counted 112 steps, "
          "wrote the number in his log, and looked out over the water for ships.")


def default_rope(theta):
    return {"rope_type": "default", "rope_theta": theta}


def make_config(cls, rope, **kw):
    """transformers 5 takes rope_parameters; 4.x took rope_theta and rope_scaling."""
    try:
        cfg = cls(**kw, rope_parameters=dict(rope))
    except TypeError:
        legacy = None if rope["rope_type"] == "default" else {k: v for k, v in rope.items() if k != "rope_theta"}
        cfg = cls(**kw, rope_theta=rope["rope_theta"], rope_scaling=legacy)
    return cfg


def make_model(arch, tok_name, toks, outdir, seed):
    import transformers as tf
    tok = toks[tok_name]
    vocab = tok.get_vocab_size()
    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  rms_norm_eps=1e-5, initializer_range=0.25)
    if arch == "llama3":
        bos, eos = tok.token_to_id("<|begin_of_text|>"), tok.token_to_id("<|end_of_text|>")
        rope = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
        cfg = make_config(tf.LlamaConfig, rope, **common, tie_word_embeddings=False, bos_token_id=bos,
                          eos_token_id=eos)
        cls, dtype, shard = tf.LlamaForCausalLM, torch.bfloat16, None
    elif arch == "qwen2":
        bos, eos = tok.token_to_id("<|begin_of_text|>"), tok.token_to_id("<|end_of_text|>")
        cfg = make_config(tf.Qwen2Config, default_rope(1e6), **common, tie_word_embeddings=True,
                          bos_token_id=bos, eos_token_id=eos, use_sliding_window=False)
        cls, dtype, shard = tf.Qwen2ForCausalLM, torch.float16, None
    elif arch == "qwen3":
        bos, eos = tok.token_to_id("<|begin_of_text|>"), tok.token_to_id("<|end_of_text|>")
        c = dict(common)
        cfg = make_config(tf.Qwen3Config, default_rope(1e6), **c, head_dim=32, tie_word_embeddings=True,
                          bos_token_id=bos, eos_token_id=[eos, bos], use_sliding_window=False)
        cls, dtype, shard = tf.Qwen3ForCausalLM, torch.float32, None
    elif arch == "mistral":
        bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
        cfg = make_config(tf.MistralConfig, default_rope(1e6), **common, tie_word_embeddings=False,
                          bos_token_id=bos, eos_token_id=eos, sliding_window=None)
        cls, dtype, shard = tf.MistralForCausalLM, torch.bfloat16, "60KB"
    elif arch in VARIANTS:
        cfg, cls = variant_config(arch, tok, common)
        dtype, shard = torch.float32, None
    else:
        raise ValueError(arch)

    torch.manual_seed(seed)
    model = cls(cfg).eval()
    with torch.no_grad():
        # Give the RMSNorm weights and biases non-trivial values so the golden checks them.
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.5 * torch.randn_like(p))
    mdir = os.path.join(outdir, arch)
    os.makedirs(mdir, exist_ok=True)
    model.to(dtype)
    kw = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(mdir, safe_serialization=True, **kw)
    tok.save(os.path.join(mdir, "tokenizer.json"))

    # Reference computation: the saved checkpoint, float64, eager attention, CPU.
    ref = cls.from_pretrained(mdir, dtype=torch.float64, attn_implementation="eager").eval()
    rope_type = getattr(ref.model.rotary_emb, "rope_type", "?")
    want = "llama3" if arch == "llama3" else VARIANTS.get(arch, "default")
    assert rope_type == want, f"{arch}: rotary embedding type {rope_type}, want {want}"
    ids = tok.encode(PROMPT, add_special_tokens=True).ids
    if arch == "mistral-sliding":
        assert len(ids) > ref.config.sliding_window, "the prompt must pass the window"
    if arch == "rope-dynamic":
        assert len(ids) > ref.config.max_position_embeddings, "the prompt must pass the original context"
    with torch.no_grad():
        logits = ref(torch.tensor([ids])).logits[0]  # [T, V]
        seq, margins = list(ids), []
        if arch in VARIANTS:
            # Decode with a KV cache, as generate() and lukv do: dynamic RoPE's cached keys
            # keep the base of the step that computed them.
            out = ref(torch.tensor([ids]), use_cache=True)
            for _ in range(16):
                top = torch.topk(out.logits[0, -1], 2)
                margins.append(float(top.values[0] - top.values[1]))
                seq.append(int(top.indices[0]))
                out = ref(torch.tensor([[seq[-1]]]), past_key_values=out.past_key_values, use_cache=True)
        else:
            for _ in range(16):
                last = ref(torch.tensor([seq])).logits[0, -1]
                top = torch.topk(last, 2)
                margins.append(float(top.values[0] - top.values[1]))
                seq.append(int(top.indices[0]))
    T = len(ids)
    keep = sorted(set(range(0, T, 4)) | {T - 1})  # every 4th position keeps testdata small
    save_file({"logits": logits[keep].to(torch.float32).contiguous()}, os.path.join(mdir, "golden.safetensors"))
    golden = {"arch": arch, "class": cls.__name__, "tokenizer": tok_name, "seed": seed, "logit_positions": keep,
              "stored_dtype": str(dtype), "prompt": PROMPT, "prompt_ids": ids,
              "greedy_ids": seq[len(ids):], "greedy_min_margin": min(margins), "margins": margins,
              "transformers_version": tf.__version__, "torch_version": torch.__version__}
    with open(os.path.join(mdir, "golden.json"), "w") as f:
        json.dump(golden, f, indent=1)
    return min(margins)


# Config variants and the rotary embedding type transformers must build for each.
VARIANTS = {"rope-linear": "linear", "rope-dynamic": "dynamic", "rope-yarn": "yarn",
            "mistral-sliding": "default", "llama-bias": "default"}
VARIANT_TOKENIZER = {"mistral-sliding": "sp_bytefallback"}  # the others: bytelevel_llama3


def variant_config(name, tok, common):
    """config and model class of a config variant (see the module docstring)."""
    import transformers as tf
    c = dict(common)
    if name == "mistral-sliding":
        bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
        cfg = make_config(tf.MistralConfig, default_rope(1e4), **c, tie_word_embeddings=False,
                          bos_token_id=bos, eos_token_id=eos, sliding_window=16)
        return cfg, tf.MistralForCausalLM
    bos, eos = tok.token_to_id("<|begin_of_text|>"), tok.token_to_id("<|end_of_text|>")
    extra = {}
    if name == "rope-linear":
        rope = {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}
    elif name == "rope-dynamic":
        rope = {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 4.0}
        c["max_position_embeddings"] = 48
    elif name == "rope-yarn":
        rope = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 64}
    elif name == "llama-bias":
        rope, extra = default_rope(10000.0), {"attention_bias": True}
    else:
        raise ValueError(name)
    cfg = make_config(tf.LlamaConfig, rope, **c, **extra, tie_word_embeddings=False, bos_token_id=bos,
                      eos_token_id=eos)
    return cfg, tf.LlamaForCausalLM


def train_tokenizers():
    """The tokenizers the models use, trained as write_tokenizer_goldens does, unsaved."""
    return {"bytelevel_llama3": train_bytelevel("bytelevel_llama3", LLAMA3_PATTERN, False),
            "sp_bytefallback": train_sentencepiece_bpe()}


def make_with_clear_margins(arch, tok_name, toks, outdir):
    # Pick a seed whose greedy path has a clear winner at every step, so float32 vs float64
    # rounding cannot flip the argmax.
    for seed in range(1, 50):
        m = make_model(arch, tok_name, toks, outdir, seed)
        if m > 1e-2:
            break
    print(f"model {arch}: seed {seed}, min greedy margin {m:.4f}")
    print(open(os.path.join(outdir, arch, "config.json")).read())


def golden_for_checkpoint(mdir, outdir):
    """Goldens for an existing checkpoint (lukv's own default model): logits of a needle
    prompt at a few positions and a greedy continuation, computed in float64 on the CPU."""
    import transformers as tf
    tok = Tokenizer.from_file(os.path.join(mdir, "tokenizer.json"))
    ref = tf.AutoModelForCausalLM.from_pretrained(mdir, dtype=torch.float64, attn_implementation="eager").eval()
    hay = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
    prompt = ("Some special magic numbers are hidden within the following text. Make sure to memorize it. "
              "I will quiz you about the numbers afterwards.\n" + hay * 6 +
              "One of the special magic numbers for amber-falcon is: 3141592. " + hay * 6 +
              "\nWhat are all the special magic numbers for amber-falcon mentioned in the provided text?"
              " The special magic numbers for amber-falcon mentioned in the provided text are")
    ids = tok.encode(prompt, add_special_tokens=True).ids
    with torch.no_grad():
        logits = ref(torch.tensor([ids])).logits[0]
        seq, margins = list(ids), []
        for _ in range(12):
            last = ref(torch.tensor([seq])).logits[0, -1]
            top = torch.topk(last, 2)
            margins.append(float(top.values[0] - top.values[1]))
            seq.append(int(top.indices[0]))
    T = len(ids)
    keep = sorted(set(list(range(0, T, 16)) + [T - 1]))
    os.makedirs(outdir, exist_ok=True)
    save_file({"logits": logits[keep].to(torch.float32).contiguous()}, os.path.join(outdir, "golden.safetensors"),
              metadata={"positions": json.dumps(keep)})
    golden = {"checkpoint": os.path.basename(os.path.normpath(mdir)), "prompt": prompt, "prompt_ids": ids,
              "greedy_ids": seq[T:], "greedy_text": tok.decode(seq[T:]), "greedy_min_margin": min(margins),
              "logit_positions": keep, "transformers_version": tf.__version__, "torch_version": torch.__version__}
    with open(os.path.join(outdir, "golden.json"), "w") as f:
        json.dump(golden, f, indent=1)
    print(f"golden for {mdir}: {T} prompt tokens, greedy {golden['greedy_text']!r}, min margin {min(margins):.4f}")


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--checkpoint":
        golden_for_checkpoint(sys.argv[2], sys.argv[3])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--only":
        if len(sys.argv) != 5 or sys.argv[3] != "--out":
            sys.exit("usage: make_goldens.py --only VARIANT[,VARIANT...] --out OUTDIR")
        names = sys.argv[2].split(",")
        for name in names:
            if name not in VARIANTS:
                sys.exit(f"--only: unknown variant {name!r} (known: {', '.join(VARIANTS)})")
        toks = train_tokenizers()
        for name in names:
            make_with_clear_margins(name, VARIANT_TOKENIZER.get(name, "bytelevel_llama3"), toks,
                                    os.path.join(sys.argv[4], "models"))
        return
    toks = write_tokenizer_goldens(os.path.join(OUT, "tokenizers"))
    for arch, tok_name in [("llama3", "bytelevel_llama3"), ("qwen2", "bytelevel_qwen2"),
                           ("qwen3", "bytelevel_qwen2"), ("mistral", "sp_bytefallback")]:
        make_with_clear_margins(arch, tok_name, toks, os.path.join(OUT, "models"))
    for name in VARIANTS:
        make_with_clear_margins(name, VARIANT_TOKENIZER.get(name, "bytelevel_llama3"), toks, os.path.join(OUT, "models"))


if __name__ == "__main__":
    main()
