-- Cold path: every request carries a key this Envoy has never seen (one line of
-- $BENCH_KEYS_FILE each, used exactly once); the thread stops when the keys run out.
-- Run with -t1 so the keys are not shared between threads.
dofile(os.getenv("BENCH_WRK_DIR") .. "/report.lua")

local keys = {}
local next_key = 0
local path = os.getenv("BENCH_PATH") or "/v1/things/1"

function init(args)
  for line in io.lines(os.getenv("BENCH_KEYS_FILE")) do
    if #line > 0 then keys[#keys + 1] = line end
  end
end

function response(status, headers, body)
  bench_mark_response()
end

function request()
  bench_mark_request()
  next_key = next_key + 1
  if next_key > #keys then
    -- Out of fresh keys: stop; the few requests this sends meanwhile reuse the last key.
    wrk.thread:stop()
    next_key = #keys
  end
  return wrk.format("GET", path, { ["x-api-key"] = keys[next_key] })
end

function bench_extra(threads)
  return string.format('"keys": %d', #keys)
end
