#!/usr/bin/python3
"""Plots for a harness results directory (PNG and SVG).

    /usr/bin/python3 harness/plot.py results/<date>-<host>     # re-plot from data.json

Every figure shows the median of the repetitions with error bars spanning the
smallest and largest repetition, and carries the machine in its caption.
"""

import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from driver import CONTESTANTS, WORKLOADS, index_results, median, vals  # noqa: E402

STYLE = {
    "gostack-lockfree": ("#1f4fd1", "-", "o"),
    "gostack-mutex": ("#e8710a", "-", "s"),
    "gostack-lockfree-nocache": ("#1f4fd1", "--", "o"),
    "gostack-mutex-nocache": ("#e8710a", "--", "s"),
    "gostack-lockfree-nopercpu": ("#1f4fd1", ":", "o"),
    "glibc": ("#555555", "-", "^"),
    "jemalloc": ("#2ca02c", "-", "v"),
    "tcmalloc": ("#d62728", "-", "D"),
    "mimalloc": ("#9467bd", "-", "P"),
    "mmap": ("#8c564b", ":", "x"),
    "boost-pooled": ("#e377c2", "-.", "*"),
    "boost-protected": ("#bcbd22", "-.", "h"),
}


def style(c):
    return STYLE.get(c, ("#17becf", "-", "."))


def caption(meta, reps=None):
    q = " (--quick)" if meta.get("quick") else ""
    return (f"{meta['cpu_model']}, {meta['cpus']} CPUs, Linux {meta['kernel']}, {meta['c_compiler']}; "
            f"gostack {meta['gostack_version']} @ {str(meta['gostack_commit'])[:12]}; {meta['date']}. "
            f"Median of {reps or str(meta['repetitions']) + ' repetitions'}{q}; error bars: min..max.")


def finish(fig, meta, extra="", bottom=0.07, reps=None):
    """Lays the figure out and puts the machine caption under everything."""
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.text(0.01, 0.01, caption(meta, reps) + (" " + extra if extra else ""), fontsize=7, ha="left",
             va="bottom", wrap=True)


def ns_h(v, _pos=None):
    for unit, div in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if v >= div:
            return f"{v / div:g} {unit}"
    return f"{v:g} ns"


def save(fig, out, name, made):
    for ext in ("png", "svg"):
        p = os.path.join(out, f"{name}.{ext}")
        fig.savefig(p, dpi=110 if ext == "png" else None, bbox_inches="tight")
        made.append(p)
    plt.close(fig)


def human(v, _pos=None):
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= div:
            return f"{v / div:g}{unit}"
    return f"{v:g}"


def bytes_h(v, _pos=None):
    for unit, div in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(v) >= div:
            return f"{v / div:g} {unit}"
    return f"{v:g} B"


def spread(xs):
    m = median(xs)
    return m, m - min(xs), max(xs) - m


def threads_axis(ax, ts, cpus):
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(ts))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{int(v)}"))
    ax.set_xlabel("threads (log2 scale)")
    if cpus and max(ts) > cpus:
        ax.axvspan(cpus * 1.2, max(ts) * 1.3, color="#f0f0f0", zorder=0)
        ax.text(cpus * 1.25, 0.98, f"oversubscribed (> {cpus} CPUs)", transform=ax.get_xaxis_transform(),
                va="top", ha="left", fontsize=8, color="#777777")
    ax.set_xlim(min(ts) / 1.3, max(ts) * 1.3)


def item_unit(wl):
    return "coroutines started+finished / s" if wl == "spawn" else "stacks allocated+freed / s"


