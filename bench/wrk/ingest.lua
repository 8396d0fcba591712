-- Control plane usage ingest: POST /v1/filter/usage batches of $BENCH_BATCH records, every
-- request_id unique (run id + thread + counter). Counts the records the control plane accepted.
dofile(os.getenv("BENCH_WRK_DIR") .. "/report.lua")

local auth = "Bearer " .. os.getenv("BENCH_FILTER_TOKEN")
local batch = tonumber(os.getenv("BENCH_BATCH") or "500")
local key_id = os.getenv("BENCH_KEY_ID")
local workspace_id = os.getenv("BENCH_WORKSPACE_ID")
local run = os.getenv("BENCH_RUN_ID") or "run"
local instance = os.getenv("BENCH_INSTANCE") or "i_0000000000000000"
local n = 0
local thread_id = 0
accepted = 0
duplicates = 0
refused = 0

function init(args)
  thread_id = math.random(1, 1000000000)
end

function request()
  local parts = {}
  local now = os.time() * 1000
  for j = 1, batch do
    n = n + 1
    parts[j] = string.format(
      '{"request_id":"bench-%s-%d-%d","timestamp":%d,"key_id":"%s","workspace_id":"%s",' ..
      '"method":"GET","endpoint":"/v1/things/{id}","resource_id":"r-%d","response_code":200,' ..
      '"status":"completed","duration_ms":0.25,"client_ip":"127.0.0.1","credits":1,' ..
      '"admitted":true,"instance":"%s"}',
      run, thread_id, n, now - 1000, key_id, workspace_id, n % 1000, instance)
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
