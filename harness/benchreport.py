#!/usr/bin/env python3
"""Turn nta-bench's CSV into tables (Markdown) and a plot (PNG).

usage: benchreport.py RAW_CSV OUT_DIR [--conditions FILE]

RAW_CSV has the rows nta-bench prints, without their "csv," prefix:
question,case,param,rep,metric,value. Writes OUT_DIR/tables.md (also
printed) and OUT_DIR/bench.png (when matplotlib is there; the build root
has it). Every cell is the median over the repetitions with the spread
(min-max) after it; ratios are of medians. The start-up section states,
computed, whether reading a block-mapped NoTagAccess image (map-2m) meets
the target against the THP-backed copy (TARGET_MIB, TARGET_RATIO).
"""
import argparse
import csv
import os
import statistics
import sys

FAULT_CASES = ["nta-file", "tagged-anon", "file-mte-off", "nta-file-2m", "tagged-hugetlb",
               "hugetlb-mte-off"]
# copy: into THP-backed anonymous memory; map: the file NoTagAccess in 4 KiB
# pages (ramfs); map-2m: the file NoTagAccess in 2 MiB blocks (--huge-dir).
STARTUP_MODES = ["copy", "map", "map-2m"]
TAG_CASES = ["exit-make-taggable", "exit-make-taggable-2m", "sea"]
# nta-vm's layouts of the guest's kernel image.
VM_LAYOUTS = ["copy", "map"]
# The goal for block-mapped NoTagAccess images: reading all of a TARGET_MIB
# image costs at most TARGET_RATIO times reading the THP-backed copy.
TARGET_MIB = 256
TARGET_RATIO = 1.2


