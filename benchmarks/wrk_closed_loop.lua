-- wrk as a closed loop of users: each connection posts a one-row body, waits
-- for the answer, then thinks WRK_THINK_MS before its next request (wrk's own
-- delay() hook). At the end it prints its latency percentiles, in
-- microseconds, on one line for benchmarks/loadgen_bench.py to read.
wrk.method = "POST"
wrk.body = '{"dataframe_split": {"columns": ["a"], "data": [[1.0]]}}'
wrk.headers["Content-Type"] = "application/json"

local think = tonumber(os.getenv("WRK_THINK_MS") or "0")
if think > 0 then
  function delay()
    return think
  end
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'WRK_RESULT {"p50_us": %d, "p99_us": %d, "p999_us": %d, "requests": %d, "errors": %d}\n',
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), summary.requests,
    errors.connect + errors.read + errors.write + errors.status + errors.timeout))
end
