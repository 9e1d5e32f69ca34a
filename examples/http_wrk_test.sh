#!/usr/bin/env bash
# http_wrk_test.sh SERVER WRK [SERVER OPTIONS...]
#
# Starts gostack-http-demo on a free loopback port (127.0.0.1 only), checks a
# few requests by hand (keep-alive, pipelining, ?stack=, HEAD, 405, HTTP/1.0,
# clients that hang up early), runs
#   wrk -t2 -c300 -d3s --latency http://127.0.0.1:PORT/
# checks wrk saw no non-2xx responses and no socket errors, sends SIGTERM and
# checks the server exits 0 with one stats line on stdout: allocs == frees,
# inuse_bytes=0 (and for gostack stacks cached_bytes=0 and, after reclaim,
# mapped_bytes=0). Extra arguments go to the server (e.g. --stacks malloc).
# Environment: GOSTACK_HTTP_THREADS (4), GOSTACK_WRK_DURATION (3s),
# GOSTACK_WRK_CONNECTIONS (300), GOSTACK_WRK_TIMEOUT (wrk's --timeout; unset:
# wrk's default of 2s; sanitizer builds are slower).
# Last line: "N passed, N failed"; exit 1 on any failure.
set -u

if [ $# -lt 2 ]; then
	echo "usage: $0 SERVER WRK [SERVER OPTIONS...]" >&2
	exit 2
fi
server=$1
wrk=$2
shift 2
threads=${GOSTACK_HTTP_THREADS:-4}
duration=${GOSTACK_WRK_DURATION:-3s}
conns=${GOSTACK_WRK_CONNECTIONS:-300}
wrk_timeout=()
if [ -n "${GOSTACK_WRK_TIMEOUT:-}" ]; then
	wrk_timeout=(--timeout "$GOSTACK_WRK_TIMEOUT")
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/gostack-http-test.XXXXXX")
pid=
cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -KILL "$pid" 2>/dev/null
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT

passed=0
failed=0
check() {   # check DESCRIPTION COMMAND...
	local what=$1
	shift
	if "$@"; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		echo "FAIL: $what"
	fi
}
finish() {
	echo "$passed passed, $failed failed"
	[ "$failed" -eq 0 ]
	exit $?
}

"$server" --addr 127.0.0.1 --port 0 --threads "$threads" "$@" >"$tmp/out" 2>"$tmp/err" &
pid=$!
port=
for _ in $(seq 100); do
	port=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9][0-9]*\)/.*|\1|p' "$tmp/err")
	[ -n "$port" ] && break
	kill -0 "$pid" 2>/dev/null || break
	sleep 0.1
done
if [ -z "$port" ]; then
	echo "FAIL: the server did not start"
	cat "$tmp/err"
	failed=$((failed + 1))
	finish
fi
cat "$tmp/err"
url="http://127.0.0.1:$port/"

# ---- by hand, over bash's /dev/tcp -----------------------------------------
# One connection, five pipelined requests sent at once; the last one closes.
exchange() {   # exchange REQUEST-BYTES -> the server's whole answer on stdout
	local out
	exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
	printf '%b' "$1" >&3
	out=$(timeout 10 cat <&3)
	exec 3<&-
	printf '%s' "$out"
}
r=$(exchange 'GET / HTTP/1.1\r\nHost: t\r\n\r\nGET /x?a=1 HTTP/1.1\r\nHost: t\r\n\r\nGET /?stack=65536 HTTP/1.1\r\nHost: t\r\n\r\nHEAD / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n')
check "five pipelined requests, five 200 responses" \
	test "$(printf '%s' "$r" | grep -c '^HTTP/1.1 200 OK')" -eq 5
check "?stack=65536 served on a 65536-byte stack" \
	grep -q 'on a 65536-byte stack' <<<"$r"
check "the last response says Connection: close" \
	test "$(printf '%s' "$r" | grep -c '^Connection: close')" -eq 1
