-- wrk script of the harness's server stage (harness/server.py): only done(),
-- which prints wrk's own totals as one JSON line after the usual report, so
-- the driver need not parse wrk's human-readable output. No request() or
-- response() hook: those run Lua per request and would slow the client.
done = function(summary, latency, requests)
	local e = summary.errors
	io.write(string.format(
		'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
		'"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
		'"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
		summary.requests, summary.duration, summary.bytes,
		e.connect, e.read, e.write, e.status, e.timeout,
		latency:percentile(50), latency:percentile(90), latency:percentile(99),
		latency.max, latency.mean))
end