def plot_throughput(out, data, idx, made, only=None):
    meta = data["meta"]
    for wl in only or (WORKLOADS + sorted({k[0] for k in idx} - set(WORKLOADS))):
        cs = [c for c in CONTESTANTS if any(k[0] == wl and k[2] == c for k in idx)]
        if not cs:
            continue
        fig, ax = plt.subplots(figsize=(9, 5.2))
        ts_all = set()
        for c in cs:
            ts = sorted(k[1] for k in idx if k[0] == wl and k[2] == c)
            ts_all.update(ts)
            ms, lo, hi = [], [], []
            for t in ts:
                m, a, b = spread(vals(idx[(wl, t, c)], "items_per_second"))
                ms.append(m)
                lo.append(a)
                hi.append(b)
            col, ls, mk = style(c)
            ax.errorbar(ts, ms, yerr=[lo, hi], label=c, color=col, linestyle=ls, marker=mk, capsize=3,
                        linewidth=1.6 if c.startswith("gostack") else 1.1, markersize=5)
        ts_all = sorted(ts_all)
        threads_axis(ax, ts_all, meta.get("cpus"))
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(human))
        ax.set_ylabel(f"throughput, {item_unit(wl)} (log)")
        ax.set_title(f"{wl}: throughput against threads (higher is better)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
        finish(fig, meta, bottom=0.06)
        save(fig, out, f"throughput_{wl}", made)


def ratio_series(idx, wl, num, den):
    ts = sorted(k[1] for k in idx if k[0] == wl and k[2] == num and (wl, k[1], den) in idx)
    r, lo, hi = [], [], []
    for t in ts:
        a = vals(idx[(wl, t, num)], "items_per_second")
        b = vals(idx[(wl, t, den)], "items_per_second")
        m = median(a) / median(b)
        r.append(m)
        lo.append(max(0.0, m - min(a) / max(b)))
        hi.append(max(0.0, max(a) / min(b) - m))
    return ts, r, lo, hi


def ratio_fmt(v, _pos=None):
    if v >= 1:
        return f"{v:g}"
    return f"1/{1 / v:.0f}" if 1 / v >= 10 else f"1/{1 / v:.2g}"


def plot_ratio(out, data, idx, made, only=None):
    meta = data["meta"]
    pairs = [("gostack-lockfree", "gostack-mutex", "lock-free / mutex"),
             ("gostack-mutex-nocache", "gostack-mutex", "mutex backend: no cache / cache"),
             ("gostack-lockfree-nocache", "gostack-lockfree", "lock-free backend: no cache / cache"),
             ("gostack-lockfree", "gostack-lockfree-nopercpu", "lock-free: per-CPU tier on / off")]
    present = {k[2] for k in idx}
    panels = [p for p in pairs if p[1] in present and (p[0] in present or p[0] == "gostack-lockfree")]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5.4), squeeze=False)
    cmap = plt.get_cmap("tab20")
    wls = [w for w in WORKLOADS if any(k[0] == w for k in idx)]
    handles = {}
    for ax, (num, den, title) in zip(axes[0], panels):
        ts_all = set()
        for i, wl in enumerate(wls):
            ts, r, lo, hi = ratio_series(idx, wl, num, den)
            if not ts:
                continue
            ts_all.update(ts)
            h = ax.errorbar(ts, r, yerr=[lo, hi], label=wl, color=cmap(i % 20), marker="o", markersize=4,
                            capsize=2, linewidth=1.2)
            handles[wl] = h
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_title(title, fontsize=11)
        ax.set_ylabel(f"throughput ratio {num} / {den}", fontsize=8)
        if ts_all:
            threads_axis(ax, sorted(ts_all), meta.get("cpus"))
            ax.set_yscale("log", base=2)
            ax.yaxis.set_major_formatter(FuncFormatter(ratio_fmt))
            ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _p: ""))
            ax.grid(True, which="major", alpha=0.3)
        else:
            why = meta.get("unavailable", {}).get(num, "no runs")
            ax.text(0.5, 0.5, f"{num} not measured in this run:\n{why}", ha="center", va="center",
                    transform=ax.transAxes, fontsize=9, wrap=True)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("gostack: throughput ratios against threads (above 1: the first named is faster)")
    if handles:
        fig.legend([handles[w] for w in wls if w in handles], [w for w in wls if w in handles],
                   loc="lower center", ncol=min(12, len(handles)), fontsize=8, bbox_to_anchor=(0.5, 0.035))
    finish(fig, meta, "Ratio error bars: min(a)/max(b) .. max(a)/min(b).", bottom=0.1)
    save(fig, out, "ratio", made)


def tmax_for(idx, wl):
    ts = [k[1] for k in idx if k[0] == wl]
    return max(ts) if ts else None


def grouped_bars(ax, cs, groups, getter, colors, log=True):
    n = len(groups)
    w = 0.8 / n
    for j, (gname, key) in enumerate(groups):
        xs, ms, lo, hi = [], [], [], []
        for i, c in enumerate(cs):
            v = getter(c, key)
            if not v:
                continue
            m, a, b = spread(v)
            xs.append(i - 0.4 + w * (j + 0.5))
            ms.append(m)
            lo.append(a)
            hi.append(b)
        ax.bar(xs, ms, width=w, yerr=[lo, hi], capsize=2, label=gname, color=colors[j], edgecolor="black",
               linewidth=0.4, error_kw={"elinewidth": 0.8})
    ax.set_xticks(range(len(cs)))
    ax.set_xticklabels(cs, rotation=30, ha="right", fontsize=8)
    if log:
        ax.set_yscale("log")
    ax.grid(True, axis="y", which="both", alpha=0.3)


