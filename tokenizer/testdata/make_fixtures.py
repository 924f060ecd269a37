# Writes the handmade tokenizer.json fixtures of this folder (run: python3 make_fixtures.py).
# Each has the full byte-level or <0xNN> base alphabet plus a few merges chosen so
# that the expected ids in the Go tests can be worked out by hand.
import json
def bytes_char():
    bs = list(range(ord('!'), ord('~')+1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b); cs.append(256+n); n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}
BC = bytes_char()

def bytelevel_vocab(merges, extra=()):
    vocab = {BC[b]: b for b in range(256)}
    for a, b in merges:
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
    for e in extra:
        vocab[e] = len(vocab)
    return vocab

def added(id, content, special=True, **kw):
    d = {"id": id, "content": content, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": special}
    d.update(kw)
    return d

G = 'Ġ'
# GPT-2 style: ByteLevel pre-tokenizer with the GPT-2 regex.
merges = [("h","e"), (G,"t"), (G+"t","he"), ("l","l"), ("e","ll"), ("h","ell"), ("hell","o"), ("'","s"), (G,G), ("ð","Ł")]
vocab = bytelevel_vocab(merges)
n = len(vocab)
gpt2 = {
  "version": "1.0", "truncation": None, "padding": None,
  "added_tokens": [added(n, "<|endoftext|>"), added(n+1, "<|end")],
  "normalizer": None,
  "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
  "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
  "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
  "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None, "end_of_word_suffix": None,
            "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            "vocab": vocab, "merges": [a + " " + b for a, b in merges]},
}
json.dump(gpt2, open("gpt2_tiny.tokenizer.json", "w"), ensure_ascii=False, indent=1)

# Llama-3 style: Split(Llama-3 regex) + ByteLevel(use_regex false), ignore_merges, BOS template, merges as pairs.
LLAMA3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
merges = [("a","b"), (G,"a"), ("1","2"), ("12","3"), ("Ċ","Ċ")]
vocab = bytelevel_vocab(merges, extra=[G+"abc"])
n = len(vocab)
llama3 = {
  "version": "1.0", "truncation": None, "padding": None,
  "added_tokens": [added(n, "<|begin_of_text|>"), added(n+1, "<|eot_id|>"), added(n+2, "<|eot|>"), added(n+3, "[tool]", special=False)],
  "normalizer": None,
  "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
      {"type": "Split", "pattern": {"Regex": LLAMA3}, "behavior": "Isolated", "invert": False},
      {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
  "post_processor": {"type": "Sequence", "processors": [
      {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
      {"type": "TemplateProcessing",
       "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
       "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
       "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [n], "tokens": ["<|begin_of_text|>"]}}}]},
  "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
  "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None, "end_of_word_suffix": None,
            "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
            "vocab": vocab, "merges": [[a, b] for a, b in merges]},
}
json.dump(llama3, open("llama3_tiny.tokenizer.json", "w"), ensure_ascii=False, indent=1)

# SentencePiece style: Prepend + Replace normalizer, no pre-tokenizer, byte fallback, unk, Replace/ByteFallback/Fuse/Strip decoder.
M = '▁'
vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
for b in range(256):
    vocab["<0x%02X>" % b] = len(vocab)
for t in [M, "a", "b", "c", "x", "y"]:
    vocab[t] = len(vocab)
merges = [("a","b"), (M,"a"), (M+"a","b"), (M,"x"), ("ab","c"), (M, "ab"), (M, M)]
for a, b in merges:
    if a + b not in vocab:
        vocab[a + b] = len(vocab)
n = len(vocab)
sp = {
  "version": "1.0", "truncation": None, "padding": None,
  "added_tokens": [added(0, "<unk>"), added(1, "<s>"), added(2, "</s>"), added(n, "xyz", special=False, normalized=True)],
  "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": M}, {"type": "Replace", "pattern": {"String": " "}, "content": M}]},
  "pre_tokenizer": None,
  "post_processor": {"type": "TemplateProcessing",
       "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
       "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
       "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
  "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": M}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
  "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None, "end_of_word_suffix": None,
            "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
            "vocab": vocab, "merges": [[a, b] for a, b in merges]},
}
json.dump(sp, open("sp_tiny.tokenizer.json", "w"), ensure_ascii=False, indent=1)

# Metaspace pre-tokenizer + Metaspace decoder, added tokens with lstrip/rstrip/single_word.
ms = json.loads(json.dumps(sp))
ms["normalizer"] = None
ms["pre_tokenizer"] = {"type": "Metaspace", "replacement": M, "prepend_scheme": "first", "split": True}
ms["decoder"] = {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Metaspace", "replacement": M, "prepend_scheme": "first", "split": True}]}
ms["added_tokens"] = [added(0, "<unk>"), added(1, "<s>"), added(2, "</s>"),
    added(n, "<L>", lstrip=True), added(n+1, "<R>", rstrip=True), added(n+2, "<W>", single_word=True), added(n+3, "<LR>", lstrip=True, rstrip=True)]
json.dump(ms, open("metaspace_tiny.tokenizer.json", "w"), ensure_ascii=False, indent=1)
