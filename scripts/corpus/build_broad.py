#!/usr/bin/env python3
"""Builds the broad training corpus (technical prose, reference manuals, code) for lukv's next
default model from Debian packages, reproducibly from package names.

Runs on the development machine (Debian 12; apt reaches deb.debian.org). Nothing is installed:
each package in PACKAGES is fetched with `apt-get download`, unpacked with `dpkg -x`, and the
files its rule selects are converted to plain text with tools Debian ships (groff, as man(1)
runs it) for manual pages, `pod2text` for Perl's POD, Python's html.parser for HTML; reStructuredText and
source code are kept as they are). Standard library only.

One document = one source file. Its split is a function of its id ("package:path inside the
package") alone, so adding a package never moves another package's documents:

    bucket = int(sha256(id)[:8], 16) % 1000
    bucket <  20  -> haystack  RESERVED: evaluation filler only, never trained on (2 %)
    bucket <  50  -> heldout   perplexity only (3 %)
    otherwise     -> train

The public-domain literature of lukv-tiny (scripts/corpus/build_corpus.py: KJV, Matthew Henry,
Spurgeon; Bierce's Devil's Dictionary reserved) keeps its own split and is copied in when
data/corpus/ exists: train_prose.txt -> train, heldout_prose.txt -> heldout,
eval_haystack_devil.txt -> haystack.

Writes DATADIR/broad/ (git-ignored):
  train.jsonl.gz, heldout.jsonl.gz, haystack.jsonl.gz
      one JSON object a line: {"id", "src", "kind", "text"}; kind is prose | reference | code;
      gzip with mtime 0, documents sorted by id, so equal inputs give equal bytes
  documents.tsv   id, split, kind, bytes, sha256 of the text: one line per document
  manifest.json   per package: version, sha256 of the .deb, licences (DEP-5 "License:" names
                  of /usr/share/doc/*/copyright, and that file's sha256), files converted,
                  documents and bytes per split; per output file: bytes and sha256
The committed copy of manifest.json is scripts/corpus/broad-manifest.json.

Usage: python3 scripts/corpus/build_broad.py [--data DATADIR] [--jobs N] [--skip-download]
"""
import argparse
import concurrent.futures
import fnmatch
import gzip
import hashlib
import html.parser
import io
import json
import os
import re
import subprocess
import sys
import time

# package -> (kind, rules, licence summary). A rule is (glob under the unpacked package,
# converter). Globs use fnmatch against the path relative to the package root ('*' also
# crosses '/'). EXCLUDE drops files matched by any rule.
PACKAGES = {
    "linux-doc-6.1": ("reference", [("usr/share/doc/linux-doc-6.1/Documentation/*.rst.gz", "text")],
                      "GPL-2"),
    "python3.11-doc": ("reference", [("usr/share/doc/python3.11/html/_sources/*.rst.txt", "text")],
                       "PSF-2.0"),
    "perl-doc": ("reference", [("usr/share/perl/*/pod/*.pod", "pod")], "GPL-1+ or Artistic"),
    "debian-reference-en": ("reference", [("usr/share/debian-reference/*.en.html", "html")], "GPL-2+"),
    "debian-handbook": ("reference", [("usr/share/doc/debian-handbook/html/en-US/*.html", "html")],
                        "GPL-2.0+ or CC-BY-SA-3.0"),
    "manpages": ("reference", [("usr/share/man/man*/*.gz", "man")], "Linux man-pages licences"),
    "manpages-dev": ("reference", [("usr/share/man/man*/*.gz", "man")], "Linux man-pages licences"),
    "tcl8.6-doc": ("reference", [("usr/share/man/man*/*.gz", "man")], "Tcl (BSD-style)"),
    "sqlite3-doc": ("reference", [("usr/share/doc/sqlite3/*.html", "html")], "public-domain"),
    "gawk-doc": ("reference", [("usr/share/doc/gawk-doc/gawk-html/*.html", "html")], "GFDL-1.3+"),
    "make-doc": ("reference", [("usr/share/doc/make-doc/*.html", "html")], "GFDL-1.2+"),
    "bash-doc": ("reference", [("usr/share/doc/bash*/*.html", "html")], "GPL-3+"),
    "golang-1.19-src": ("code", [("usr/share/go-1.19/src/*.go", "text")], "BSD-3-clause (Go)"),
    "python3.11-examples": ("code", [("usr/share/doc/python3.11/examples/*.py", "text")], "PSF-2.0"),
}
EXCLUDE = [
    "*/testdata/*", "*/vendor/*", "*_test.go",        # test fixtures, vendored copies
    "*/_sources/whatsnew/changelog.rst.txt",          # a 1.5 MB list of issue numbers
    "*/html/genindex*", "*/html/search.html",          # generated indexes
]
MAX_DOC_BYTES = 400_000  # larger files are tables or generated code (e.g. unicode tables)
MIN_DOC_BYTES = 200
GENERATED_RE = re.compile(r"^// Code generated .* DO NOT EDIT\.$", re.M)
HAYSTACK_BUCKETS, HELDOUT_BUCKETS = 20, 50