def plot_latency(out, data, idx, made, only=None):
    meta = data["meta"]
    for wl in only or WORKLOADS:
        t = tmax_for(idx, wl)
        if t is None:
            continue
        cs = [c for c in CONTESTANTS if (wl, t, c) in idx]
        fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
        for ax, op in zip(axes, ("alloc", "free")):
            groups = [("p50", f"lat_{op}_p50_ns"), ("p99", f"lat_{op}_p99_ns"), ("p99.9", f"lat_{op}_p999_ns")]
            grouped_bars(ax, cs, groups, lambda c, k: [max(x, 1.0) for x in vals(idx[(wl, t, c)], k)],
                         ["#9ecae1", "#3182bd", "#08306b"])
            ax.set_title(f"{op}: one call, sampled 1 in 64")
            ax.yaxis.set_major_formatter(FuncFormatter(ns_h))
        axes[0].set_ylabel("latency (log scale)")
        axes[0].legend(fontsize=8)
        over = " (oversubscribed)" if meta.get("cpus") and t > meta["cpus"] else ""
        fig.suptitle(f"{wl}: latency percentiles at {t} threads{over} (lower is better)")
        finish(fig, meta, "Clock-read overhead subtracted; samples include preemption.")
        save(fig, out, f"latency_{wl}", made)


def plot_memory(out, data, idx, made, only=None):
    meta = data["meta"]
    for wl in only or WORKLOADS:
        t = tmax_for(idx, wl)
        if t is None:
            continue
        cs = [c for c in CONTESTANTS if (wl, t, c) in idx]
        fig, axes = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [1.6, 1]})
        groups = [("peak RSS", "rss_peak_bytes"), ("RSS with live set held", "rss_live_bytes"),
                  ("RSS after free", "rss_freed_bytes"), ("after reclaim / pool destroyed", "rss_after_bytes")]
        grouped_bars(axes[0], cs, groups, lambda c, k: [max(x, 0.0) / 2**20 for x in vals(idx[(wl, t, c)], k)],
                     ["#fdae6b", "#e6550d", "#74c476", "#006d2c"], log=False)
        axes[0].set_ylabel("MiB above the process's RSS at start")
        axes[0].set_title("resident memory")
        axes[0].legend(fontsize=8)
        grouped_bars(axes[1], cs, [("live set held", "maps_live"), ("after free", "maps_after")],
                     lambda c, k: vals(idx[(wl, t, c)], k), ["#9e9ac8", "#54278f"], log=True)
        axes[1].set_ylabel("lines of /proc/self/maps (log)")
        axes[1].set_title("memory mappings")
        axes[1].yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
        axes[1].yaxis.set_minor_formatter(FuncFormatter(lambda v, _p: f"{v:g}" if f"{v:g}"[0] in "25" else ""))
        axes[1].legend(fontsize=8)
        over = " (oversubscribed)" if meta.get("cpus") and t > meta["cpus"] else ""
        fig.suptitle(f"{wl}: memory at {t} threads{over} (lower is better)")
        finish(fig, meta, "RSS includes the harness threads' own stacks.")
        save(fig, out, f"memory_{wl}", made)


def plot_server(out, data, idx, made, only=None):
    """server.png: requests/s of gostack-http-demo per workload, one bar per
    stack source (median over the rounds, min..max), ratio to gostack on top."""
    import server  # noqa: E402
    sd = data.get("server")
    if not sd:
        return
    meta = data["meta"]
    by = server.by_key(sd)
    wls = [w["name"] for w in sd["config"]["workloads"] if any(k[0] == w["name"] for k in by)]
    if not wls:
        return
    colors = {"gostack": style("gostack-lockfree")[0], "malloc": style("glibc")[0], "mmap": style("mmap")[0]}
    # One panel per connection mode: keep-alive rates are several times the
    # others', and each panel gets its own linear axis.
    modes = []
    for wl in wls:
        mode = server.label(wl)[0]
        if mode not in [m for m, _ in modes]:
            modes.append((mode, []))
        [g for m, g in modes if m == mode][0].append(wl)
    fig, axes = plt.subplots(1, len(modes), figsize=(3.2 + 2.4 * len(wls), 5.8), squeeze=False,
                             gridspec_kw={"width_ratios": [len(g) for _, g in modes]})
    ns = len(server.STACKS)
    w = 0.8 / ns
    for ax, (mode, group) in zip(axes[0], modes):
        top = 0.0
        for j, s in enumerate(server.STACKS):
            xs, ms, lo, hi = [], [], [], []
            for i, wl in enumerate(group):
                rs = by.get((wl, s))
                if not rs:
                    continue
                m, a, b = spread([r["rps"] for r in rs])
                xs.append(i - 0.4 + w * (j + 0.5))
                ms.append(m)
                lo.append(a)
                hi.append(b)
                top = max(top, m + b)
            ax.bar(xs, ms, width=w, yerr=[lo, hi], capsize=3, label=f"{s} stacks", color=colors[s],
                   edgecolor="black", linewidth=0.4, error_kw={"elinewidth": 0.8})
            for x, wl, m, b in zip(xs, [wl for wl in group if by.get((wl, s))], ms, hi):
                ref = by.get((wl, server.REF))
                txt = f"{m / 1e3:.1f}k"
                if s != server.REF and ref:
                    txt += f"\n{m / median([r['rps'] for r in ref]):.2f}x"
                ax.annotate(txt, (x, m + b), xytext=(0, 3), textcoords="offset points", ha="center",
                            va="bottom", fontsize=7)
        ax.set_xticks(range(len(group)))
        ax.set_xticklabels([server.label(wl)[1].replace(", ", "\n", 1).replace("threads, ", "threads\n") + f"\n{wl}"
                            for wl in group], fontsize=8)
        ax.set_ylim(0, top * 1.2)
        ax.yaxis.set_major_formatter(FuncFormatter(human))
        ax.set_title(mode, fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0][0].set_ylabel("requests / s (higher is better)")
    axes[0][0].legend(fontsize=8, loc="lower left")
    c = sd["config"]
    fig.suptitle("gostack-http-demo under wrk on loopback: requests/s by coroutine stack source "
                 "(above each bar: median and ratio to gostack)", fontsize=11)
    finish(fig, meta, f"wrk -t2 -d{c['duration_s']}s and the server share the {meta.get('cpus')} CPUs; "
                      f"Bars: median over the rounds; labels: median, ratio to gostack's median.",
           bottom=0.09, reps=f"{c['rounds']} rounds (sources interleaved each round)")
    save(fig, out, "server", made)


