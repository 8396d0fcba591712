-- Shared by every wrk script of the benchmark: done() prints one line
-- "BENCH_JSON {...}" that bench/bench.py parses (latency in microseconds).
-- Scripts may set the global `bench_extra` (a function returning a JSON fragment string,
-- e.g. '"accepted": 123') to add fields.
bench_threads = {}

-- Wall clock for scripts that stop early (wrk's own duration is always -d): call
-- bench_mark_request() in request() and bench_mark_response() in response(); done() then
-- reports "active_s", from the first request to the last response.
local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clock, bench_timespec *ts);
]]
local bench_ts = ffi.new("bench_timespec")
local function bench_now()
  ffi.C.clock_gettime(1, bench_ts) -- CLOCK_MONOTONIC
  return tonumber(bench_ts.tv_sec) + tonumber(bench_ts.tv_nsec) / 1e9
end
first_ts = 0
last_ts = 0

function bench_mark_request()
  if first_ts == 0 then first_ts = bench_now() end
end

function bench_mark_response()
  last_ts = bench_now()
end

function setup(thread)
  table.insert(bench_threads, thread)
end

function done(summary, latency, requests)
  local e = summary.errors
  local extra = ""
  if bench_extra then
    extra = ", " .. bench_extra(bench_threads)
  end
  local first, last = nil, 0
  for _, t in ipairs(bench_threads) do
    local f, l = t:get("first_ts"), t:get("last_ts")
    if f and f > 0 and (first == nil or f < first) then first = f end
    if l and l > last then last = l end
  end
  if first and last > first then
    extra = extra .. string.format(', "active_s": %.6f', last - first)
  end
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"mean": %.1f, "stdev": %.1f, "min": %d, "max": %d, ' ..
    '"p50": %d, "p90": %d, "p99": %d, "p999": %d}%s}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.min, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), extra))
end