check "four bodies (HEAD has none)" \
	test "$(printf '%s' "$r" | grep -c 'Hello from a coroutine')" -eq 4

r=$(exchange 'GET / HTTP/1.0\r\n\r\n')
check "HTTP/1.0 without keep-alive: one response, then close" \
	test "$(printf '%s' "$r" | grep -c '^HTTP/1.1 200 OK')" -eq 1
r=$(exchange 'POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nConnection: close\r\n\r\n')
check "POST answered 405, the GET after its body 200" \
	test "$(printf '%s' "$r" | grep -c -e '^HTTP/1.1 405' -e '^HTTP/1.1 200 OK')" -eq 2
r=$(exchange 'garbage\r\n\r\n')
check "a bad request line gets 400" grep -q '^HTTP/1.1 400' <<<"$r"

# Clients that hang up with the answer unread, or mid-request.
for _ in $(seq 20); do
	exec 3<>"/dev/tcp/127.0.0.1/$port" && printf 'GET /?stack=32768 HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\nGET / HT' >&3
	exec 3<&-
done
check "the server survives clients that hang up" kill -0 "$pid"

# ---- wrk -----------------------------------------------------------------------
echo "+ $wrk -t2 -c$conns -d$duration ${wrk_timeout[*]} --latency $url"
"$wrk" -t2 "-c$conns" "-d$duration" "${wrk_timeout[@]}" --latency "$url" >"$tmp/wrk" 2>&1
wrc=$?
cat "$tmp/wrk"
check "wrk exits 0" test "$wrc" -eq 0
check "wrk made requests" grep -q 'requests in' "$tmp/wrk"
check "no Non-2xx or 3xx responses" bash -c "! grep -q 'Non-2xx or 3xx responses' '$tmp/wrk'"
check "no Socket errors" bash -c "! grep -q 'Socket errors' '$tmp/wrk'"
check "the server is still up" kill -0 "$pid"

# ---- SIGTERM: drain -------------------------------------------------------------
kill -TERM "$pid"
for _ in $(seq 300); do   # up to 30 s; bash reaps the child as it exits
	kill -0 "$pid" 2>/dev/null || break
	sleep 0.1
done
if kill -0 "$pid" 2>/dev/null; then
	echo "FAIL: the server did not exit within 30 s of SIGTERM; killing it"
	failed=$((failed + 1))
	kill -KILL "$pid"
fi
wait "$pid"
rc=$?
pid=
tail -n +2 "$tmp/err"
echo "stdout:"
cat "$tmp/out"
check "the server exits 0 on SIGTERM (got $rc)" test "$rc" -eq 0
check "exactly one line on stdout" test "$(wc -l <"$tmp/out")" -eq 1
if [ "${GOSTACK_PROFILE:-0}" != 0 ]; then   # examples.http_wrk.profile
	check "the depth profile on stderr at SIGTERM" grep -q '^gostack: [0-9]* [KM]iB stacks: p99 depth .* over [0-9]* samples' "$tmp/err"
fi
line=$(tail -n 1 "$tmp/out")
field() { sed -n "s/.* $1=\([0-9][0-9]*\).*/\1/p" <<<"$line"; }
allocs=$(field allocs)
frees=$(field frees)
inuse=$(field inuse_bytes)
check "the stats line has allocs, frees and inuse_bytes" \
	test -n "$allocs" -a -n "$frees" -a -n "$inuse"
check "allocs == frees ($allocs, $frees)" test "${allocs:-x}" = "${frees:-y}"
check "inuse_bytes=0" test "${inuse:-x}" = 0
check "at least $conns stacks were allocated ($allocs)" test "${allocs:-0}" -ge "$conns"
case $line in
gostack:*)
	check "cached_bytes=0 after every thread flushed" test "$(field cached_bytes)" = 0
	check "mapped_bytes=0 after reclaim" test "$(field mapped_bytes)" = 0
	;;
malloc:* | mmap:*) ;;
*) check "the stats line starts with gostack:, malloc: or mmap:" false ;;
esac
finish