def fail(msg):
    sys.exit(f"build_broad.py: {msg}")


def split_of(doc_id):
    b = int(hashlib.sha256(doc_id.encode()).hexdigest()[:8], 16) % 1000
    if b < HAYSTACK_BUCKETS:
        return "haystack"
    return "heldout" if b < HELDOUT_BUCKETS else "train"


class HTMLText(html.parser.HTMLParser):
    """Visible text of an HTML page: block elements become line breaks, script/style/nav and
    headers/footers of the page chrome are dropped, <pre> keeps its layout."""
    BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "dt", "dd",
             "table", "ul", "ol", "dl", "blockquote", "section", "hr", "title"}
    SKIP = {"script", "style", "nav", "head", "footer"}
    # Page chrome of Sphinx, DocBook and texinfo output: navigation bars, banners, sidebars.
    CHROME = re.compile(r"\b(navheader|navfooter|docnav|banner|related|sphinxsidebar|footer|header|nav-panel)\b")

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out, self.skip, self.pre = [], 0, 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        chrome = (a.get("class") or "") + " " + (a.get("id") or "")
        if tag in self.SKIP or (tag in ("div", "ul") and self.CHROME.search(chrome)):
            self.skip += 1
            self._skipdepth = getattr(self, "_skipdepth", []) + [tag]
            return
        if getattr(self, "_skipdepth", None) and tag == self._skipdepth[-1]:
            self._skipdepth.append(tag)
            self.skip += 1
            return
        if tag == "pre":
            self.pre += 1
        if tag in self.BLOCK:
            self.out.append("\n")
        if tag == "li":
            self.out.append("* ")

    def handle_endtag(self, tag):
        if getattr(self, "_skipdepth", None) and tag == self._skipdepth[-1]:
            self._skipdepth.pop()
            self.skip -= 1
            return
        if tag == "pre":
            self.pre = max(0, self.pre - 1)
        if tag in self.BLOCK:
            self.out.append("\n")

    def handle_data(self, data):
        if self.skip:
            return
        if not self.pre:
            data = re.sub(r"\s+", " ", data)
            if not self.out or self.out[-1].endswith("\n"):
                data = data.lstrip(" ")  # no indent from collapsed whitespace; <pre> keeps its own
        self.out.append(data)

    def text(self):
        # A list item whose text was chrome leaves a bare bullet behind.
        lines = [ln.rstrip() for ln in "".join(self.out).split("\n") if ln.strip() != "*"]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(ln if ln.strip() else "" for ln in lines)).strip("\n")


def read_bytes(path):
    with open(path, "rb") as f:
        b = f.read()
    return gzip.decompress(b) if path.endswith(".gz") else b


