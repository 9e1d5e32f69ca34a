#!/usr/bin/python3
"""Runs gostack_bench once per (workload, threads, contestant), each in its own
process (malloc peers under LD_PRELOAD, everything else in a plain process),
then the server stage (server.py: gostack-http-demo under wrk, benchmark names
http_server/<workload>/<stacks>), then writes all.json, data.json, context.md,
summary.md and the plots.

Called by harness/run; see harness/README.md. Needs only the Python standard
library plus matplotlib/numpy/scipy (Debian: python3-matplotlib, python3-scipy).
"""

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import re
import shlex
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

WORKLOADS = ["pair_2KiB", "pair_4KiB", "pair_8KiB", "pair_16KiB", "pair_64KiB", "pair_256KiB",
             "pair_1024KiB", "hold", "handoff", "server", "spawn", "churn"]
CONTESTANTS = ["gostack-lockfree", "gostack-mutex", "gostack-lockfree-nocache", "gostack-mutex-nocache",
               "gostack-lockfree-nopercpu",
               "glibc", "jemalloc", "tcmalloc", "mimalloc", "mmap", "boost-pooled", "boost-protected"]
PRELOAD_SONAME = {"jemalloc": "libjemalloc.so.2", "tcmalloc": "libtcmalloc_minimal.so.4",
                  "mimalloc": "libmimalloc.so.2"}
DEBIAN_PKGS = ["libc6", "gcc-12", "g++-12", "cmake", "libbenchmark-dev", "libbenchmark-tools",
               "libboost-context1.74-dev", "libck-dev", "liburcu-dev", "libjemalloc2", "libtcmalloc-minimal4", "libmimalloc2.0",
               "python3-matplotlib", "wrk"]
NAME_RE = re.compile(r"^(?P<wl>[^/]+)/(?P<c>[^/]+)/real_time/threads:(?P<t>\d+)$")
COUNTERS = ["items_per_second", "lat_alloc_p50_ns", "lat_alloc_p99_ns", "lat_alloc_p999_ns",
            "lat_free_p50_ns", "lat_free_p99_ns", "lat_free_p999_ns", "lat_samples",
            "rss_peak_bytes", "rss_live_bytes", "rss_freed_bytes", "rss_after_bytes",
            "maps_live", "maps_freed", "maps_after", "threads_per_second", "stack_allocs",
            "gs_mapped_live_bytes", "gs_inuse_live_bytes", "gs_reclaimed_bytes",
            "gs_mapped_after_reclaim_bytes"]

T0 = time.monotonic()


def progress(msg):
    el = time.monotonic() - T0
    print(f"[{int(el // 60):3d}m{int(el % 60):02d}s] {msg}", file=sys.stderr, flush=True)


def sh(cmd, **kw):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw).stdout.strip()
    except Exception as e:  # noqa: BLE001 - context gathering must not stop the run
        return f"(unavailable: {e})"


def find_preload(soname):
    """Path of a shared library by soname, from the ldconfig cache."""
    found = []
    for line in sh(["/sbin/ldconfig", "-p"]).splitlines():
        line = line.strip()
        if line.startswith(soname + " ") and "=>" in line:
            found.append(line.split("=>", 1)[1].strip())
    for d in ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib", "/usr/local/lib"]:
        found.append(os.path.join(d, soname))
    for p in found:
        if os.path.exists(p):
            return p
    return None


def plain_env():
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    for k in list(env):
        if k.startswith("GOSTACK_"):  # the default allocator's knobs must not leak in
            env.pop(k)
    return env


def fmt_rate(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.3g}"


def fmt_bytes(v):
    if v is None:
        return "n/a"
    neg = v < 0
    v = abs(v)
    for unit, div in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if v >= div:
            s = f"{v / div:.3g} {unit}"
            break
    else:
        s = f"{v:.0f} B"
    return ("-" if neg else "") + s


