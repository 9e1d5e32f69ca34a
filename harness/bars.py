#!/usr/bin/env python3
"""harness/bars.py RESULTS_DIR: issue 11's bars, read off one harness/run.

Every figure is a median over the run's repetitions (data.json), and every
ratio is taken between contestants of that one run. Prints each bar with its
figures and MET or NOT MET. This prints only: a bar that is not met is not
a failure of the script. Needs only the Python standard library (the U
test below needs scipy, python3-scipy: /usr/bin/python3, as harness/run
uses; without it the verdicts print with their spread alone).

  python3 harness/bars.py results/2026-12-02b-vm

Bars on the cached 8 KiB pair against malloc+free in the same process, and
on guarded pairs, come from harness/micro/run, not from here.

A bar between two contestants also gets the spread of its ratio over the
repetitions (the i-th slowest of one against the i-th slowest of the
other) and a two-sided U test of one's repetitions against the other's
scaled by the bar's factor: `noise` when the test cannot tell the two
apart (p >= 0.05), so that a verdict that a rerun may flip says so.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from driver import index_results, median, utest, vals  # noqa: E402 (harness/driver.py, as plot.py does)

LF, TC, MU = "gostack-lockfree", "tcmalloc", "gostack-mutex"
LFN, MUN, BP = "gostack-lockfree-nocache", "gostack-mutex-nocache", "boost-pooled"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with open(os.path.join(sys.argv[1], "data.json")) as f:
        idx = index_results(json.load(f))
    if utest([1.0, 2.0], [3.0, 4.0]) is None:
        print("(no U test: scipy is not importable by this python3; /usr/bin/python3 has python3-scipy)")

    def med(w, c, t, key="items_per_second"):
        return median(vals(idx.get((w, t, c)), key))

    def verdict(ok):
        return "MET" if ok else "NOT MET"

    def line(name, ok, detail):
        print(f"{verdict(ok):8} {name}: {detail}")

    def spread(w, t, ca, cb, k=1.0):
        """The ratio's range over repetitions, and `noise` when a U test of
        ca's repetitions against k x cb's cannot tell them apart."""
        a, b = sorted(vals(idx.get((w, t, ca)), "items_per_second")), sorted(vals(idx.get((w, t, cb)), "items_per_second"))
        if not a or not b or len(a) != len(b) or min(b) <= 0:
            return ""
        r = [x / y for x, y in zip(a, b)]
        p = utest(a, [k * y for y in b])
        sig = "" if p is None else (f", noise (U test p={p:.2f})" if p >= 0.05 else f", p={p:.3f}")
        return f" [reps {min(r):.2f}x..{max(r):.2f}x{sig}]"

    # hold: at least tcmalloc at 1, 2, 16 and 64 threads
    for t in (1, 2, 16, 64):
        a, b = med("hold", LF, t), med("hold", TC, t)
        if a and b:
            line(f"hold {t}T >= tcmalloc", a >= b,
                 f"{a / 1e6:.3g}M vs {b / 1e6:.3g}M items/s = {a / b:.2f}x" + spread("hold", t, LF, TC))

    # every workload row of the README table at 1 and 64 threads (hold's
    # tcmalloc bar is above; its boost-pooled one is here)
    for w in ("pair_8KiB", "pair_256KiB", "hold", "handoff", "server", "spawn", "churn"):
        for t in (1, 64):
            t = 2 if (w == "handoff" and t == 1) else t
            a, b, p = med(w, LF, t), med(w, TC, t), med(w, BP, t)
            if not (a and b):
                continue
            if w != "hold":
                line(f"{w} {t}T >= tcmalloc", a >= b, f"{a / 1e6:.3g}M vs {b / 1e6:.3g}M = {a / b:.2f}x" + spread(w, t, LF, TC))
            if p:
                line(f"{w} {t}T boost-pooled within 2x", p <= 2 * a,
                     f"boost-pooled {p / 1e6:.3g}M = {p / a:.2f}x of gostack-lockfree" + spread(w, t, BP, LF, 2.0))

    # no-cache 8 KiB pairs
    one = med("pair_8KiB", LFN, 1)
    if one:
        base = 1e9 / one
        print(f"         no-cache 8 KiB at 1T: {base:.1f} ns per pair (1 / throughput)")
        for t in (2, 16, 64):
            a = med("pair_8KiB", LFN, t)
            if a:
                ns = 1e9 / a
                line(f"no-cache {t}T within 1.5x of 1T", ns <= 1.5 * base, f"{ns:.1f} ns per pair = {ns / base:.2f}x")
        a, m = med("pair_8KiB", LFN, 64), med("pair_8KiB", MUN, 64)
        if a and m:
            line("no-cache 64T lock-free >= 3x mutex", a >= 3 * m, f"{a / m:.2f}x" + spread("pair_8KiB", 64, LFN, MUN, 3.0))
        pa, pm = med("pair_8KiB", LFN, 64, "lat_alloc_p999_ns"), med("pair_8KiB", MUN, 64, "lat_alloc_p999_ns")
        if pa and pm:
            line("no-cache 64T alloc p99.9 <= mutex / 10", pa * 10 <= pm, f"{pa:.0f} ns vs {pm:.0f} ns")

    # flow: handoff (producers and consumers), at least 3x tcmalloc and 2x mutex
    for t in (2, 16, 64):
        a, b, m = med("handoff", LF, t), med("handoff", TC, t), med("handoff", MU, t)
        if a and b and m:
            line(f"flow (handoff) {t}T >= 3x tcmalloc", a >= 3 * b, f"{a / b:.2f}x" + spread("handoff", t, LF, TC, 3.0))
            line(f"flow (handoff) {t}T >= 2x mutex", a >= 2 * m, f"{a / m:.2f}x" + spread("handoff", t, LF, MU, 2.0))


if __name__ == "__main__":
    main()
