"""Host-side tests of harness/cover.py (cover letter carry-over)."""
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import cover  # noqa: E402

OLD = """From 0 Mon Sep 17 00:00:00 2001
Subject: [PATCH 0/2] KVM: arm64: Map non-taggable memory NoTagAccess

This series does things.

More text.

A Developer (2):
  old one
  old two
"""
NEW = """From 0 Mon Sep 17 00:00:00 2001
Subject: [PATCH 0/3] *** SUBJECT HERE ***

*** BLURB HERE ***

A Developer (3):
  new one
  new two
  new three
"""


class Merge(unittest.TestCase):
    def test_keeps_text_refreshes_shortlog(self):
        out = cover.merge(OLD, NEW)
        self.assertIn("[PATCH 0/3] KVM: arm64: Map non-taggable memory NoTagAccess", out)
        self.assertIn("This series does things.\n\nMore text.\n\nA Developer (3):", out)
        self.assertIn("new three", out)
        self.assertNotIn("old one", out)
        self.assertNotIn("***", out)

    def test_placeholder_old_is_refused(self):
        with self.assertRaises(ValueError):
            cover.merge(NEW, NEW)


if __name__ == "__main__":
    unittest.main()