def load(path):
    """The rows of RAW_CSV as dicts, values as floats; header rows skipped."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for r in csv.reader(f):
            if not r or r[0] == "question":
                continue
            if len(r) != 6:
                raise ValueError(f"{path}: malformed row {r!r}")
            q, case, param, rep, metric, value = r
            rows.append(
                {"q": q, "case": case, "param": int(param), "rep": int(rep),
                 "metric": metric, "value": float(value)}
            )
    if not rows:
        raise ValueError(f"{path}: no measurements")
    return rows


def summarise(rows):
    """{(q, case, param, metric): (median, min, max, n)}"""
    groups = {}
    for r in rows:
        groups.setdefault((r["q"], r["case"], r["param"], r["metric"]), []).append(r["value"])
    return {k: (statistics.median(v), min(v), max(v), len(v)) for k, v in groups.items()}


def cell(s, key, digits=0):
    """'median (min-max)' of one point, or 'n/a'."""
    if key not in s:
        return "n/a"
    med, lo, hi, n = s[key]
    fmt = f"{{:.{digits}f}}"
    if n == 1 or lo == hi:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(lo)}-{fmt.format(hi)})"


def ratio(s, a, b):
    if a not in s or b not in s or s[b][0] == 0:
        return "n/a"
    return f"{s[a][0] / s[b][0]:.2f}"


def params(s, q):
    return sorted({k[2] for k in s if k[0] == q})


def host_mib(s, mode, d):
    """Host memory of two guests given a d-MiB image: its page cache (there
    either way) plus the anonymous memory they added; None if not measured."""
    m = s.get(("startup", mode, d, "anon_mib"))
    return None if m is None else d + m[0]


FAULT_RATIOS = [("nta-file", "file-mte-off"), ("nta-file", "tagged-anon"),
                ("nta-file-2m", "tagged-hugetlb")]


def fault_table(s):
    out = ["### 1. Stage-2 fault-in: ns per page (4 KiB stride)", "",
           "| pages | " + " | ".join(FAULT_CASES) + " | "
           + " | ".join(f"{a} / {b}" for a, b in FAULT_RATIOS) + " |",
           "|---:|" + "---:|" * (len(FAULT_CASES) + len(FAULT_RATIOS))]
    for n in params(s, "fault"):
        k = {c: ("fault", c, n, "ns_per_page") for c in FAULT_CASES}
        out.append(f"| {n} | " + " | ".join(cell(s, k[c]) for c in FAULT_CASES) + " | "
                   + " | ".join(ratio(s, k[a], k[b]) for a, b in FAULT_RATIOS) + " |")
    out += ["", "nta-file-2m: a NoTagAccess file that the host maps with PMDs (large "
            "folios; nta-bench --huge-dir), so KVM maps it with 2 MiB stage-2 blocks "
            "like the hugetlb cases."]
    return out


def target(s):
    """The sentence on the goal for block-mapped images: the ratio of
    reading all of a TARGET_MIB image mapped NoTagAccess in 2 MiB blocks
    (map-2m) to reading the THP-backed copy, against TARGET_RATIO."""
    goal = (f"Target: reading a {TARGET_MIB} MiB NoTagAccess-mapped image costs at most "
            f"{TARGET_RATIO:g}x the THP-backed copy.")
    copy = s.get(("startup", "copy", TARGET_MIB, "touch_ms"))
    m2m = s.get(("startup", "map-2m", TARGET_MIB, "touch_ms"))
    if copy is None or m2m is None or copy[0] == 0:
        return (f"{goal} Not measured: no {TARGET_MIB} MiB point of reading it all with "
                "both copy and map-2m.")
    r = m2m[0] / copy[0]
    verdict = "met" if r <= TARGET_RATIO else "not met"
    text = (f"{goal} Block-mapped (map-2m, 2 MiB NoTagAccess): {m2m[0]:.1f} ms against "
            f"{copy[0]:.1f} ms, {r:.2f}x: {verdict}.")
    m4k = s.get(("startup", "map", TARGET_MIB, "touch_ms"))
    if m4k is not None:
        text += f" (map, 4 KiB NoTagAccess pages: {m4k[0] / copy[0]:.2f}x.)"
    return text


def startup_table(s):
    ds = params(s, "startup")
    out = ["### 2. Start-up with a D-byte image, two guests", "",
           "| image MiB | first insn, copy (ms) | first insn, map (ms) "
           "| first insn, map-2m (ms) | copy / map | copy / map-2m "
           "| host MiB, copy | host MiB, map | host MiB, map-2m "
           "| saved MiB, map | saved MiB, map-2m |",
           "|---:|" + "---:|" * 10]
    for d in ds:
        def k(mode, metric):
            return ("startup", mode, d, metric)
        mem = {m: host_mib(s, m, d) for m in STARTUP_MODES}
        memcell = {m: "n/a" if mem[m] is None else f"{mem[m]:.0f}" for m in STARTUP_MODES}
        saved = {m: "n/a" if None in (mem["copy"], mem[m]) else f"{mem['copy'] - mem[m]:.0f}"
                 for m in ("map", "map-2m")}
        out.append(
            f"| {d} | "
            + " | ".join(cell(s, k(m, "first_insn_ms"), 1) for m in STARTUP_MODES) + " | "
            + " | ".join(ratio(s, k("copy", "first_insn_ms"), k(m, "first_insn_ms"))
                         for m in ("map", "map-2m")) + " | "
            + " | ".join(memcell[m] for m in STARTUP_MODES) + " | "
            + f"{saved['map']} | {saved['map-2m']} |")
    out += ["", "Reading it all: the guest reads every page of the image once; copy is "
            "THP-backed anonymous memory (2 MiB stage-2 blocks), map the file NoTagAccess "
            "in 4 KiB pages, map-2m a file the host maps with PMDs, NoTagAccess in 2 MiB "
            "blocks.", "",
            "| image MiB | reading it all, copy (ms) | reading it all, map (ms) "
            "| reading it all, map-2m (ms) | map / copy | map-2m / copy |",
            "|---:|---:|---:|---:|---:|---:|"]
    for d in ds:
        def k(mode):
            return ("startup", mode, d, "touch_ms")
        out.append(f"| {d} | " + " | ".join(cell(s, k(m), 1) for m in STARTUP_MODES) + " | "
                   + " | ".join(ratio(s, k(m), k("copy")) for m in ("map", "map-2m")) + " |")
    out += ["", target(s)]
    out += ["", "Host memory (MiB) = the image's page cache (D, there either way) + the "
            "anonymous memory the two guests added; the VMM's RssFile counts the shared "
            "page cache once per mapping, so it overstates what map and map-2m cost.", "",
            "| image MiB | " + " | ".join(f"anon added, {m}" for m in STARTUP_MODES) + " | "
            + " | ".join(f"RssFile, {m}" for m in STARTUP_MODES) + " |",
            "|---:|" + "---:|" * (2 * len(STARTUP_MODES))]
    for d in ds:
        cells = [cell(s, ("startup", m, d, r), 1)
                 for r in ("anon_mib", "rss_file_mib") for m in STARTUP_MODES]
        out.append(f"| {d} | " + " | ".join(cells) + " |")
    return out


def tag_table(s):
    out = ["### 3. Tag access to a NoTagAccess page: ns per page", "",
           "| policy | pages | ordinary stage-2 fault | tag access | tag access / fault "
           "| the same tag access again |",
           "|---|---:|---:|---:|---:|---:|"]
    for c in TAG_CASES:
        for n in params(s, "tag"):
            def k(metric):
                return ("tag", c, n, metric)
            if k("tag_ns_per_page") not in s:
                continue
            out.append(f"| {c} | {n} | {cell(s, k('fault_ns_per_page'))} | "
                       f"{cell(s, k('tag_ns_per_page'))} | "
                       f"{ratio(s, k('tag_ns_per_page'), k('fault_ns_per_page'))} | "
                       f"{cell(s, k('again_ns_per_page'))} |")
    return out


def vm_table(s):
    """nta-vm's real Linux guest: copy vs map layout of its kernel image."""
    out = ["### 4. A real Linux MTE guest (nta-vm): its kernel image copied or mapped", "",
           "| layout | ms to init | ms to power-off | two guests at init: PSS MiB "
           "| of it anonymous | of it file |",
           "|---|---:|---:|---:|---:|---:|"]
    for layout in VM_LAYOUTS:
        def k(n, metric):
            return ("vm", layout, n, metric)
        if k(1, "init_ms") not in s and k(2, "pss_kib_init") not in s:
            continue
        mib = {m: f"{s[k(2, m)][0] / 1024:.1f}" if k(2, m) in s else "n/a"
               for m in ("pss_kib_init", "pss_anon_kib_init", "pss_file_kib_init")}
        out.append(f"| {layout} | {cell(s, k(1, 'init_ms'))} | {cell(s, k(1, 'off_ms'))} | "
                   f"{mib['pss_kib_init']} | {mib['pss_anon_kib_init']} | "
                   f"{mib['pss_file_kib_init']} |")
    if len(out) == 4:
        return []
    out += ["", "map / copy: init "
            f"{ratio(s, ('vm', 'map', 1, 'init_ms'), ('vm', 'copy', 1, 'init_ms'))}, "
            "power-off "
            f"{ratio(s, ('vm', 'map', 1, 'off_ms'), ('vm', 'copy', 1, 'off_ms'))}, "
            "host memory of two guests "
            f"{ratio(s, ('vm', 'map', 2, 'pss_kib_init'), ('vm', 'copy', 2, 'pss_kib_init'))}"]
    return out