_JOB = {}


def plot_depth(out, data, idx, made, only=None):
    """depth.png: the depth profile check (gostack_bench --depth-check): per
    stack size, the histogram of deepest use measured over the spawn
    workload's sampled stacks, with the band of depths its coroutines wrote."""
    d = data.get("depth")
    if not d or not d.get("classes"):
        return
    classes = d["classes"]
    fig, axes = plt.subplots(1, len(classes), figsize=(4.2 * len(classes), 3.6), squeeze=False)
    for ax, c in zip(axes[0], classes):
        size, nb = c["size"], len(c["hist"])
        w = size / nb / 1024
        xs = [(i + 0.5) * w for i in range(nb)]
        ax.bar(xs, c["hist"], width=w * 0.9, color=style("gostack-lockfree")[0])
        if c["written_hi"] > 0:
            ax.axvspan(c["written_lo"] / 1024, c["written_hi"] / 1024, color="#2ca02c", alpha=0.15,
                       label="written by the coroutines")
            ax.legend(fontsize=7, loc="upper left")
        ax.axvline(c["max"] / 1024, color="#d62728", linestyle=":", linewidth=1)
        ax.set_xlim(0, size / 1024)
        ax.set_xlabel("deepest use (KiB)")
        ax.set_ylabel("sampled stacks")
        ax.set_title(f"{size // 1024} KiB stacks: {c['samples']} samples, p50 {c['p50']} B, max {c['max']} B "
                     f"({'ok' if c['ok'] else 'MISMATCH'})", fontsize=8)
    fig.suptitle(f"Depth profile check: spawn, {d.get('spawns')} coroutines, every stack sampled "
                 f"(gostack-lockfree, config.profile 1): {'match' if d.get('ok') else 'MISMATCH'}", fontsize=9)
    finish(fig, data["meta"], "Red dotted line: the deepest use measured (max).", bottom=0.12, reps="one run")
    save(fig, out, "depth", made)


def _run_job(job):
    kind, wl = job
    made = []
    fn = {"throughput": plot_throughput, "ratio": plot_ratio, "latency": plot_latency, "memory": plot_memory,
          "server": plot_server, "depth": plot_depth}[kind]
    fn(_JOB["out"], _JOB["data"], _JOB["idx"], made, [wl] if wl else None)
    return made


def make_all(out, data):
    """Draws every plot, in parallel over the CPUs; returns the files written."""
    idx = index_results(data)
    _JOB.update(out=out, data=data, idx=idx)
    wls = [w for w in WORKLOADS if any(k[0] == w for k in idx)]
    wls += sorted({k[0] for k in idx} - set(WORKLOADS))
    jobs = [("ratio", None)] + [(k, w) for w in wls for k in ("throughput", "latency", "memory")]
    if data.get("server"):
        jobs.append(("server", None))
    if data.get("depth", {}).get("classes"):
        jobs.append(("depth", None))
    try:
        import multiprocessing
        with multiprocessing.get_context("fork").Pool(max(1, min(4, os.cpu_count() or 1))) as pool:
            parts = pool.map(_run_job, jobs)
    except (ImportError, OSError, ValueError):
        parts = [_run_job(j) for j in jobs]
    return [p for part in parts for p in part]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    d = sys.argv[1]
    with open(os.path.join(d, "data.json")) as f:
        made = make_all(d, json.load(f))
    print(f"{len(made)} files written to {d}")