def fmt_ratio(r):
    return f"{r:.2f}x" if r >= 0.01 else f"{r:.1e}x"


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--report-only":
        # Redo context.md, summary.md and the plots of a finished run.
        out = os.path.abspath(sys.argv[2])
        with open(os.path.join(out, "data.json")) as f:
            report(out, json.load(f))
        return
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--build-dir", default="")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--filter", default="")
    ap.add_argument("--reps", type=int, default=0)
    ap.add_argument("--min-time", type=float, default=0.0,
                    help="google-benchmark min time of one run at <= 8 threads, seconds")
    ap.add_argument("--min-time-per-thread", type=float, default=-1.0,
                    help="min time grows to this times the thread count above 8 threads: every run at 64 "
                         "threads pays a few ms of thread wake-ups at its barriers, which must stay small")
    ap.add_argument("--threads", default="", help="comma-separated thread counts (default: all; --quick: 1,2,8,64)")
    ap.add_argument("--timeout", type=float, default=600.0, help="per process, seconds")
    ap.add_argument("--cmdline", default="")
    ap.add_argument("--server-bin", default="", help="gostack-http-demo for the server stage")
    ap.add_argument("--wrk", default="", help="wrk for the server stage (default: wrk on PATH)")
    ap.add_argument("--no-server", action="store_true", help="skip the server stage")
    ap.add_argument("--server-rounds", type=int, default=0, help="server stage rounds (default 3, --quick 2)")
    ap.add_argument("--server-duration", type=int, default=0,
                    help="whole seconds of one wrk run (default 3, --quick 1)")
    a = ap.parse_args()
    load_at_start = open("/proc/loadavg").read().strip()

    reps = a.reps or (2 if a.quick else 5)
    min_time = a.min_time or (0.01 if a.quick else 0.03)
    mt_per_thread = a.min_time_per_thread if a.min_time_per_thread >= 0 else (0.001 if a.quick else 0.003)
    threads_sel = {int(x) for x in a.threads.split(",") if x.strip()} if a.threads else (
        {1, 2, 8, 64} if a.quick else set())
    out = os.path.abspath(a.out)
    raw = os.path.join(out, "raw")
    os.makedirs(raw, exist_ok=True)

    info = json.loads(subprocess.run([a.bin, "--harness-info"], capture_output=True, text=True,
                                     env=plain_env(), check=True).stdout)
    listed = subprocess.run([a.bin, "--benchmark_list_tests=true"], capture_output=True, text=True,
                            env=plain_env(), check=True).stdout.split()
    flt = re.compile(a.filter) if a.filter else None
    units = []
    for name in listed:
        m = NAME_RE.match(name)
        if not m:
            continue
        if flt and not flt.search(name):
            continue
        if threads_sel and int(m["t"]) not in threads_sel:
            continue
        units.append((m["wl"], int(m["t"]), m["c"], name))
    import server  # noqa: E402 (harness/server.py, next to this file)
    srv_units = [] if a.no_server else server.units(flt)
    if not units and not srv_units:
        sys.exit(f"driver: no benchmark matches --filter {a.filter!r}")
    srv_rounds = a.server_rounds or (2 if a.quick else 3)
    srv_duration = a.server_duration or (1 if a.quick else 3)
    wrk = a.wrk or shutil.which("wrk") or ""
    if srv_units:
        # Fail before the long google-benchmark stage, not after it.
        if not a.server_bin or not os.access(a.server_bin, os.X_OK):
            sys.exit(f"driver: the server stage needs gostack-http-demo (--server-bin {a.server_bin!r}: not "
                     f"executable; build it with -DGOSTACK_BUILD_EXAMPLES=ON), or pass --no-server, or a "
                     f"--filter that excludes {server.PREFIX}/")
        if not wrk or not os.access(wrk, os.X_OK):
            sys.exit("driver: the server stage needs wrk (Debian package wrk), or pass --no-server")

    preload = {}
    for c, so in PRELOAD_SONAME.items():
        if any(u[2] == c for u in units):
            p = find_preload(so)
            if not p:
                sys.exit(f"driver: {so} not found (install the Debian package for {c})")
            preload[c] = p

    unavailable = {c["name"]: c["note"] for c in info["contestants"] if not c["available"]}
    for c, why in unavailable.items():
        progress(f"note: {c} skipped: {why}")

    # Side by side: each (workload, threads) step runs every contestant back
    # to back, one repetition per process, `reps` rounds, each round starting
    # at the next contestant. One process per repetition because something
    # drawn per process (not found: it stays with ASLR off) can move a result
    # by a factor that holds for the whole process: the same cached path of
    # gostack measured 1.45x apart in two processes of one run; its 256 KiB
    # pair anywhere from 45M to 88M items/s from one process to the next,
    # the repetitions inside one process within 1% of each other. Repetitions
    # inside one process would all share its draw; these sample it, and
    # rounds interleave the contestants over the step's time as well.
    wl_order = {w: i for i, w in enumerate(WORKLOADS)}
    c_order = {c: i for i, c in enumerate(CONTESTANTS)}
    steps = {}
    for u in units:
        steps.setdefault((wl_order.get(u[0], 99), u[0], u[1]), []).append(u)
    plan = []   # (unit, repetition index), in run order
    for i, key in enumerate(sorted(steps)):
        us = sorted(steps[key], key=lambda u: c_order.get(u[2], 99))
        for k in range(reps):
            r = (i + k) % len(us)
            plan.extend((u, k) for u in us[r:] + us[:r])

    def mt_for(t):
        return round(max(min_time, mt_per_thread * t if t > 8 else 0.0), 4)

    if plan:
        progress(f"{len(plan)} processes: {len(steps)} (workload, threads) steps, {len(units)} benchmarks, "
                 f"{reps} repetitions each in a process of its own, min_time {min_time}s (at 64 threads "
                 f"{mt_for(64)}s); {os.cpu_count()} CPUs: runs with more threads than CPUs are oversubscribed")
    failures = []
    results = []
    by_unit = {}
    for n, ((wl, t, c, name), k) in enumerate(plan, 1):
        res = by_unit.get(name)
        if res is None:
            res = by_unit[name] = {"name": name, "workload": wl, "threads": t, "contestant": c, "runs": [],
                                   "error": None, "raw": [], "seconds": 0.0, "attempts": 0,
                                   "min_time": mt_for(t)}
            results.append(res)
        if res["error"]:
            continue   # an earlier repetition failed: reported once, not run again
        fn = f"{wl}__{c}__t{t:02d}__r{k}.json"
        env = plain_env()
        if c in preload:
            env["LD_PRELOAD"] = preload[c]
        cmd = [a.bin, f"--benchmark_filter=^{name}$", "--benchmark_repetitions=1",
               f"--benchmark_min_time={mt_for(t)}", f"--benchmark_out={os.path.join(raw, fn)}",
               "--benchmark_out_format=json"]
        attempts = 0
        while True:
            attempts += 1
            runs, err, rc, se, dt = run_one(cmd, env, a.timeout, os.path.join(raw, fn))
            # google-benchmark fixes the iteration count of a run from its
            # probe runs; a probe stalled by a noisy neighbour can pick a
            # count whose run then lasts a fraction of min_time and measures
            # mostly barrier wake-ups. Detect it and run the process again.
            walls = [r["real_time"] * r["iterations"] * 1e-9 for r in runs
                     if r.get("real_time") and r.get("iterations")]
            if err or not walls or min(walls) >= 0.25 * mt_for(t) or attempts >= 3:
                break
            progress(f"({n}/{len(plan)}) {name}: a run lasted {min(walls) * 1e3:.1f} ms < 1/4 of "
                     f"min_time (iteration count chosen from an unrepresentative probe run): running it again")
        res["seconds"] = round(res["seconds"] + dt, 2)
        res["attempts"] = max(res["attempts"], attempts)
        res["raw"].append(os.path.join("raw", fn))
        if err:
            res["error"] = err
            tail = "\n".join((se or "").strip().splitlines()[-5:])
            failures.append({"name": name, "contestant": c, "error": err, "stderr": tail,
                             "command": " ".join(shlex.quote(x) for x in cmd),
                             "ld_preload": env.get("LD_PRELOAD", "")})
            progress(f"({n}/{len(plan)}) {name}: FAILED: {err}")
        else:
            res["runs"].extend(runs)
            ips = median([r["items_per_second"] for r in runs])
            progress(f"({n}/{len(plan)}) {wl} threads:{t} {c} #{k + 1}: {fmt_rate(ips)} items/s ({dt:.1f}s)")

    # The server stage, after the google-benchmark suite.
    server_data = None
    if srv_units:
        server_data, srv_failures = server.run_stage(srv_units, os.path.abspath(a.server_bin), wrk, plain_env(),
                                                     out, srv_rounds, srv_duration, 10, progress)
        failures.extend(srv_failures)
    elif not a.no_server and a.filter:
        progress(f"server stage skipped: --filter {a.filter!r} matches no {server.PREFIX}/<workload>/<stacks>")

    # all.json: every process's benchmarks in one google-benchmark document
    # (for harness/compare); the context is the plain process's.
    merged, ctx = [], None
    for r in results:
        for path in r["raw"]:
            try:
                with open(os.path.join(out, path)) as f:
                    doc = json.load(f)
            except (OSError, ValueError):
                continue
            if ctx is None or doc["context"].get("gostack_bench.active_malloc") == "glibc" and \
                    ctx.get("gostack_bench.active_malloc") != "glibc":
                ctx = doc["context"]
            merged.extend(doc["benchmarks"])
    with open(os.path.join(out, "all.json"), "w") as f:
        json.dump({"context": ctx or {}, "benchmarks": merged}, f, separators=(",", ":"))

    meta = gather_context(a, info, reps, min_time, mt_per_thread, threads_sel, preload, unavailable)
    meta["load_at_start"] = load_at_start
    if server_data:
        sc = server_data["config"]
        meta["server_stage"] = (f"{len(srv_units)} (workload, stacks) pairs: {', '.join(w['name'] for w in sc['workloads'])} "
                                f"x {', '.join(sorted({u[1] for u in srv_units}, key=server.STACKS.index))}; "
                                f"{sc['rounds']} rounds, wrk -d{sc['duration_s']}s --timeout {sc['wrk_timeout_s']}s "
                                f"({sc['wrk_version']}); server `{sc['server_bin']}`; {sc['seconds']:.0f} s")
    else:
        meta["server_stage"] = ("skipped (--no-server)" if a.no_server else
                                "skipped (--filter selects none of it)")
    depth = run_depth_check(a, info, out)
    if depth is not None and not depth.get("ok"):
        failures.append({"name": "depth_check", "contestant": "gostack-lockfree",
                         "error": "the depth profile does not match the depths the spawn coroutines wrote "
                                  "(depth.json)", "stderr": depth.get("stderr", "")})
    data = {"meta": meta, "results": results, "failures": failures}
    if server_data:
        data["server"] = server_data
    if depth is not None:
        data["depth"] = depth
    with open(os.path.join(out, "data.json"), "w") as f:
        json.dump(data, f, separators=(",", ":"))
    report(out, data)
    if failures:
        progress(f"{len(failures)} FAILED (see summary.md):")
        for fl in failures:
            progress(f"  {fl['name']}: {fl['error']}")
        sys.exit(1)
    progress(f"done: {out}")


