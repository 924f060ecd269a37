#!/usr/bin/env python3
"""Tests of build_broad.py's split and HTML conversion (standard library only):
python3 scripts/corpus/test_build_broad.py"""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_broad as bb  # noqa: E402


class SplitTest(unittest.TestCase):
    def test_split_is_a_function_of_the_id(self):
        ids = [f"pkg:path/doc{i}.txt" for i in range(20000)]
        splits = [bb.split_of(i) for i in ids]
        self.assertEqual(splits, [bb.split_of(i) for i in ids])
        share = {s: splits.count(s) / len(ids) for s in ("haystack", "heldout", "train")}
        self.assertAlmostEqual(share["haystack"], 0.02, delta=0.004)
        self.assertAlmostEqual(share["heldout"], 0.03, delta=0.005)
        self.assertAlmostEqual(share["train"], 0.95, delta=0.007)


class HTMLTest(unittest.TestCase):
    def convert(self, html):
        p = bb.HTMLText()
        p.feed(html)
        return p.text()

    def test_visible_text_only(self):
        t = self.convert("<html><head><title>T</title><script>var x=1;</script></head><body>"
                         "<div id='banner'><a>Download the ebook</a></div>"
                         "<ul class='docnav'><li class='previous'><a>Prev</a></li></ul>"
                         "<h1>Heading</h1><p>Some   <b>bold</b>\ntext.</p>"
                         "<pre>  indented\n    code</pre><ul><li>item</li></ul></body></html>")
        self.assertNotIn("var x", t)
        self.assertNotIn("ebook", t)
        self.assertNotIn("Prev", t)
        self.assertIn("Heading\n\nSome bold text.", t)
        self.assertIn("  indented\n    code", t)
        self.assertIn("* item", t)
        self.assertNotIn("\n*\n", t)

    def test_clean_text(self):
        self.assertEqual(bb.clean_text("a  \r\nb\n\n\n\n\nc"), "a\nb\n\n\nc\n")


if __name__ == "__main__":
    unittest.main()
