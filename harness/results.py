#!/usr/bin/env python3
"""Judge one QEMU boot of the test initramfs from its console log.

usage: results.py CONSOLE_LOG PROFILE LIST_FILE [--kunit] [--allow-skip A,B]
                  [--known-failures FILE] [--results FILE] [--ktree DIR]

Reads the "NTA: " TAP lines that harness/guest/init prints, the kernel log
it dumps between NTA-DMESG-BEGIN/END and, with --kunit, the KTAP of the
boot-time KUnit run (parsed by the tree's own kunit.py). Prints one verdict
line per check and appends "pass|fail NAME: DETAIL" lines to --results.
Exit status: 0 if every check passed, 1 otherwise.
"""
import argparse
import os
import re
import subprocess
import sys

TAP = re.compile(r"^NTA: (ok|not ok) (\d+) (\S+)(?: # (.*))?$")
PLAN = re.compile(r"^NTA: 1\.\.(\d+)$")
# Kernel log lines that mean the run is not clean, whatever the tests said.
SPLATS = re.compile(
    r"(WARNING: |BUG: |BUG |Oops|Kernel panic|Internal error:|"
    r"possible circular locking|possible recursive locking|"
    r"inconsistent lock state|suspicious RCU usage|"
    r"INFO: task .* blocked|KASAN|UBSAN|kernel BUG at|"
    r"lockdep: |DEBUG_LOCKS_WARN_ON|refcount_t: )"
)
# Harmless lines that match the above words.
SPLAT_OK = re.compile(r"(Kernel command line|NTA: #)")


def strip_ts(line):
    return re.sub(r"^\[\s*\d+\.\d+\]\s?", "", line)


def expected_tests(list_file, profile):
    """Names the profile must run, in list order."""
    names = []
    with open(list_file, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].split()
            if len(line) < 4:
                continue
            name, _tmo, profs = line[:3]
            if profs == "all" or profile in profs.split(","):
                names.append(name)
    return names


def known_failures(path):
    """{name: reason} of the tests that fail on the unpatched base."""
    out = {}
    if not path:
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                name, _, reason = line.strip().partition(" ")
                out[name] = reason
    return out


def parse_console(text):
    """Return (tap results {name: (ok, directive)}, plan, dmesg or None)."""
    tap, plan = {}, None
    lines = text.splitlines()
    for line in lines:
        line = line.rstrip("\r")
        m = TAP.match(line)
        if m:
            tap[m.group(3)] = (m.group(1) == "ok", m.group(4) or "")
            continue
        m = PLAN.match(line)
        if m:
            plan = int(m.group(1))
    dmesg = None
    if "NTA-DMESG-BEGIN" in text and "NTA-DMESG-END" in text:
        dmesg = text.split("NTA-DMESG-BEGIN", 1)[1].split("NTA-DMESG-END", 1)[0]
    return tap, plan, dmesg


def splats(log):
    out = []
    for line in log.splitlines():
        line = strip_ts(line.rstrip("\r"))
        if SPLATS.search(line) and not SPLAT_OK.search(line):
            out.append(line)
    return out


def kunit_verdict(dmesg, ktree):
    """Run kunit.py parse over the boot log: (ok, summary line)."""
    if "KTAP version" not in dmesg and "TAP version" not in dmesg:
        return False, "no KUnit output in the kernel log (did KUnit run?)"
    kunit = os.path.join(ktree, "tools/testing/kunit/kunit.py")
    proc = subprocess.run(
        [sys.executable, kunit, "parse"],
        input=dmesg,
        capture_output=True,
        text=True,
        check=False,
    )
    text = proc.stdout + proc.stderr
    summary = [ln for ln in text.splitlines() if "Testing complete" in ln]
    m = re.search(r"Ran (\d+) tests", text)
    ran = int(m.group(1)) if m else 0
    detail = re.sub(r"\x1b\[[0-9;]*m", "", summary[-1]).strip() if summary else text[-300:]
    detail = re.sub(r"^\[[0-9:]+\] ", "", detail)
    return proc.returncode == 0 and ran > 0, detail


def judge(text, profile, expected, allow_skip=(), kunit=False, ktree=None, known=None):
    """Return a list of (ok, name, detail) checks for one boot."""
    checks = []
    known = known or {}
    tap, plan, dmesg = parse_console(text)
    for name in expected:
        if name not in tap:
            checks.append((False, name, "never ran"))
            continue
        ok, directive = tap[name]
        if name in known:
            if ok:
                checks.append((False, name, "passes now: remove it from harness/known-failures"))
            else:
                checks.append((True, name, f"known failure ({directive}): {known[name]}"))
        elif ok and directive.startswith("SKIP") and name not in allow_skip:
            checks.append((False, name, "SKIPPED, but it is required: " + directive))
        else:
            checks.append((ok, name, directive))
    for name in sorted(set(tap) - set(expected)):
        checks.append((False, name, "ran but is not in the list for this profile"))
    if dmesg is None:
        tail = " | ".join(text.strip().splitlines()[-5:])
        checks.append((False, "boot", "guest did not finish (timeout or crash): " + tail))
        log = text
    else:
        if plan is None:
            checks.append((False, "boot", "no TAP plan line from the guest"))
        log = dmesg
    bad = splats(log)
    checks.append((not bad, "kernel-log-clean", "; ".join(bad[:5]) if bad else "no WARN/BUG/lockdep"))
    if kunit:
        ok, detail = kunit_verdict(log, ktree) if dmesg is not None else (False, "no kernel log")
        checks.append((ok, "kunit", detail))
    return [(ok, f"{profile}/{name}", detail) for ok, name, detail in checks]


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("console")
    ap.add_argument("profile")
    ap.add_argument("list_file")
    ap.add_argument("--kunit", action="store_true")
    ap.add_argument("--allow-skip", default="")
    ap.add_argument("--known-failures")
    ap.add_argument("--results")
    ap.add_argument("--ktree", default=".")
    args = ap.parse_args(argv)
    with open(args.console, encoding="utf-8", errors="replace") as f:
        text = f.read()
    checks = judge(
        text,
        args.profile,
        expected_tests(args.list_file, args.profile),
        [s for s in args.allow_skip.split(",") if s],
        args.kunit,
        args.ktree,
        known_failures(args.known_failures),
    )
    lines = [f"{'pass' if ok else 'fail'} {name}: {detail}" for ok, name, detail in checks]
    print("\n".join(lines))
    if args.results:
        with open(args.results, "a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    return 0 if all(ok for ok, _, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