def run_depth_check(a, info, out):
    """The spawn workload once with gostack's depth profile on every stack
    (gostack_bench --depth-check): its histograms against the depths the
    coroutines wrote. None when the binary predates the profile."""
    if not info.get("depth_check"):
        return None
    path = os.path.join(out, "depth.json")
    progress("depth check: spawn with the depth profile on (config.profile 1)")
    p = subprocess.run([a.bin, "--depth-check", path], capture_output=True, text=True, env=plain_env(), timeout=300)
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        doc = {"ok": False, "classes": []}
    doc["ok"] = bool(doc.get("ok")) and p.returncode == 0
    doc["stderr"] = p.stderr[-4000:]
    for line in p.stderr.splitlines():
        if line.startswith("depth-check:"):
            progress(line)
    return doc


def report(out, data):
    """context.md, summary.md and the plots, from data.json's content."""
    write_context_md(out, data["meta"])
    write_summary_md(out, data)
    progress("plots")
    sys.path.insert(0, HERE)
    import plot  # noqa: E402
    made = plot.make_all(out, data)
    progress(f"{len(made)} plots written")


def run_one(cmd, env, timeout, out_json):
    """Runs one benchmark process; returns (runs, error, exit status, stderr, seconds)."""
    t1 = time.monotonic()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        rc, se = p.returncode, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, se = "timeout", e.stderr or ""
        if isinstance(se, bytes):
            se = se.decode(errors="replace")
    dt = time.monotonic() - t1
    runs, err = [], None
    try:
        with open(out_json) as f:
            doc = json.load(f)
        for b in doc["benchmarks"]:
            if b.get("error_occurred"):
                err = b.get("error_message", "error")
            elif b.get("run_type") == "iteration":
                runs.append({k2: b.get(k2) for k2 in COUNTERS + ["real_time", "iterations", "time_unit"]})
    except (OSError, ValueError, KeyError) as e:
        err = err or f"no JSON output ({e})"
    if rc != 0 and not err:
        err = f"exit status {rc}"
    return runs, err, rc, se, dt