def convert(path, conv):
    """Returns (text, error)."""
    if conv == "text":
        return read_bytes(path).decode("utf-8", "replace"), None
    if conv == "html":
        p = HTMLText()
        p.feed(read_bytes(path).decode("utf-8", "replace"))
        return p.text(), None
    if conv == "man":
        src = read_bytes(path)
        if re.fullmatch(rb"\s*\.so [^\n]+\s*", src):
            return None, "alias"  # a .so page only points at another page
        # groff as man(1) runs it (tbl preprocessor, man macros, 80 columns), without
        # hyphenation (HY=0), so words stay whole; -P-cbou leaves out
        # the overstrike bold/underline of grotty, so the output is plain text.
        r = subprocess.run(["groff", "-t", "-man", "-Tutf8", "-P-cbou", "-rLL=80n", "-rcR=1",
                            "-rHY=0"],
                           input=src, capture_output=True, env=dict(os.environ, LC_ALL="C.UTF-8"))
        if r.returncode != 0 or not r.stdout.strip():
            return None, f"groff exit {r.returncode}: {r.stderr.decode(errors='replace')[:200]}"
        return r.stdout.decode("utf-8", "replace"), None
    if conv == "pod":
        r = subprocess.run(["pod2text", "-w", "80", path], capture_output=True)
        if r.returncode != 0:
            return None, f"pod2text exit {r.returncode}: {r.stderr.decode(errors='replace')[:200]}"
        return r.stdout.decode("utf-8", "replace"), None
    fail(f"unknown converter {conv!r}")


def clean_text(t):
    t = t.replace("\r\n", "\n").replace("\x00", "")
    t = re.sub(r"[ \t]+\n", "\n", t)
    return re.sub(r"\n{4,}", "\n\n\n", t).strip() + "\n"


def select(pkg, root, rules):
    out = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            full = os.path.join(dirpath, f)
            rel = os.path.relpath(full, root)
            if any(fnmatch.fnmatch(rel, x) for x in EXCLUDE) or os.path.islink(full):
                continue
            for glob, conv in rules:
                if fnmatch.fnmatch(rel, glob):
                    out.append((rel, conv))
                    break
    return sorted(out)


def licences(root):
    for dirpath, _, files in os.walk(os.path.join(root, "usr/share/doc")):
        if "copyright" in files:
            p = os.path.join(dirpath, "copyright")
            body = read_bytes(p)
            names = sorted({m.strip() for m in re.findall(rb"^License: *([^\n]{1,60})$", body, re.M)
                            for m in [m.decode("utf-8", "replace")] if len(m.split()) <= 6})
            return {"dep5_licenses": names, "copyright_sha256": hashlib.sha256(body).hexdigest(),
                    "copyright_file": os.path.relpath(p, root)}
    return {"dep5_licenses": [], "copyright_sha256": None, "copyright_file": None}


def deb_version(deb):
    r = subprocess.run(["dpkg-deb", "-f", deb, "Version"], capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"{deb}: dpkg-deb -f failed: {r.stderr.strip()}")
    return r.stdout.strip()


