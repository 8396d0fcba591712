-- Memory soak: every request carries a distinct, well-formed key (tg_ + 33 base62 + CRC-32
-- checksum, docs/protocol.md) that the control plane never issued, from a distinct client IP in
-- x-forwarded-for, until $BENCH_SOAK_REQUESTS requests have been sent (then the thread stops).
-- Each one costs the filter a key lookup, an unknown-key cache entry and an IP failure count:
-- the path that fills every bounded table.
dofile(os.getenv("BENCH_WRK_DIR") .. "/report.lua")

local bit = require("bit")
local alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
local limit = tonumber(os.getenv("BENCH_SOAK_REQUESTS") or "1000000")
local salt = os.getenv("BENCH_RUN_ID") or "run"
local n = 0
local crc_table = {}
for i = 0, 255 do
  local c = i
  for _ = 1, 8 do
    if bit.band(c, 1) == 1 then
      c = bit.bxor(bit.rshift(c, 1), 0xEDB88320)
    else
      c = bit.rshift(c, 1)
    end
  end
  crc_table[i] = c
end

local function crc32(s)
  local c = 0xFFFFFFFF
  for i = 1, #s do
    c = bit.bxor(crc_table[bit.band(bit.bxor(c, s:byte(i)), 0xFF)], bit.rshift(c, 8))
  end
  c = bit.bxor(c, 0xFFFFFFFF)
  if c < 0 then c = c + 4294967296 end
  return c
end

local function base62(v, width)
  local out = {}
  for i = width, 1, -1 do
    local d = v % 62
    out[i] = alphabet:sub(d + 1, d + 1)
    v = (v - d) / 62
  end
  return table.concat(out)
end

-- 21 characters fixed per run (from the salt), 12 from the counter: 33 random-part characters.
local fixed = ""
function init(args)
  local h = crc32(salt)
  fixed = base62(h, 6) .. base62(crc32(salt .. "x"), 6) .. base62(crc32(salt .. "y"), 6) .. "BNC"
end

function response(status, headers, body)
  bench_mark_response()
end

function request()
  bench_mark_request()
  n = n + 1
  if n > limit then
    wrk.thread:stop()
  end
  local body = "tg_" .. fixed .. base62(n, 12)
  local key = body .. base62(crc32(body), 6)
  local ip = string.format("10.%d.%d.%d", math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
  return wrk.format("GET", "/v1/things/1", { ["x-api-key"] = key, ["x-forwarded-for"] = ip })
end