def gather_context(a, info, reps, min_time, mt_per_thread, threads_sel, preload, unavailable):
    lscpu = sh(["lscpu"])
    model = re.search(r"Model name:\s*(.*)", lscpu)
    gov_path = "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"
    governor = open(gov_path).read().strip() if os.path.exists(gov_path) else "n/a (no cpufreq in this VM)"

    def rd(p):
        try:
            return open(p).read().strip()
        except OSError:
            return "n/a"

    cache = {}
    if a.build_dir and os.path.exists(os.path.join(a.build_dir, "CMakeCache.txt")):
        for line in open(os.path.join(a.build_dir, "CMakeCache.txt")):
            m = re.match(r"^(CMAKE_BUILD_TYPE|CMAKE_C_COMPILER|CMAKE_CXX_COMPILER|CMAKE_C_FLAGS|"
                         r"CMAKE_CXX_FLAGS|CMAKE_C_FLAGS_RELEASE|CMAKE_CXX_FLAGS_RELEASE|gostack_SOURCE_DIR|"
                         r"CMAKE_HOME_DIRECTORY)(:[A-Z]+)?=(.*)$", line)
            if m:
                cache[m[1]] = m[3]
    compile_cmds = {}
    cc_path = os.path.join(a.build_dir, "compile_commands.json") if a.build_dir else ""
    if cc_path and os.path.exists(cc_path):
        for e in json.load(open(cc_path)):
            f = e.get("file", "")
            key = "harness" if "/harness/" in f else "library"
            if key not in compile_cmds:
                compile_cmds[key] = e.get("command") or " ".join(e.get("arguments", []))
    versions = {}
    for p in DEBIAN_PKGS:
        v = sh(["dpkg-query", "-W", "-f=${Version}", p])
        versions[p] = v if v and "no packages" not in v else "not installed"
    src = cache.get("gostack_SOURCE_DIR") or a.repo
    snap = os.path.join(src, ".gostack-snapshot")
    if os.path.exists(snap):
        commit = open(snap).read().strip()
        dirty = "(snapshot)"
        source_note = (f"built from `git archive` of commit {commit} in {src} (harness/ copied from the work "
                       f"tree: harness/run --snapshot)")
    else:
        commit = sh(["git", "-C", src, "rev-parse", "HEAD"])
        if not re.fullmatch(r"[0-9a-f]{40}", commit or ""):
            commit = "none (no commit yet)"
        dirty = sh(["git", "-C", src, "status", "--porcelain"])
        n = len([x for x in dirty.splitlines() if x.strip()]) if not dirty.startswith("(") else "?"
        source_note = f"built from the work tree {src}: HEAD {commit} plus {n} uncommitted/untracked paths"
    cc_ver = sh([cache.get("CMAKE_C_COMPILER", "cc"), "--version"]).splitlines()
    cxx_ver = sh([cache.get("CMAKE_CXX_COMPILER", "c++"), "--version"]).splitlines()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "host": socket.gethostname(),
        "cpu_model": model[1].strip() if model else platform.processor(),
        "cpus": os.cpu_count(),
        "lscpu": lscpu,
        "kernel": platform.release(),
        "kernel_full": sh(["uname", "-a"]),
        "os": rd("/etc/debian_version"),
        "governor": governor,
        "thp": rd("/sys/kernel/mm/transparent_hugepage/enabled"),
        "max_map_count": rd("/proc/sys/vm/max_map_count"),
        "clocksource": rd("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
        "mem_total": (re.search(r"MemTotal:\s*(\d+)", rd("/proc/meminfo")) or [None, "?"])[1],
        "load_at_start": rd("/proc/loadavg"),
        "cmake_cache": cache,
        "c_compiler": cc_ver[0] if cc_ver else "?",
        "cxx_compiler": cxx_ver[0] if cxx_ver else "?",
        "compile_commands": compile_cmds,
        "versions": versions,
        "gostack_version": info.get("gostack_version"),
        "gostack_commit": commit,
        "source_note": source_note,
        "command": a.cmdline or " ".join(sys.argv),
        "quick": a.quick,
        "filter": a.filter,
        "repetitions": reps,
        "min_time": min_time,
        "min_time_per_thread": mt_per_thread,
        "threads_selected": sorted(threads_sel) if threads_sel else "all",
        "load_at_end": rd("/proc/loadavg"),
        "clock_overhead_ns": info.get("clock_overhead_ns"),
        "page_fault_us": info.get("page_fault_us"),
        "hwm_resettable": info.get("hwm_resettable"),
        "params": info.get("params"),
        "preload": preload,
        "contestants": info.get("contestants"),
        "unavailable": unavailable,
        "binary": a.bin,
    }


