-- Control plane key lookups: GET /v1/filter/keys/{hash} over real key hashes
-- ($BENCH_KEYS_FILE, one per line, cycled), with the filter token. Whether answers come from
-- the control plane's cache is the control plane's setting (`--lookup-cache 0`: never).
dofile(os.getenv("BENCH_WRK_DIR") .. "/report.lua")

local hashes = {}
local n = 0
local auth = "Bearer " .. os.getenv("BENCH_FILTER_TOKEN")

function init(args)
  for line in io.lines(os.getenv("BENCH_KEYS_FILE")) do
    if #line > 0 then hashes[#hashes + 1] = line end
  end
end

function request()
  n = n + 1
  local path = "/v1/filter/keys/" .. hashes[(n % #hashes) + 1]
  return wrk.format("GET", path, { ["authorization"] = auth })
end