def sha256_file(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def literature(data):
    """lukv-tiny's public-domain prose (build_corpus.py output), with its own split."""
    corpus = os.path.join(data, "corpus")
    files = {"train_prose.txt": "train", "heldout_prose.txt": "heldout", "eval_haystack_devil.txt": "haystack"}
    docs = []
    for f, split in files.items():
        p = os.path.join(corpus, f)
        if not os.path.exists(p):
            return None
        for i, line in enumerate(open(p, encoding="utf-8")):
            if line.strip():
                docs.append({"id": f"literature:{f}#{i:05d}", "src": "literature", "kind": "prose",
                             "text": line.strip() + "\n", "split": split})
    return docs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--skip-download", action="store_true", help="reuse DATA/debs-broad/*.deb")
    args = ap.parse_args()
    t0 = time.time()
    # The unpacked packages hold Go sources (golang-1.19-src); a leading "_" keeps them out of
    # the repository's `go build ./...` and `go vet ./...`.
    debs, raw, out = (os.path.join(args.data, d) for d in ("debs-broad", "_raw-broad", "broad"))
    os.makedirs(debs, exist_ok=True)
    os.makedirs(out, exist_ok=True)
    if not args.skip_download:
        r = subprocess.run(["apt-get", "download", *PACKAGES], cwd=debs)
        if r.returncode != 0:
            fail(f"apt-get download {' '.join(PACKAGES)} failed (exit {r.returncode})")
    docs, manifest = [], {"packages": {}, "split_rule": "int(sha256(id)[:8],16) % 1000: <20 haystack, <50 heldout, else train",
                          "max_doc_bytes": MAX_DOC_BYTES, "min_doc_bytes": MIN_DOC_BYTES}
    for pkg, (kind, rules, lic) in PACKAGES.items():
        cands = sorted(f for f in os.listdir(debs) if f.startswith(pkg + "_") and f.endswith(".deb"))
        if not cands:
            fail(f"{debs}: no {pkg}_*.deb (run without --skip-download)")
        deb = os.path.join(debs, cands[-1])
        root = os.path.join(raw, pkg)
        subprocess.run(["rm", "-rf", root], check=True)
        os.makedirs(root)
        subprocess.run(["dpkg", "-x", deb, root], check=True)
        files = select(pkg, root, rules)
        if not files:
            fail(f"{pkg}: no file matched {rules}")
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as ex:
            results = list(ex.map(lambda fc: convert(os.path.join(root, fc[0]), fc[1]), files))
        info = {"version": deb_version(deb), "deb": cands[-1], "deb_sha256": sha256_file(deb),
                "licence": lic, **licences(root), "kind": kind, "files_matched": len(files),
                "skipped": {}, "splits": {}}
        for (rel, conv), (text, err) in zip(files, results):
            why = None
            if err:
                why = "alias" if err == "alias" else "convert_error"
            else:
                text = clean_text(text)
                n = len(text.encode())
                if n > MAX_DOC_BYTES:
                    why = "too_large"
                elif n < MIN_DOC_BYTES:
                    why = "too_small"
                elif kind == "code" and GENERATED_RE.search(text[:2000]):
                    why = "generated"
            if why:
                info["skipped"][why] = info["skipped"].get(why, 0) + 1
                continue
            doc_id = f"{pkg}:{rel}"
            docs.append({"id": doc_id, "src": pkg, "kind": kind, "text": text, "split": split_of(doc_id)})
        manifest["packages"][pkg] = info
        print(f"{pkg} {info['version']}: {len(files)} files, skipped {info['skipped']} ({time.time() - t0:.0f}s)", flush=True)
    lit = literature(args.data)
    if lit is None:
        print("note: data/corpus missing (scripts/corpus/fetch_sources.sh + build_corpus.py): no literature", flush=True)
    else:
        docs += lit
        manifest["packages"]["literature"] = {"from": "data/corpus (scripts/corpus/build_corpus.py, its manifest.json)",
                                              "licence": "public-domain", "kind": "prose", "splits": {}}
    docs.sort(key=lambda d: d["id"])
    for d in docs:
        s = manifest["packages"][d["src"]]["splits"].setdefault(d["split"], {"docs": 0, "bytes": 0})
        s["docs"] += 1
        s["bytes"] += len(d["text"].encode())
    manifest["outputs"] = {}
    tsv = io.StringIO()
    for split in ("train", "heldout", "haystack"):
        fname = f"{split}.jsonl.gz"
        path = os.path.join(out, fname)
        sel = [d for d in docs if d["split"] == split]
        with open(path, "wb") as f:
            with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=6) as g:
                for d in sel:
                    g.write((json.dumps({k: d[k] for k in ("id", "src", "kind", "text")}, ensure_ascii=False) + "\n").encode())
        for d in sel:
            tsv.write(f"{d['id']}\t{split}\t{d['kind']}\t{len(d['text'].encode())}\t{hashlib.sha256(d['text'].encode()).hexdigest()}\n")
        manifest["outputs"][fname] = {"docs": len(sel), "text_bytes": sum(len(d["text"].encode()) for d in sel),
                                      "file_bytes": os.path.getsize(path), "sha256": sha256_file(path)}
    with open(os.path.join(out, "documents.tsv"), "w", encoding="utf-8") as f:
        f.write(tsv.getvalue())
    manifest["outputs"]["documents.tsv"] = {"docs": len(docs), "sha256": sha256_file(os.path.join(out, "documents.tsv"))}
    manifest["build_seconds"] = round(time.time() - t0)
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    print(json.dumps(manifest["outputs"], indent=1))


if __name__ == "__main__":
    main()