def write_context_md(out, m):
    L = []
    L.append(f"# Benchmark context: {m['date']}, {m['host']}\n")
    L.append(f"Command: `{m['command']}`\n")
    L.append("| | |\n|---|---|")
    rows = [
        ("CPU", f"{m['cpu_model']}, {m['cpus']} logical CPUs"),
        ("Memory", f"{int(m['mem_total']) // 1024} MiB" if str(m['mem_total']).isdigit() else m['mem_total']),
        ("Kernel", m["kernel_full"]),
        ("OS", f"Debian {m['os']}"),
        ("CPU governor", m["governor"]),
        ("Transparent huge pages", m["thp"]),
        ("vm.max_map_count", m["max_map_count"]),
        ("Clock source", m["clocksource"]),
        ("Load average at start", m["load_at_start"]),
        ("First-touch page fault", f"{m['page_fault_us']} µs per 4 KiB page (measured: mmap 16 MiB, write a byte per page)"),
        ("Latency clock", f"std::chrono::steady_clock; {m['clock_overhead_ns']} ns back-to-back read overhead, subtracted from every sample"),
        ("Peak RSS", "max(VmHWM reset per run via /proc/self/clear_refs, every RSS read of the run)" if m["hwm_resettable"] else "VmHWM (could NOT be reset: peak is per process)"),
        ("C compiler", m["c_compiler"]),
        ("C++ compiler", m["cxx_compiler"]),
        ("Build type", m["cmake_cache"].get("CMAKE_BUILD_TYPE", "?")),
        ("C flags", (m["cmake_cache"].get("CMAKE_C_FLAGS", "") + " " + m["cmake_cache"].get("CMAKE_C_FLAGS_RELEASE", "")).strip()),
        ("C++ flags", (m["cmake_cache"].get("CMAKE_CXX_FLAGS", "") + " " + m["cmake_cache"].get("CMAKE_CXX_FLAGS_RELEASE", "")).strip()),
        ("gostack", f"{m['gostack_version']}, commit {m['gostack_commit']}; {m['source_note']}"),
        ("Repetitions", f"{m['repetitions']} per benchmark, each in a process of its own (the contestants of a "
                        f"step interleaved round by round); google-benchmark min time {m['min_time']} s per run, "
                        f"above 8 threads {m['min_time_per_thread']} s x threads" + (" (--quick)" if m["quick"] else "")),
        ("Thread counts", m["threads_selected"]),
        ("Load average at end", m["load_at_end"]),
        ("Filter", m["filter"] or "(none)"),
        ("Server stage (HTTP)", m.get("server_stage", "n/a")),
    ]
    for k, v in rows:
        L.append(f"| {k} | {str(v).replace('|', '/')} |")
    L.append("\n## Library versions (Debian packages)\n")
    L.append("| package | version |\n|---|---|")
    for p, v in m["versions"].items():
        L.append(f"| {p} | {v} |")
    L.append("\nMalloc replacements run as `LD_PRELOAD` of the same binary, one process per benchmark:\n")
    for c, p in m["preload"].items():
        L.append(f"- {c}: `{p}`")
    L.append("\ngostack, glibc, mmap and the Boost allocators run in processes without `LD_PRELOAD`; "
             "before every run the binary checks which malloc serves the process and refuses a mismatch.\n")
    if m["compile_commands"]:
        L.append("## Compile commands (one file each, from compile_commands.json)\n")
        for k, v in m["compile_commands"].items():
            L.append(f"- {k}: `{v}`")
        L.append("")
    L.append("## Contestants\n")
    L.append("| contestant | available | note |\n|---|---|---|")
    for c in m["contestants"]:
        L.append(f"| {c['name']} | {'yes' if c['available'] else 'no'} | {c['note']} |")
    L.append("\n## Workload parameters\n")
    L.append("```\n" + json.dumps(m["params"], indent=1) + "\n```\n")
    L.append("## lscpu\n\n```\n" + m["lscpu"] + "\n```\n")
    with open(os.path.join(out, "context.md"), "w") as f:
        f.write("\n".join(L))


