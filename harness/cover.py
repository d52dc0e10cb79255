#!/usr/bin/env python3
"""Carry a hand-written cover letter over to a freshly generated one.

usage: cover.py OLD NEW

OLD is the series' current 0000-cover-letter.patch, NEW the one that
git format-patch just wrote with placeholder subject and blurb. The subject
and the blurb of OLD replace the placeholders in NEW; NEW's shortlog and
diffstat (which follow the blurb) are kept, so they match the patches.
"""
import re
import sys

SUBJ_PH = "*** SUBJECT HERE ***"
BLURB_PH = "*** BLURB HERE ***"


def split(text):
    """Return (subject, blurb) of a cover letter."""
    m = re.search(r"^Subject: \[[^]]*\] (.*)$", text, re.M)
    if not m:
        raise ValueError("no Subject: line")
    subject = m.group(1)
    body = text.split("\n\n", 1)[1]
    # The blurb ends where git's shortlog starts: "Name (N):" at column 0.
    end = re.search(r"^\S.* \(\d+\):$", body, re.M)
    blurb = body[: end.start()] if end else body
    return subject, blurb.rstrip("\n") + "\n\n"


def merge(old, new):
    subject, blurb = split(old)
    if SUBJ_PH in subject or BLURB_PH in blurb:
        raise ValueError("old cover letter still has placeholders")
    if SUBJ_PH not in new or BLURB_PH not in new:
        raise ValueError("new cover letter has no placeholders to fill")
    new = new.replace(SUBJ_PH, subject, 1)
    head, body = new.split("\n\n", 1)
    body = body.replace(BLURB_PH + "\n\n", blurb, 1)
    return head + "\n\n" + body


def main(argv):
    if len(argv) != 3:
        sys.stderr.write(__doc__)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        old = f.read()
    with open(argv[2], encoding="utf-8") as f:
        new = f.read()
    try:
        out = merge(old, new)
    except ValueError as e:
        sys.stderr.write(f"cover.py: {argv[1]}: {e}\n")
        return 1
    with open(argv[2], "w", encoding="utf-8") as f:
        f.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
