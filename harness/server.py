#!/usr/bin/python3
"""The harness's server stage: requests/s of examples/http_demo.c
(gostack-http-demo) under wrk, with the coroutine stacks from gostack, from
malloc and from mmap, measured side by side.

Called by driver.py after the google-benchmark suite; see harness/README.md.
Benchmark names are http_server/<workload>/<stacks>, so --filter selects and
skips them like any other benchmark. Each run starts the server on a free
loopback port, runs wrk against it, sends SIGTERM and checks what the server
printed; every failed check is a failure of the stage (harness/run exits 1).
"""

import json
import os
import re
import signal
import statistics
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LUA = os.path.join(HERE, "server_wrk.lua")
PREFIX = "http_server"
STACKS = ["gostack", "malloc", "mmap"]
REF = "gostack"

# close: a new connection per request (wrk -H "Connection: close"; the server
# answers "Connection: close" and closes). stack_size: the server's standard
# stack (--stack-size). path "?stack=65536": every request asks for a 64 KiB
# stack, see WL_DESC. About 3 s per run (full), 1 s (quick): 7 workloads x 3
# stack sources x 3 rounds is about 3.5 minutes.
WORKLOADS = [
    {"name": "keepalive_c50_t2", "close": False, "conns": 50, "threads": 2, "stack_size": 8192, "path": ""},
    {"name": "keepalive_c400_t8", "close": False, "conns": 400, "threads": 8, "stack_size": 8192, "path": ""},
    {"name": "close_c50_t2", "close": True, "conns": 50, "threads": 2, "stack_size": 8192, "path": ""},
    {"name": "close_c400_t8", "close": True, "conns": 400, "threads": 8, "stack_size": 8192, "path": ""},
    {"name": "close64k_c400_t8", "close": True, "conns": 400, "threads": 8, "stack_size": 65536, "path": ""},
    {"name": "grow64k_c50_t2", "close": True, "conns": 50, "threads": 2, "stack_size": 8192,
     "path": "?stack=65536"},
    {"name": "grow64k_c400_t8", "close": True, "conns": 400, "threads": 8, "stack_size": 8192,
     "path": "?stack=65536"},
]
WL = {w["name"]: w for w in WORKLOADS}

WL_DESC = {
    "keepalive": "keep-alive: every wrk connection stays open for the whole run; stacks are allocated only "
                 "when a connection is accepted (one per connection), so this is the control: stack "
                 "allocation should not matter",
    "close": "a new connection per request (wrk -H \"Connection: close\"; the server answers "
             "\"Connection: close\" and closes). Each connection is a coroutine whose descriptor comes "
             "from the worker's free list with its 8 KiB stack (Go's gfget), so standard stacks are "
             "allocated only when that list runs dry or overflows (64 kept, 32 left after a trim)",
    "close64k": "the same with 64 KiB standard stacks (--stack-size 65536): the descriptors' free lists still "
                "absorb most of the allocations, but each one that happens is 8 times bigger",
    "grow64k": "a new connection per request, and each request asks for a 64 KiB stack (GET /?stack=65536, "
                "Go's stack growth): the coroutine starts on its 8 KiB stack, the loop allocates 64 KiB, "
                "frees the 8 KiB one, restarts the coroutine, which touches 32 KiB of the new stack; at close "
                "gfput frees the 64 KiB stack and the next gfget allocates a new 8 KiB one: two stack "
                "allocations and two frees per request",
}


PANEL = {"keepalive": "keep-alive", "close": "a new connection per request",
         "close64k": "a new connection per request",
         "grow64k": "a new connection per request, each grows its stack 8 -> 64 KiB"}


def label(wl):
    """(panel, short description) of a workload for tables and plots."""
    w = WL[wl]
    kind = wl.split("_")[0]
    stk = "8 -> 64 KiB stacks" if kind == "grow64k" else f"{w['stack_size'] // 1024} KiB stacks"
    return PANEL[kind], f"{w['conns']} conns, {w['threads']} server threads, {stk}"