def index_results(data):
    idx = {}
    for r in data["results"]:
        if r["runs"] and not r["error"]:
            idx[(r["workload"], r["threads"], r["contestant"])] = r
    return idx


def vals(r, key):
    return [x[key] for x in r["runs"] if x.get(key) is not None] if r else []


def short_reps(r):
    """True when a result's repetitions stayed far below min_time even after retries."""
    mt = r.get("min_time")
    walls = [x["real_time"] * x["iterations"] * 1e-9 for x in r["runs"] if x.get("real_time") and x.get("iterations")]
    return bool(mt and walls and min(walls) < 0.25 * mt)


def reference_for(idx, wl, t):
    for ref in ("gostack-lockfree", "gostack-mutex"):
        if (wl, t, ref) in idx:
            return ref
    return None


def utest(a, b):
    try:
        from scipy.stats import mannwhitneyu
    except ImportError:
        return None
    if len(a) < 2 or len(b) < 2:
        return None
    try:
        return float(mannwhitneyu(a, b, alternative="two-sided").pvalue)
    except ValueError:
        return None


WL_DESC = {
    "pair": "alloc, touch one word, free; one size per row",
    "hold": "each thread allocates 128 stacks (2/4/8/16 KiB cycling), touches one word of each, frees them all (Hoard threadtest)",
    "handoff": "even threads allocate batches of 32 stacks (2..16 KiB), the next odd thread frees them (xmalloc-test); needs 2 threads",
    "server": "Larson: 128 slots per thread, random slot replaced by a random 2..32 KiB stack, 1024 per round, each round on a new thread",
    "spawn": "Go newproc1: descriptors reused with their 8 KiB stacks (gfget/gfput); 1 in 8 grows 8->16->32 KiB and gives it back at gfput; each coroutine runs on its stack (fcontext), writes 2 KiB (12 KiB if grown), parks; 16 live per thread",
    "churn": "a new thread allocates 64 stacks (2..16 KiB), frees half, exits; its parent frees the rest (mimalloc mleak)",
}


