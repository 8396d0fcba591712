-- Control plane key lookups: GET /v1/filter/keys/{hash} over real key hashes
-- ($BENCH_KEYS_FILE, one per line, cycled), with the filter token.
-- BENCH_UNCACHED=1: every request asks as another Envoy instance (its own `instance`, with the
-- `since_ms` a filter sends), so no answer comes from the control plane's answer cache: each
-- one reads the database (the cold path).
dofile(os.getenv("BENCH_WRK_DIR") .. "/report.lua")

local hashes = {}
local n = 0
local auth = "Bearer " .. os.getenv("BENCH_FILTER_TOKEN")
local uncached = os.getenv("BENCH_UNCACHED") == "1"
local since = math.floor((os.time() - 120) / 10) * 10000

function init(args)
  for line in io.lines(os.getenv("BENCH_KEYS_FILE")) do
    if #line > 0 then hashes[#hashes + 1] = line end
  end
end

function request()
  n = n + 1
  local path = "/v1/filter/keys/" .. hashes[(n % #hashes) + 1]
  if uncached then
    path = path .. string.format("?instance=i_%016x&since_ms=%d", n, since)
  end
  return wrk.format("GET", path, { ["authorization"] = auth })
end