def units(flt):
    """(workload, stacks, name) of every server-stage benchmark the filter selects."""
    out = []
    for w in WORKLOADS:
        for s in STACKS:
            name = f"{PREFIX}/{w['name']}/{s}"
            if flt is None or flt.search(name):
                out.append((w["name"], s, name))
    return out


def wrk_version(wrk):
    try:
        p = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10)
        return (p.stdout + p.stderr).splitlines()[0].split(" Copyright")[0].replace(" [epoll]", "").strip()
    except (OSError, subprocess.SubprocessError, IndexError):
        return "?"


LISTEN_RE = re.compile(r"listening on http://127\.0\.0\.1:(\d+)/ \(threads=(\d+), stacks=(\w+), stack-size=(\d+)")
DRAINED_RE = re.compile(r"drained: connections=(\d+) requests=(\d+) descriptors=(\d+) \(freed (\d+)\) standard "
                        r"stacks allocated=(\d+) restacks=(\d+) stacks freed by gfput=(\d+) by gfget=(\d+)")
DRAINED_KEYS = ["connections", "requests", "descriptors", "descriptors_freed", "standard_stacks_allocated",
                "restacks", "stacks_freed_gfput", "stacks_freed_gfget"]


def run_one(server_bin, wrk, env, w, stacks, duration, wrk_timeout):
    """One server process under one wrk run. Returns (record, raw): record
    holds the numbers and 'problems', the failed checks (empty: all passed)."""
    problems = []
    scmd = [server_bin, "--addr", "127.0.0.1", "--port", "0", "--threads", str(w["threads"]),
            "--stack-size", str(w["stack_size"]), "--stacks", stacks]
    raw = {"server_command": scmd, "loadavg_before": open("/proc/loadavg").read().strip()}
    rec = {"loadavg": raw["loadavg_before"].split()[0]}
    t1 = time.monotonic()
    with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe:
        p = subprocess.Popen(scmd, stdout=fo, stderr=fe, env=env, text=True)
        wj = None
        try:
            port, lm = None, None
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and p.poll() is None:
                fe.seek(0)
                lm = LISTEN_RE.search(fe.read())
                if lm:
                    port = int(lm[1])
                    break
                time.sleep(0.02)
            if not port:
                problems.append("the server did not start (no 'listening on' line within 10 s"
                                + (f"; exit status {p.poll()}" if p.poll() is not None else "") + ")")
            else:
                if (int(lm[2]), lm[3], int(lm[4])) != (w["threads"], stacks, w["stack_size"]):
                    problems.append(f"the server reports threads={lm[2]} stacks={lm[3]} stack-size={lm[4]}, "
                                    f"not {w['threads']}/{stacks}/{w['stack_size']}")
                url = f"http://127.0.0.1:{port}/{w['path']}"
                wcmd = [wrk, f"-t{min(2, w['conns'])}", f"-c{w['conns']}", f"-d{duration}s",
                        "--timeout", f"{wrk_timeout}s", "--latency", "-s", LUA]
                if w["close"]:
                    wcmd += ["-H", "Connection: close"]
                wcmd.append(url)
                raw["wrk_command"] = wcmd
                try:
                    wp = subprocess.run(wcmd, capture_output=True, text=True, timeout=duration + 60)
                    raw["wrk_stdout"], raw["wrk_stderr"], raw["wrk_exit"] = wp.stdout, wp.stderr, wp.returncode
                    if wp.returncode != 0:
                        problems.append(f"wrk exited {wp.returncode}: {wp.stderr.strip()[-300:]}")
                    m = re.search(r"^WRK_JSON (\{.*\})$", wp.stdout, re.M)
                    if m:
                        wj = json.loads(m[1])
                    else:
                        problems.append("no WRK_JSON line in wrk's output")
                except subprocess.TimeoutExpired:
                    problems.append(f"wrk did not finish within {duration + 60} s")
                if p.poll() is not None:
                    problems.append(f"the server died during the run (exit status {p.poll()})")
        finally:
            rc = p.poll()
            if rc is None:
                p.send_signal(signal.SIGTERM)
                try:
                    rc = p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    problems.append("the server did not exit within 30 s of SIGTERM (killed)")
                    p.kill()
                    p.wait()
                    rc = "killed"
            fo.seek(0)
            fe.seek(0)
            sout, serr = fo.read(), fe.read()
    raw["server_exit"], raw["server_stdout"], raw["server_stderr"] = rc, sout, serr
    rec["seconds"] = round(time.monotonic() - t1, 2)
    rec["server_exit"] = rc
    if rc != 0:
        problems.append(f"the server exited {rc}, not 0")

    # wrk's totals
    if wj:
        e = wj["errors"]
        rec["requests"] = wj["requests"]
        rec["duration_s"] = wj["duration_us"] / 1e6
        rec["rps"] = wj["requests"] / rec["duration_s"] if wj["duration_us"] > 0 else 0.0
        rec["errors"] = e
        rec["latency_us"] = wj["latency_us"]
        if wj["requests"] <= 0:
            problems.append("wrk completed no request")
        if e["status"]:
            problems.append(f"{e['status']} responses were not 2xx/3xx")
        bad = {k: e[k] for k in ("read", "write", "timeout") if e[k]}
        if not w["close"] and e["connect"]:
            bad["connect"] = e["connect"]
        if bad:
            problems.append("socket errors: " + ", ".join(f"{k} {v}" for k, v in bad.items()))

    # the stats line: exactly one line on stdout
    lines = sout.splitlines()
    rec["stats_line"] = lines[-1] if lines else ""
    if len(lines) != 1 or not lines[0].startswith(stacks + ": "):
        problems.append(f"stdout is not exactly one '{stacks}: ...' line: {sout.strip()[:300]!r}")
    else:
        st = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", lines[0])}
        rec["stats"] = st
        if "allocs" not in st or "frees" not in st or "inuse_bytes" not in st:
            problems.append(f"the stats line lacks allocs/frees/inuse_bytes: {lines[0]}")
        else:
            if st["allocs"] != st["frees"]:
                problems.append(f"allocs {st['allocs']} != frees {st['frees']}")
            if st["inuse_bytes"] != 0:
                problems.append(f"inuse_bytes={st['inuse_bytes']} after the drain")
        if stacks == "gostack":
            for k in ("cached_bytes", "mapped_bytes"):
                if st.get(k) != 0:
                    problems.append(f"{k}={st.get(k)} after flush and reclaim (want 0)")

    # the drain line on stderr: what the server did, checked against the workload
    m = DRAINED_RE.search(serr)
    if not m:
        problems.append("no 'drained:' line on the server's stderr")
    else:
        d = dict(zip(DRAINED_KEYS, map(int, m.groups())))
        rec["server"] = d
        if wj:
            n = wj["requests"]
            if d["requests"] < n:
                problems.append(f"the server served {d['requests']} requests, wrk counted {n}")
            if w["close"] and d["connections"] < n:
                problems.append(f"Connection: close not honoured? {d['connections']} connections for {n} requests")
            if not w["close"] and d["connections"] > 2 * w["conns"]:
                problems.append(f"keep-alive not kept? {d['connections']} connections for {w['conns']} wrk connections")
            if "stack=" in w["path"] and d["restacks"] < n:
                problems.append(f"only {d['restacks']} stack growths for {n} requests")
        if rec.get("stats", {}).get("allocs") is not None and d["requests"]:
            rec["stack_allocs_per_request"] = rec["stats"]["allocs"] / d["requests"]
    rec["problems"] = problems
    return rec, raw