def write_summary_md(out, data):
    m = data["meta"]
    idx = index_results(data)
    L = [f"# gostack benchmark summary: {m['date']}, {m['host']}\n"]
    L.append(f"{m['cpu_model']}, {m['cpus']} CPUs, Linux {m['kernel']}, {m['c_compiler']}; gostack "
             f"{m['gostack_version']} commit {m['gostack_commit']}. Full context: [context.md](context.md). "
             f"Command: `{m['command']}`.\n")
    if idx:
        summary_gbench(L, m, data, idx)
    if data.get("server"):
        import server  # noqa: E402
        L.extend(server.summary_lines(data["server"], fmt_rate, fmt_ratio))
    elif m.get("server_stage"):
        L.append(f"Server stage (HTTP requests/s with gostack, malloc'd and mmap'd stacks): {m['server_stage']}.\n")
    if data.get("depth"):
        d = data["depth"]
        L.append("## Depth profile check\n")
        L.append(f"The spawn workload once ({d.get('spawns')} coroutines, one thread) on a gostack-lockfree allocator "
                 f"with every stack sampled (`config.profile` 1): the measured deepest use per stack size against "
                 f"what the coroutines wrote ([depth.png](depth.png), `depth.json`): "
                 f"**{'match' if d.get('ok') else 'MISMATCH'}**.\n")
        L.append("| stack size | samples | p50 | p99 | max | written | |")
        L.append("|---:|---:|---:|---:|---:|---|---|")
        for c in d.get("classes", []):
            L.append(f"| {c['size'] // 1024} KiB | {c['samples']} | {c['p50']} B | {c['p99']} B | {c['max']} B | "
                     f"{c['written_lo']}..{c['written_hi']} B ({c['what']}) | {'ok' if c['ok'] else 'MISMATCH'} |")
        L.append("")
    L.append("## Files\n")
    L.append("- `raw/`: the google-benchmark JSON of every process; `all.json`: all of them in one document "
             "(use `harness/compare`); `data.json`: what the tables and plots are made from.")
    L.append("- Plots (PNG and SVG): `throughput_<workload>`, `ratio`, `latency_<workload>`, `memory_<workload>`"
             + (", `server`" if data.get("server") else "") + ".\n")
    if data["failures"]:
        L.append("## FAILURES\n")
        for fl in data["failures"]:
            L.append(f"- `{fl['name']}`: {fl['error']}")
            if fl["stderr"]:
                L.append("  ```\n  " + fl["stderr"].replace("\n", "\n  ") + "\n  ```")
        L.append("")
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(L))


