#!/usr/bin/env python3
"""Builds lukv-tiny's prose corpus and key vocabularies from the Debian packages that
scripts/corpus/fetch_sources.sh unpacked under data/raw/.

Standard library only (runs here, Python 3.11, and on the GPU machine). Writes data/corpus/:

  train_prose.txt        one document per line (a Bible book, a commentary book, a psalm's
                         commentary), whitespace collapsed: KJV + MHCC + Treasury of David,
                         minus the held-out documents
  heldout_prose.txt      the held-out documents of the same three sources (perplexity only)
  eval_haystack_devil.txt  The Devil's Dictionary, one entry per line: RESERVED for the
                         evaluation suite's "essay" haystack, never trained on
  words_{train,eval}_{adj,noun}.txt  WordNet 3.0 lemmas split by CRC-32 parity (the key contract)
  manifest.json          counts and sha256 of every file above

The split contract (the evaluation suite relies on it, see models/lukv-tiny/README.md):
  * held-out documents: KJV and MHCC books Ruth, Esther, Jonah, Micah, Galatians, James,
    Jude; Treasury of David psalms whose number is a multiple of 20.
  * words: lowercase a-z lemmas of 3..10 letters from WordNet index.adj / index.noun;
    zlib.crc32(word.encode()) % 2 == 0 -> training, == 1 -> evaluation.

Usage: python3 scripts/corpus/build_corpus.py [DATADIR]   (default data/)
"""
import hashlib
import html
import json
import os
import re
import struct
import sys
import zlib

HELDOUT_BOOKS = {"Ruth", "Esth", "Jonah", "Mic", "Gal", "Jas", "Jude"}
SWORD_MODULES = [
    # (name, package, module path under usr/share/sword/modules, index prefix)
    ("kjv", "sword-text-kjv", "texts/ztext/engKJV2006eb", "b"),
    ("mhcc", "sword-comm-mhcc", "comments/zcom/mhcc", "b"),
    ("tdavid", "sword-comm-tdavid", "comments/zcom/tdavid", "c"),
]
# Entries per testament in the KJV versification that all three modules use.
ENTRIES = {"ot": 24115, "nt": 8246}


def fail(msg):
    sys.exit(f"build_corpus.py: {msg}")


def sword_entries(moddir, prefix, testament):
    """Yields the raw OSIS text of each entry of one testament of a SWORD zText/zCom module.

    Layout: <t>.<p>zs is a list of (offset u32, size u32, uncompressed size u32) blocks into
    <t>.<p>zz, each zlib-compressed; <t>.<p>zv has one (block u32, offset u32, size u16|u32)
    record per verse slot. Linked entries (several verses sharing one text) are yielded once.
    """
    base = os.path.join(moddir, testament)
    paths = [f"{base}.{prefix}z{k}" for k in "szv"]
    if not all(os.path.exists(p) for p in paths):
        return
    bzs, bzz, bzv = (open(p, "rb").read() for p in paths)
    if len(bzs) % 12:
        fail(f"{paths[0]}: size {len(bzs)} is not a multiple of 12")
    blocks = []
    for off, size, _ in struct.iter_unpack("<III", bzs):
        blocks.append(zlib.decompress(bzz[off:off + size]))
    n = ENTRIES[testament]
    if len(bzv) == 10 * n:
        fmt, rec = "<IIH", 10
    elif len(bzv) == 12 * n:
        fmt, rec = "<III", 12
    else:
        fail(f"{paths[2]}: size {len(bzv)} fits neither 10- nor 12-byte records for {n} entries")
    seen = set()
    for i in range(n):
        b, off, size = struct.unpack(fmt, bzv[i * rec:(i + 1) * rec])
        if size == 0 or (b, off) in seen:
            continue
        seen.add((b, off))
        if b >= len(blocks) or off + size > len(blocks[b]):
            fail(f"{paths[2]}: entry {i} points outside block {b}")
        yield blocks[b][off:off + size].decode("utf-8", "replace")


CHAPTER_RE = re.compile(r'<chapter\b[^>]*\bosisID="([^".]+)\.(\d+)"')
DROP_RE = re.compile(r"<(note|title)\b[^>]*?(?<!/)>.*?</\1>", re.S)
TAG_RE = re.compile(r"<[^>]*>")
WS_RE = re.compile(r"\s+")


def clean(osis):
    """OSIS markup -> plain prose: drops notes and headings, strips tags, collapses whitespace."""
    text = DROP_RE.sub(" ", osis)
    text = TAG_RE.sub(" ", text)
    text = html.unescape(text)
    text = WS_RE.sub(" ", text).strip()
    # Tags stripped between a word and its punctuation leave "word ," behind.
    return re.sub(r" ([,.;:!?)])", r"\1", text)