def run_stage(sel, server_bin, wrk, env, out, rounds, duration, wrk_timeout, progress):
    """Runs the selected (workload, stacks) units: rounds outer, then the
    workloads, then the stack sources back to back in a fixed order
    (gostack, malloc, mmap), so every ratio is taken side by side and a noisy
    minute hits one round of each workload rather than every round of one."""
    rawdir = os.path.join(out, "raw", "server")
    os.makedirs(rawdir, exist_ok=True)
    order = {w["name"]: i for i, w in enumerate(WORKLOADS)}
    by_wl = {}
    for wl, s, name in sel:
        by_wl.setdefault(wl, []).append(s)
    wls = sorted(by_wl, key=order.get)
    total = rounds * len(sel)
    progress(f"server stage: {len(sel)} (workload, stacks) pairs x {rounds} rounds = {total} runs of "
             f"{duration} s; {wrk_version(wrk)}; {os.cpu_count()} CPUs shared by wrk (2 threads) and the server")
    runs, failures, k = [], [], 0
    t0 = time.monotonic()
    for r in range(1, rounds + 1):
        for wl in wls:
            for s in sorted(by_wl[wl], key=STACKS.index):
                k += 1
                w = WL[wl]
                name = f"{PREFIX}/{wl}/{s}"
                rec, raw = run_one(server_bin, wrk, env, w, s, duration, wrk_timeout)
                fn = f"{wl}__{s}__r{r}.json"
                raw.update(name=name, round=r, record=rec)
                with open(os.path.join(rawdir, fn), "w") as f:
                    json.dump(raw, f, indent=1)
                rec.update(name=name, workload=wl, stacks=s, round=r, raw=os.path.join("raw", "server", fn))
                runs.append(rec)
                errs = rec.get("errors") or {}
                sock = sum(errs.get(x, 0) for x in ("connect", "read", "write", "timeout"))
                msg = (f"(server {k}/{total}) round {r} {wl} {s}: {rec.get('rps', 0):.0f} req/s"
                       + (f", {sock} socket errors" if sock else "") + f" ({rec['seconds']:.1f}s)")
                if rec["problems"]:
                    msg += " FAILED: " + "; ".join(rec["problems"])
                    failures.append({"name": f"{name} round {r}", "contestant": s,
                                     "error": "; ".join(rec["problems"]),
                                     "stderr": "\n".join(raw.get("server_stderr", "").strip().splitlines()[-5:]),
                                     "command": " ".join(raw.get("wrk_command", raw["server_command"])),
                                     "ld_preload": ""})
                progress(msg)
    return {"config": {"rounds": rounds, "duration_s": duration, "wrk_timeout_s": wrk_timeout,
                       "wrk": wrk, "wrk_version": wrk_version(wrk), "server_bin": server_bin,
                       "workloads": [WL[wl] for wl in wls], "stacks": STACKS,
                       "seconds": round(time.monotonic() - t0, 1)},
            "runs": runs}, failures