def summary_gbench(L, m, data, idx):
    """The google-benchmark part of summary.md, appended to L."""
    present_c = [c for c in CONTESTANTS if any(k[2] == c for k in idx)]
    extra_c = sorted({k[2] for k in idx} - set(CONTESTANTS))
    present_c += extra_c
    wls = [w for w in WORKLOADS if any(k[0] == w for k in idx)] + sorted({k[0] for k in idx} - set(WORKLOADS))
    threads_all = sorted({k[1] for k in idx})
    L.append(f"**Oversubscription:** this machine has {m['cpus']} CPUs; every run with more than {m['cpus']} threads "
             f"is oversubscribed (threads time-share the CPUs, and a thread can be preempted inside an allocator "
             f"critical section). Thread counts run: {', '.join(map(str, threads_all)) or 'none'}.\n")
    L.append(f"Throughput is `items_per_second` from google-benchmark with `UseRealTime()`: items (stacks allocated "
             f"and freed; for spawn, coroutines started and finished) of all threads over the wall time of the "
             f"concurrent phase. Each cell is the median of {m['repetitions']} repetitions, each in a process of its own"
             f"{' (--quick: few repetitions, short runs; treat as indicative only)' if m['quick'] else ''}; "
             f"the ratio is to the reference (gostack-lockfree, or gostack-mutex while the lock-free backend "
             f"is absent). " + (
                 "`~` marks a ratio whose difference from the reference is not significant "
                 "(two-sided Mann-Whitney U over the repetitions, p >= 0.05, the test compare.py uses).\n"
                 if m["repetitions"] >= 4 else
                 f"With {m['repetitions']} repetitions no difference can reach significance in a U test "
                 "(that needs at least 4 a side): no significance marks.\n"))
    if m["unavailable"]:
        L.append("**Skipped contestants:**\n")
        for c, why in m["unavailable"].items():
            L.append(f"- `{c}`: {why}. It is picked up automatically once `gostack_allocator_new` succeeds.")
        L.append("")
    L.append("- `boost-pooled` is not thread-safe, so it is not run in `handoff` (frees happen on another thread "
             "while the owner allocates); in `server` and `churn` its pools move with the slots, used by one thread at a time.")
    L.append("- `handoff` needs a producer and a consumer: its smallest run has 2 threads, shown in the 1-thread table.")
    shorts = [r["name"] for r in data["results"] if r["runs"] and not r["error"] and short_reps(r)]
    if shorts:
        L.append(f"- `†`: google-benchmark chose an iteration count from a probe run that was slower than the "
                 f"runs that followed (noisy neighbour, or a slow first iteration), so the repetitions lasted "
                 f"under 1/4 of the min time even after 3 attempts; these {len(shorts)} of {len(data['results'])} "
                 f"results are less reliable: {', '.join('`' + n.replace('/real_time', '') + '`' for n in shorts)}.")
    L.append(f"- Load average at start / end: {m['load_at_start']} / {m.get('load_at_end', '?')} "
             f"(other work on the machine during the run adds noise).")
    if m["page_fault_us"] and m["page_fault_us"] > 2:
        L.append(f"- Page faults on this machine are slow ({m['page_fault_us']} µs for a first touch, measured), so "
                 f"contestants that return memory to the OS and fault it back (mmap, boost-protected, large sizes) "
                 f"pay far more here than on bare metal.")
    L.append("")

    # With n repetitions a side the smallest two-sided U-test p is 2/C(2n, n):
    # below 0.05 only from n = 4 on.
    can_test = m["repetitions"] >= 4
    for label, want in (("1 thread", 1), ("64 threads", 64)):
        L.append(f"## Throughput at {label}\n")
        L.append("| workload | threads | " + " | ".join(present_c) + " |")
        L.append("|---|---:|" + "---:|" * len(present_c))
        any_row = False
        for wl in wls:
            ts = sorted({k[1] for k in idx if k[0] == wl})
            if not ts:
                continue
            t = want if want in ts else (min(ts) if want == 1 and min(ts) <= 2 else None)
            if t is None:
                continue
            ref = reference_for(idx, wl, t)
            refv = vals(idx.get((wl, t, ref)), "items_per_second")
            refm = median(refv)
            cells = []
            for c in present_c:
                r = idx.get((wl, t, c))
                v = vals(r, "items_per_second")
                if not v:
                    cells.append("-")
                    continue
                mv = median(v)
                dag = "†" if short_reps(r) else ""
                if refm and c != ref:
                    p = utest(v, refv) if can_test else None
                    mark = "~" if p is not None and p >= 0.05 else ""
                    cells.append(f"{fmt_rate(mv)}{dag} ({mark}{fmt_ratio(mv / refm)})")
                elif c == ref:
                    cells.append(f"**{fmt_rate(mv)}**{dag} (ref)")
                else:
                    cells.append(fmt_rate(mv) + dag)
            L.append(f"| {wl} | {t} | " + " | ".join(cells) + " |")
            any_row = True
        if not any_row:
            L.append("| (no runs at this thread count) | | " + " | " * len(present_c))
        L.append("")

    # Memory and latency at the largest thread count run.
    tmax = max(threads_all) if threads_all else None
    if tmax:
        L.append(f"## Memory at {tmax} threads (median over repetitions)\n")
        L.append("Peak = VmHWM during the run (reset at its start), and at least every RSS read; after = RSS once every stack is freed, caches flushed, "
                 "gostack_allocator_reclaim called (gostack) and Boost pools destroyed; both relative to the "
                 "process's RSS at start. maps = lines of /proc/self/maps while the workload's live set is held "
                 "(hold: 128 stacks per thread; server: the slots; spawn: the free list and window).\n")
        L.append("| workload | " + " | ".join(present_c) + " |")
        L.append("|---|" + "---|" * len(present_c))
        for wl in wls:
            cells = []
            for c in present_c:
                r = idx.get((wl, tmax, c))
                if not r:
                    cells.append("-")
                    continue
                cells.append(f"{fmt_bytes(median(vals(r, 'rss_peak_bytes')))} / {fmt_bytes(median(vals(r, 'rss_after_bytes')))}"
                             f" / {median(vals(r, 'maps_live')):.0f} maps")
            if any(x != "-" for x in cells):
                L.append(f"| {wl} | " + " | ".join(cells) + " |")
        L.append("\nCells: peak RSS / RSS after free / mappings.\n")
        L.append(f"## Latency of one operation at {tmax} threads (ns, sampled 1 in 64, median over repetitions)\n")
        L.append("| workload | " + " | ".join(present_c) + " |")
        L.append("|---|" + "---|" * len(present_c))
        for wl in wls:
            cells = []
            for c in present_c:
                r = idx.get((wl, tmax, c))
                if not r:
                    cells.append("-")
                    continue
                cells.append("/".join(f"{median(vals(r, k)):.0f}" for k in
                                      ("lat_alloc_p50_ns", "lat_alloc_p99_ns", "lat_alloc_p999_ns")))
            if any(x != "-" for x in cells):
                L.append(f"| {wl} | " + " | ".join(cells) + " |")
        L.append("\nCells: alloc p50/p99/p99.9 (free latencies are in data.json and the latency plots).\n")

    L.append("## Workloads\n")
    for k, v in WL_DESC.items():
        L.append(f"- **{k}**: {v}.")
    L.append("")


if __name__ == "__main__":
    main()
