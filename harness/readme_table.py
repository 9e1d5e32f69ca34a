#!/usr/bin/env python3
"""harness/readme_table.py RESULTS_DIR: the README's Results table, cut from
the run's summary.md (its 1- and 64-thread throughput tables, cells as they
are there, significance marks included): the rows and columns the README
shows, in its order. Prints Markdown; the README takes it as it is.

  python3 harness/readme_table.py results/2026-12-02b-vm
"""
import re
import sys

ROWS = ["pair_8KiB", "pair_256KiB", "hold", "handoff", "server", "spawn", "churn"]
COLS = ["gostack-lockfree", "gostack-lockfree-nopercpu", "gostack-mutex", "gostack-lockfree-nocache",
        "gostack-mutex-nocache", "glibc", "jemalloc", "tcmalloc", "mimalloc", "mmap", "boost-pooled"]


def tables(lines):
    out, cur = {}, None
    for line in lines:
        m = re.match(r"## Throughput at (\d+) thread", line)
        if m:
            cur = int(m.group(1))
            continue
        if line.startswith("## "):
            cur = None
        if cur is None or not line.startswith("| ") or line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "workload":
            out[cur] = (cells, {})
        elif cur in out:
            out[cur][1][cells[0]] = cells
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    t = tables(open(sys.argv[1] + "/summary.md").read().split("\n"))
    print("| workload | threads | " + " | ".join(COLS) + " |")
    print("|---|---:|" + "---:|" * len(COLS))
    for w in ROWS:
        for n in (1, 64):
            hdr, rows = t[n]
            r = rows[w]
            cells = [r[hdr.index(c)].replace(" (ref)", "") for c in COLS]
            print(f"| {w} | {r[1]} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