# ---- report ----------------------------------------------------------------


def by_key(sd):
    """{(workload, stacks): [run records]} of the runs that produced a rate."""
    idx = {}
    for r in sd["runs"]:
        if r.get("rps") is not None:
            idx.setdefault((r["workload"], r["stacks"]), []).append(r)
    return idx


def ratio_rounds(idx, wl, s):
    """Per-round ratio rps(s) / rps(gostack), over the rounds both have."""
    ref = {r["round"]: r["rps"] for r in idx.get((wl, REF), [])}
    return [r["rps"] / ref[r["round"]] for r in idx.get((wl, s), []) if ref.get(r["round"])]


def summary_lines(sd, fmt_rate, fmt_ratio):
    c = sd["config"]
    idx = by_key(sd)
    wls = [w["name"] for w in c["workloads"]]
    L = ["## HTTP server: requests/s with gostack, malloc'd and mmap'd coroutine stacks\n"]
    L.append("(The `server` rows of the google-benchmark tables are a different thing: Larson's allocator "
             "benchmark in stack sizes.)\n")
    L.append(f"`gostack-http-demo` (examples/http_demo.c: one epoll loop per server thread, one coroutine per "
             f"connection) on 127.0.0.1 under `wrk -t2 -cC -d{c['duration_s']}s --timeout {c['wrk_timeout_s']}s` "
             f"({c['wrk_version']}), with `--stacks gostack|malloc|mmap`. {c['rounds']} rounds, "
             f"each running the three stack sources back to back (gostack, malloc, mmap); cells: median "
             f"requests/s over the rounds, the ratio of medians to gostack, and in brackets the range of "
             f"the per-round ratios. Stage time: {c['seconds']:.0f} s.\n")
    L.append("**Caveat:** wrk and the server share the machine's CPUs (wrk runs 2 threads), so these are "
             "loopback numbers of a saturated machine: a faster server also leaves less CPU to the client, "
             "which compresses the differences. Every run is checked (all responses 2xx, no socket errors "
             "other than connect errors in the connection-per-request workloads, the server's stats line "
             "after SIGTERM shows allocs == frees and inuse_bytes=0, exit status 0).\n")
    L.append("| workload | what | " + " | ".join(STACKS) + " |")
    L.append("|---|---|" + "---:|" * len(STACKS))
    for wl in wls:
        mode, conn = label(wl)
        refm = statistics.median([r["rps"] for r in idx[(wl, REF)]]) if (wl, REF) in idx else None
        cells = []
        for s in STACKS:
            rs = idx.get((wl, s))
            if not rs:
                cells.append("-")
                continue
            m = statistics.median([r["rps"] for r in rs])
            if s == REF:
                cells.append(f"**{fmt_rate(m)}** (ref)")
            elif refm:
                rr = ratio_rounds(idx, wl, s)
                rng = f" [{min(rr):.2f}..{max(rr):.2f}]" if rr else ""
                cells.append(f"{fmt_rate(m)} ({fmt_ratio(m / refm)}{rng})")
            else:
                cells.append(fmt_rate(m))
        short = {"keepalive": "keep-alive", "close": "conn/request", "close64k": "conn/request",
                 "grow64k": "conn/request, stack grown"}[wl.split("_")[0]]
        L.append(f"| `{wl}` | {short}; {conn} | " + " | ".join(cells) + " |")
    L.append("")
    loads = [float(r["loadavg"]) for r in sd["runs"] if r.get("loadavg")]
    if loads:
        L.append(f"1-minute load average before each run: {min(loads):.2f} .. {max(loads):.2f} (the stage itself "
                 f"keeps about 2-3 runnable: wrk and the server; more means other work on the machine).\n")
    L.append("Errors and stack traffic, summed over the rounds: socket errors as wrk counts them "
             "(connect / read / write / timeout), responses that were not 2xx/3xx, and stack allocations per "
             "request served (the server's stats line: allocs / requests, median over the rounds).\n")
    L.append("| workload | " + " | ".join(STACKS) + " |")
    L.append("|---|" + "---|" * len(STACKS))
    for wl in wls:
        cells = []
        for s in STACKS:
            rs = [r for r in sd["runs"] if r["workload"] == wl and r["stacks"] == s]
            if not rs:
                cells.append("-")
                continue
            e = {k: sum((r.get("errors") or {}).get(k, 0) for r in rs)
                 for k in ("connect", "read", "write", "timeout", "status")}
            apr = [r["stack_allocs_per_request"] for r in rs if r.get("stack_allocs_per_request") is not None]
            fails = sum(1 for r in rs if r["problems"])
            cell = f"{e['connect']}/{e['read']}/{e['write']}/{e['timeout']}; non-2xx {e['status']}"
            cell += f"; {statistics.median(apr):.3g} allocs/req" if apr else "; allocs/req ?"
            cells.append(cell)
            if fails:
                cells[-1] += f"; **{fails} FAILED**"
        L.append(f"| `{wl}` | " + " | ".join(cells) + " |")
    L.append("")
    L.append("Workloads:\n")
    for k, v in WL_DESC.items():
        L.append(f"- **{k}**: {v}.")
    L.append("- `cN_tM`: wrk keeps N connections open (or in flight), the server runs M threads (epoll loops); "
             "with 8 threads on this machine the server is oversubscribed.")
    L.append("")
    L.append("Figure: [server.png](server.png) ([svg](server.svg)). Raw per-run data (wrk's output and totals, the "
             "server's stderr and stats line, the commands): `raw/server/<workload>__<stacks>__r<round>.json`; "
             "the records are also under `server` in data.json.\n")
    return L
