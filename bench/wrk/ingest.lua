-- Control plane usage ingest: POST /v1/filter/usage batches of $BENCH_BATCH records shaped like
-- real traffic from several Envoys (run with one wrk thread per connection, -tN -cN: each
-- connection is one Envoy instance with its own `instance`).
--
-- Per record: its own millisecond timestamp; a batch covers the last ~1 s of its instance's
-- requests (start 1.0-1.5 s before now, increasing through the batch with a little jitter), so
-- the concurrent connections' timestamps interleave. Keys from $BENCH_INGEST_KEYS (lines
-- "key_id workspace_id", keys the control plane issued, in a few workspaces), skewed: a few keys
-- carry much of the traffic. Several endpoints and methods, mostly 200 (201 for POST) with some
-- 4xx, 5xx and 429, status and admitted to match (docs/protocol.md). request_id: a UUID-shaped
-- id unique per run, connection and record. Counts the records the control plane accepted.
-- Without $BENCH_INGEST_KEYS: the single key $BENCH_KEY_ID of $BENCH_WORKSPACE_ID.
dofile(os.getenv("BENCH_WRK_DIR") .. "/report.lua")

local ffi = require("ffi")
local wall_ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(0, wall_ts) -- CLOCK_REALTIME
  return tonumber(wall_ts.tv_sec) * 1000 + math.floor(tonumber(wall_ts.tv_nsec) / 1e6)
end

local auth = "Bearer " .. os.getenv("BENCH_FILTER_TOKEN")
local batch = tonumber(os.getenv("BENCH_BATCH") or "500")
-- A number (0..2^32) unique to this run: the first field of every request_id.
local run = tonumber(os.getenv("BENCH_RUN_ID") or "0") % 4294967296

local keys = {}
local keys_file = os.getenv("BENCH_INGEST_KEYS")
if keys_file and keys_file ~= "" then
  for line in io.lines(keys_file) do
    local k, w = line:match("^(%S+)%s+(%S+)")
    if k then keys[#keys + 1] = { k, w } end
  end
end
if #keys == 0 then
  keys[1] = { os.getenv("BENCH_KEY_ID"), os.getenv("BENCH_WORKSPACE_ID") }
end

-- method, endpoint, resource id range (0 = none), weight
local routes = {
  { "GET", "/v1/things/{id}", 100000, 40 },
  { "GET", "/v1/things", 0, 20 },
  { "POST", "/v1/things", 0, 10 },
  { "PUT", "/v1/things/{id}", 100000, 8 },
  { "DELETE", "/v1/things/{id}", 100000, 2 },
  { "GET", "/v1/users/{id}/orders", 20000, 15 },
  { "GET", "/v1/search", 0, 5 },
}
local route_pick = {}
for i, r in ipairs(routes) do
  for _ = 1, r[4] do route_pick[#route_pick + 1] = i end
end

-- Out of 1000 records: response code, status, admitted (what Tollgate did).
local outcomes = {
  { 955, 200, "completed", "true" },    -- 201 for POST
  { 970, 404, "failed", "true" },
  { 980, 400, "failed", "true" },
  { 986, 500, "failed", "true" },
  { 989, 503, "failed", "true" },
  { 997, 429, "rate_limited", "false" }, -- plan rate limit
  { 999, 401, "rate_limited", "false" }, -- quota denial
  { 1000, 403, "failed", "false" },     -- endpoint not allowed for the key
}

-- Set per thread by setup(): which connection (Envoy instance) this is.
conn = 0
local instance = "i_0000000000000000"
local n = 0
accepted = 0
duplicates = 0
refused = 0

local report_setup = setup
function setup(thread)
  report_setup(thread)
  thread:set("conn", #bench_threads)
end

function init(args)
  math.randomseed(run * 7 + conn)
  instance = string.format("i_%08x%08x", run, conn)
end

function request()
  local parts = {}
  local now = now_ms()
  -- This instance's last second or so: starts 1.0-1.5 s ago.
  local start = now - 1000 - math.random(0, 500)
  for j = 1, batch do
    n = n + 1
    local t = start + math.floor((j - 1) * 1000 / batch) + math.random(0, 3)
    local key = keys[math.floor(#keys * math.random() ^ 3) + 1]
    local route = routes[route_pick[math.random(#route_pick)]]
    local resource = "null"
    if route[3] > 0 then
      resource = string.format('"r-%d"', math.random(1, route[3]))
    end
    local roll = math.random(1, 1000)
    local o = outcomes[#outcomes]
    for _, c in ipairs(outcomes) do
      if roll <= c[1] then o = c break end
    end
    local code = o[2]
    if code == 200 and route[1] == "POST" then code = 201 end
    local credits = 1
    if route[1] == "POST" then credits = 2 end
    parts[j] = string.format(
      '{"request_id":"%08x-%04x-4%03x-%04x-%012x","timestamp":%d,"key_id":"%s",' ..
      '"workspace_id":"%s","method":"%s","endpoint":"%s","resource_id":%s,' ..
      '"response_code":%d,"status":"%s","duration_ms":%d.%03d,"client_ip":"10.%d.%d.%d",' ..
      '"credits":%d,"admitted":%s,"instance":"%s"}',
      run, conn, math.random(0, 4095), 0x8000 + math.random(0, 16383), n,
      t, key[1], key[2], route[1], route[2], resource,
      code, o[3], math.random(0, 40), math.random(0, 999),
      conn, math.random(0, 255), math.random(1, 254),
      credits, o[4], instance)
  end
  return wrk.format("POST", "/v1/filter/usage",
    { ["authorization"] = auth, ["content-type"] = "application/json" },
    '{"records":[' .. table.concat(parts, ",") .. ']}')
end

function response(status, headers, body)
  if status == 200 then
    accepted = accepted + tonumber(body:match('"accepted"%s*:%s*(%d+)') or "0")
    duplicates = duplicates + tonumber(body:match('"duplicates"%s*:%s*(%d+)') or "0")
  else
    refused = refused + 1
  end
end

function bench_extra(threads)
  local a, d, r = 0, 0, 0
  for _, t in ipairs(threads) do
    a = a + t:get("accepted")
    d = d + t:get("duplicates")
    r = r + t:get("refused")
  end
  return string.format('"accepted": %d, "duplicates": %d, "refused_batches": %d, "batch": %d',
    a, d, r, batch)
end
