#!/usr/bin/env bash
# harness/smoke.sh [BUILD_DIR]: smoke test of the benchmark harness for ctest.
# Runs `harness/run --quick` on a tiny subset with an already-built tree (no
# install, no rebuild) and checks that the raw JSON, summary.md and at least
# one PNG were produced and that no benchmark failed (including gostack's
# stats balance checks). When wrk is installed and the build tree holds
# gostack-http-demo, it also runs one round of one server-stage workload
# (keep-alive, 1 s per stack source: about 4 s) and checks server.png and its
# records in data.json; and the depth profile check (gostack_bench
# --depth-check: depth.png, every class matching what its coroutines wrote).
#
# BUILD_DIR (or $GOSTACK_BUILD_DIR): the build tree holding gostack_bench.
# Register with, e.g.:
#   add_test(NAME harness_smoke COMMAND ${PROJECT_SOURCE_DIR}/harness/smoke.sh ${PROJECT_BINARY_DIR})
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD=${1:-${GOSTACK_BUILD_DIR:-}}
if [ -z "$BUILD" ]; then
	echo "usage: harness/smoke.sh BUILD_DIR   (or set GOSTACK_BUILD_DIR)" >&2
	exit 2
fi
TMP=$(mktemp -d "${TMPDIR:-/tmp}/gostack-smoke.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# gostack (both backends if built), the plain-malloc baseline and mmap; one
# run without and one with cross-thread frees; 1 and 2 threads.
FILTER='^(pair_8KiB|handoff)/(gostack-lockfree|gostack-mutex|glibc|mmap)/real_time/threads:(1|2)$'
SERVER=0
if command -v wrk >/dev/null 2>&1 &&
	[ -n "$(find "$BUILD" -type f -name gostack-http-demo -perm -u+x 2>/dev/null | head -n1)" ]; then
	SERVER=1
	FILTER="$FILTER|^http_server/keepalive_c50_t2/"
else
	echo "smoke: note: server stage not exercised (needs wrk and gostack-http-demo in $BUILD)"
fi
rc=0
"$HERE/run" --quick --no-install --no-build --build-dir "$BUILD" --reps 2 --min-time 0.005 \
	--server-rounds 1 --server-duration 1 --filter "$FILTER" --out "$TMP/out" || rc=$?

fail=0
check() { if eval "$2"; then echo "smoke: ok: $1"; else echo "smoke: FAILED: $1"; fail=$((fail + 1)); fi; }
check "harness/run exited 0 (got $rc)" '[ "$rc" -eq 0 ]'
check "raw JSON written" 'ls "$TMP"/out/raw/*.json >/dev/null 2>&1'
check "all.json is valid JSON with benchmarks" \
	'/usr/bin/python3 -c "import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if d[\"benchmarks\"] else 1)" "$TMP/out/all.json"'
check "summary.md written" '[ -s "$TMP/out/summary.md" ]'
check "context.md written" '[ -s "$TMP/out/context.md" ]'
check "at least one PNG" 'ls "$TMP"/out/*.png >/dev/null 2>&1'
check "depth profile check: depth.png, and the measured depths match the written ones in data.json" \
	'[ -s "$TMP/out/depth.png" ] && /usr/bin/python3 -c "import json,sys; d=json.load(open(sys.argv[1]))[\"depth\"]; sys.exit(0 if d[\"ok\"] and len(d[\"classes\"]) >= 3 else 1)" "$TMP/out/data.json"'
if [ "$SERVER" = 1 ]; then
	check "server stage: server.png, and 3 checked runs in data.json" \
		'[ -s "$TMP/out/server.png" ] && /usr/bin/python3 -c "import json,sys; r=json.load(open(sys.argv[1]))[\"server\"][\"runs\"]; sys.exit(0 if len(r) == 3 and all(x[\"rps\"] > 0 and not x[\"problems\"] for x in r) else 1)" "$TMP/out/data.json"'
fi
if [ "$fail" -ne 0 ]; then
	echo "--- summary.md ---"
	cat "$TMP/out/summary.md" 2>/dev/null || true
	echo "smoke: 0 passed, 1 failed"
	exit 1
fi
echo "smoke: 1 passed, 0 failed"
