#!/usr/bin/env python3
"""Turn nta-bench's CSV into tables (Markdown) and a plot (PNG).

usage: benchreport.py RAW_CSV OUT_DIR [--conditions FILE]

RAW_CSV has the rows nta-bench prints, without their "csv," prefix:
question,case,param,rep,metric,value. Writes OUT_DIR/tables.md (also
printed) and OUT_DIR/bench.png (when matplotlib is there; the build root
has it). Every cell is the median over the repetitions with the spread
(min-max) after it; ratios are of medians.
"""
import argparse
import csv
import os
import statistics
import sys

FAULT_CASES = ["nta-file", "tagged-anon", "file-mte-off", "tagged-hugetlb", "hugetlb-mte-off"]
TAG_CASES = ["exit-make-taggable", "sea"]


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


def fault_table(s):
    out = ["### 1. Stage-2 fault-in: ns per page (4 KiB stride)", "",
           "| pages | " + " | ".join(FAULT_CASES)
           + " | nta-file / file-mte-off | nta-file / tagged-anon |",
           "|---:|" + "---:|" * (len(FAULT_CASES) + 2)]
    for n in params(s, "fault"):
        k = {c: ("fault", c, n, "ns_per_page") for c in FAULT_CASES}
        out.append(f"| {n} | " + " | ".join(cell(s, k[c]) for c in FAULT_CASES)
                   + f" | {ratio(s, k['nta-file'], k['file-mte-off'])}"
                   + f" | {ratio(s, k['nta-file'], k['tagged-anon'])} |")
    return out


def startup_table(s):
    out = ["### 2. Start-up with a D-byte image, two guests", "",
           "| image MiB | first insn, copy (ms) | first insn, map (ms) | copy / map "
           "| reading it all, copy (ms) | reading it all, map (ms) "
           "| host MiB, copy | host MiB, map | saved MiB |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for d in params(s, "startup"):
        def k(mode, metric):
            return ("startup", mode, d, metric)
        mem = {m: host_mib(s, m, d) for m in ("copy", "map") if host_mib(s, m, d) is not None}
        saved = f"{mem['copy'] - mem['map']:.0f}" if len(mem) == 2 else "n/a"
        memcell = {m: f"{mem[m]:.0f}" if m in mem else "n/a" for m in ("copy", "map")}
        out.append(
            f"| {d} | {cell(s, k('copy', 'first_insn_ms'), 1)} | "
            f"{cell(s, k('map', 'first_insn_ms'), 1)} | "
            f"{ratio(s, k('copy', 'first_insn_ms'), k('map', 'first_insn_ms'))} | "
            f"{cell(s, k('copy', 'touch_ms'), 1)} | {cell(s, k('map', 'touch_ms'), 1)} | "
            f"{memcell['copy']} | {memcell['map']} | {saved} |")
    out += ["", "Host memory (MiB) = the image's page cache (D, there either way) + the "
            "anonymous memory the two guests added; the VMM's RssFile counts the shared "
            "page cache once per mapping, so it overstates what map costs.", "",
            "| image MiB | anon added, copy | anon added, map | RssFile, copy | RssFile, map |",
            "|---:|---:|---:|---:|---:|"]
    for d in params(s, "startup"):
        cells = [cell(s, ("startup", m, d, r), 1)
                 for r in ("anon_mib", "rss_file_mib") for m in ("copy", "map")]
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


def tables(s, conditions=""):
    lines = ["## Benchmark results", ""]
    if conditions:
        lines += ["```", conditions.strip(), "```", ""]
    for t in (fault_table, startup_table, tag_table):
        lines += t(s) + [""]
    return "\n".join(lines)


def plot(s, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(16, 4.8))
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
    for mode in ("copy", "map"):
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

    labels, fault, tag = [], [], []
    for c in TAG_CASES:
        for n in params(s, "tag"):
            if ("tag", c, n, "tag_ns_per_page") in s:
                labels.append(c)
                fault.append(s[("tag", c, n, "fault_ns_per_page")][0])
                tag.append(s[("tag", c, n, "tag_ns_per_page")][0])
    x = range(len(labels))
    ax[2].bar([i - 0.2 for i in x], fault, 0.4, label="ordinary fault")
    ax[2].bar([i + 0.2 for i in x], tag, 0.4, label="tag access")
    ax[2].set_xticks(list(x), labels)
    ax[2].set(ylabel="virtual ns per page", title="3. tag-access handling")
    ax[2].legend(fontsize=8)
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