def tables(s, conditions=""):
    lines = ["## Benchmark results", ""]
    if conditions:
        lines += ["```", conditions.strip(), "```", ""]
    for t in (fault_table, startup_table, tag_table, vm_table):
        lines += t(s) + [""]
    return "\n".join(lines)


def plot(s, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 4, figsize=(21, 4.8))
    for c in FAULT_CASES:
        ns = [n for n in params(s, "fault") if ("fault", c, n, "ns_per_page") in s]
        if ns:
            v = [s[("fault", c, n, "ns_per_page")] for n in ns]
            ax[0].errorbar(ns, [m for m, *_ in v],
                           yerr=[[m - lo for m, lo, *_ in v], [hi - m for m, _, hi, _ in v]],
                           marker="o", capsize=3, label=c)
    ax[0].set(xscale="log", yscale="log", xlabel="pages touched",
              ylabel="virtual ns per page", title="1. stage-2 fault-in")
    ax[0].legend(fontsize=8)

    ds = params(s, "startup")
    mem_ax = ax[1].twinx()
    for mode in STARTUP_MODES:
        t = [s.get(("startup", mode, d, "first_insn_ms")) for d in ds]
        mem = [host_mib(s, mode, d) for d in ds]
        if ds and all(t) and all(m is not None for m in mem):
            ax[1].plot(ds, [m for m, *_ in t], marker="o", label=f"ms to first insn, {mode}")
            mem_ax.plot(ds, mem, linestyle="--",
                        marker="s", label=f"host MiB, {mode}")
    ax[1].set(xscale="log", yscale="log", xlabel="image MiB", ylabel="ms to first insn",
              title="2. start-up, two guests (dashed: host MiB)")
    mem_ax.set(yscale="log", ylabel="host MiB")
    ax[1].legend(fontsize=8, loc="upper left")
    mem_ax.legend(fontsize=8, loc="lower right")

    for mode in STARTUP_MODES:
        dm = [d for d in ds if ("startup", mode, d, "touch_ms") in s]
        if dm:
            v = [s[("startup", mode, d, "touch_ms")] for d in dm]
            ax[2].errorbar(dm, [m for m, *_ in v],
                           yerr=[[m - lo for m, lo, *_ in v], [hi - m for m, _, hi, _ in v]],
                           marker="o", capsize=3, label=mode)
    dc = [d for d in ds if ("startup", "copy", d, "touch_ms") in s]
    if dc:
        ax[2].plot(dc, [TARGET_RATIO * s[("startup", "copy", d, "touch_ms")][0] for d in dc],
                   linestyle=":", color="gray", label=f"target: {TARGET_RATIO:g}x copy")
    ax[2].set(xscale="log", yscale="log", xlabel="image MiB", ylabel="ms (virtual)",
              title="2. reading the whole image")
    ax[2].legend(fontsize=8)

    labels, fault, tag = [], [], []
    for c in TAG_CASES:
        for n in params(s, "tag"):
            if ("tag", c, n, "tag_ns_per_page") in s:
                labels.append(c)
                fault.append(s[("tag", c, n, "fault_ns_per_page")][0])
                tag.append(s[("tag", c, n, "tag_ns_per_page")][0])
    x = range(len(labels))
    ax[3].bar([i - 0.2 for i in x], fault, 0.4, label="ordinary fault")
    ax[3].bar([i + 0.2 for i in x], tag, 0.4, label="tag access")
    ax[3].set_xticks(list(x), labels)
    ax[3].set(ylabel="virtual ns per page", title="3. tag-access handling")
    ax[3].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("raw")
    ap.add_argument("out")
    ap.add_argument("--conditions")
    a = ap.parse_args(argv)
    try:
        s = summarise(load(a.raw))
    except (OSError, ValueError) as e:
        print(f"benchreport: {e}", file=sys.stderr)
        return 1
    cond = ""
    if a.conditions:
        with open(a.conditions, encoding="utf-8") as f:
            cond = f.read()
    text = tables(s, cond)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "tables.md"), "w", encoding="utf-8") as f:
        f.write(text)
    print(text)
    try:
        plot(s, os.path.join(a.out, "bench.png"))
    except ImportError:
        print("benchreport: no matplotlib here, no plot", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