def module_docs(name, moddir, prefix):
    """Returns [(doc_id, book, chapter, text)]: one document per book (per psalm for tdavid)."""
    docs, cur_key, cur = [], None, []
    for testament in ("ot", "nt"):
        for raw in sword_entries(moddir, prefix, testament):
            m = CHAPTER_RE.search(raw)
            if m:
                book, chap = m.group(1), int(m.group(2))
                key = (book, chap) if name == "tdavid" else (book, 0)
                if key != cur_key:
                    if cur_key and cur:
                        docs.append((cur_key, " ".join(cur)))
                    cur_key, cur = key, []
            t = clean(raw)
            if t and cur_key:
                cur.append(t)
    if cur_key and cur:
        docs.append((cur_key, " ".join(cur)))
    return [(f"{name}:{b}.{c}" if c else f"{name}:{b}", b, c, t) for (b, c), t in docs]


def heldout(name, book, chap):
    if name == "tdavid":
        return chap % 20 == 0
    return book in HELDOUT_BOOKS


def devil_entries(raw_dir):
    """The Devil's Dictionary from dictd's devil.dict.dz (gzip): one entry per line."""
    import gzip
    path = os.path.join(raw_dir, "dict-devil/usr/share/dictd/devil.dict.dz")
    text = gzip.open(path, "rt", encoding="utf-8", errors="replace").read()
    start = text.find("PREFACE")
    if start < 0:
        fail(f"{path}: no PREFACE heading, not the expected edition")
    lines = text[start:].split("\n")
    entries, cur = [], []
    for line in lines:
        # A headword line starts an entry: "ABASEMENT, n.  A decent and customary ..."
        if re.match(r"^[A-Z][A-Z' .-]+, [a-z.]+", line) and cur:
            entries.append(WS_RE.sub(" ", " ".join(cur)).strip())
            cur = []
        cur.append(line)
    if cur:
        entries.append(WS_RE.sub(" ", " ".join(cur)).strip())
    return [e for e in entries if len(e) > 20]


def wordnet_words(raw_dir, pos):
    path = os.path.join(raw_dir, f"wordnet-base/usr/share/wordnet/index.{pos}")
    words = set()
    for line in open(path, encoding="latin-1"):
        if line.startswith(" "):
            continue
        w = line.split(" ", 1)[0]
        if re.fullmatch(r"[a-z]{3,10}", w):
            words.add(w)
    return sorted(words)


def main():
    data = sys.argv[1] if len(sys.argv) > 1 else "data"
    raw, out = os.path.join(data, "raw"), os.path.join(data, "corpus")
    if not os.path.isdir(raw):
        fail(f"{raw}: missing; run scripts/corpus/fetch_sources.sh first")
    os.makedirs(out, exist_ok=True)
    train, held, stats = [], [], {}
    for name, pkg, rel, prefix in SWORD_MODULES:
        moddir = os.path.join(raw, pkg, "usr/share/sword/modules", rel)
        docs = module_docs(name, moddir, prefix)
        if not docs:
            fail(f"{moddir}: no documents extracted")
        for doc_id, book, chap, text in docs:
            (held if heldout(name, book, chap) else train).append(text)
        stats[name] = {"docs": len(docs), "chars": sum(len(d[3]) for d in docs),
                       "heldout_docs": sum(heldout(name, d[1], d[2]) for d in docs)}
    files = {
        "train_prose.txt": train,
        "heldout_prose.txt": held,
        "eval_haystack_devil.txt": devil_entries(raw),
    }
    for pos, short in (("adj", "adj"), ("noun", "noun")):
        words = wordnet_words(raw, pos)
        files[f"words_train_{short}.txt"] = [w for w in words if zlib.crc32(w.encode()) % 2 == 0]
        files[f"words_eval_{short}.txt"] = [w for w in words if zlib.crc32(w.encode()) % 2 == 1]
    manifest = {"sources": stats, "files": {}}
    for fname, lines in files.items():
        body = "\n".join(lines) + "\n"
        with open(os.path.join(out, fname), "w", encoding="utf-8") as f:
            f.write(body)
        manifest["files"][fname] = {"lines": len(lines), "chars": len(body),
                                    "sha256": hashlib.sha256(body.encode()).hexdigest()}
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(json.dumps(manifest, indent=1))


if __name__ == "__main__":
    main()
