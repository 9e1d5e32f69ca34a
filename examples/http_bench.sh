#!/usr/bin/env bash
# http_bench.sh SERVER [ROUNDS [PATH [WRK HEADER]]]
#
# Requests/s of gostack-http-demo with gostack, malloc and mmap stacks under
# the same wrk command, interleaved (gostack, malloc, mmap, gostack, ...),
# ROUNDS (3) rounds. Loopback only. Each run: start the server on a free port
# of 127.0.0.1 with 4 threads, run
#   wrk -t2 -c300 -d3s --latency [-H HEADER] http://127.0.0.1:PORT/PATH
# then SIGTERM it and show its stats line. PATH defaults to "" (GET /);
# "?stack=65536" with the header "Connection: close" puts a stack allocation
# and a free (gfput frees the grown stack) on every request.
# Environment: GOSTACK_HTTP_THREADS (4), GOSTACK_WRK_DURATION (3s),
# GOSTACK_WRK_CONNECTIONS (300), WRK (wrk).
set -u
server=${1:?usage: $0 SERVER [ROUNDS [PATH [HEADER]]]}
rounds=${2:-3}
path=${3:-}
header=${4:-}
wrk=${WRK:-wrk}
threads=${GOSTACK_HTTP_THREADS:-4}
duration=${GOSTACK_WRK_DURATION:-3s}
conns=${GOSTACK_WRK_CONNECTIONS:-300}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/gostack-http-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
hdr=()
[ -n "$header" ] && hdr=(-H "$header")

echo "# $(date -u +%FT%TZ) $(uname -n) nproc=$(nproc) load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# server: $server --addr 127.0.0.1 --port 0 --threads $threads --stacks K"
echo "# wrk: $wrk -t2 -c$conns -d$duration --latency ${hdr[*]} http://127.0.0.1:PORT/$path"
printf '%-6s %-8s %12s %10s %10s  %s\n' round stacks requests/s p50 p99 "stats line"
for r in $(seq "$rounds"); do
	for k in gostack malloc mmap; do
		"$server" --addr 127.0.0.1 --port 0 --threads "$threads" --stacks "$k" \
			>"$tmp/out" 2>"$tmp/err" &
		pid=$!
		port=
		for _ in $(seq 100); do
			port=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9][0-9]*\)/.*|\1|p' "$tmp/err")
			[ -n "$port" ] && break
			sleep 0.1
		done
		if [ -z "$port" ]; then
			echo "server did not start:"; cat "$tmp/err"; kill -KILL "$pid"; exit 1
		fi
		"$wrk" -t2 "-c$conns" "-d$duration" --latency "${hdr[@]}" \
			"http://127.0.0.1:$port/$path" >"$tmp/wrk" 2>&1
		kill -TERM "$pid"
		wait "$pid"
		rps=$(awk '/^Requests\/sec:/ {print $2}' "$tmp/wrk")
		p50=$(awk '$1 == "50%" {print $2}' "$tmp/wrk")
		p99=$(awk '$1 == "99%" {print $2}' "$tmp/wrk")
		errs=$(grep -E 'Socket errors|Non-2xx' "$tmp/wrk" | tr -s ' ' | tr '\n' ' ')
		printf '%-6s %-8s %12s %10s %10s  %s %s\n' "$r" "$k" "${rps:-?}" "${p50:-?}" \
			"${p99:-?}" "$(tail -n 1 "$tmp/out")" "$errs"
	done
done
