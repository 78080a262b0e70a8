-- wrk script: Zipf-distributed download paths, client IPs in X-Forwarded-For.
-- Files: bench/world.py writes <dir>/paths.txt and <dir>/ips.txt; set WORLD_DIR to that dir.
--   WORLD_DIR=/tmp/world wrk -t2 -c64 -d20s -s bench/load.lua http://127.0.0.1:8080

local dir = os.getenv("WORLD_DIR") or "/tmp/mirrorbits-world"
local zipf_s = tonumber(os.getenv("ZIPF_S") or "1.0")
-- CONNECTION_CLOSE=1: one request per connection (as most download clients), which measures the
-- accept path too; default: keep-alive.
local close = os.getenv("CONNECTION_CLOSE") == "1"
-- HOT_PATH=/some/file: every request asks for that one file (clients still vary).
local hot = os.getenv("HOT_PATH")
if hot == "" then hot = nil end
-- DELAY_MS=n: each connection waits n ms before each request (a steady rate below saturation).
local delay_ms = tonumber(os.getenv("DELAY_MS") or "0")

local function lines(path)
  local t = {}
  for line in io.lines(path) do
    if #line > 0 then t[#t + 1] = line end
  end
  return t
end

local paths, ips, cdf

function init(args)
  paths = lines(dir .. "/paths.txt")
  ips = lines(dir .. "/ips.txt")
  -- Zipf over the path list: P(rank k) ~ 1 / k^s, sampled by binary search in the CDF.
  cdf = {}
  local total = 0
  for k = 1, #paths do
    total = total + 1 / (k ^ zipf_s)
    cdf[k] = total
  end
  for k = 1, #paths do cdf[k] = cdf[k] / total end
  math.randomseed(os.time() + (tonumber(tostring({}):match("0x(%x+)"), 16) or 0) % 100000)
end

local function zipf_index()
  local u = math.random()
  local lo, hi = 1, #cdf
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  return lo
end

function request()
  local path = hot or paths[zipf_index()]
  local ip = ips[math.random(#ips)]
  local headers = { ["X-Forwarded-For"] = ip }
  if close then headers["Connection"] = "close" end
  return wrk.format("GET", path, headers)
end

if delay_ms > 0 then
  function delay()
    return delay_ms
  end
end

function done(summary, latency, requests)
  io.write(string.format("LATENCY_P50_US %d\n", latency:percentile(50)))
  io.write(string.format("LATENCY_P99_US %d\n", latency:percentile(99)))
  io.write(string.format("REQUESTS %d\n", summary.requests))
  io.write(string.format("DURATION_US %d\n", summary.duration))
  io.write(string.format("ERRORS %d\n", summary.errors.status + summary.errors.connect +
                         summary.errors.read + summary.errors.write + summary.errors.timeout))
  io.write(string.format("ERRORS_CONNECT %d\n", summary.errors.connect))
  io.write(string.format("ERRORS_READ %d\n", summary.errors.read))
  io.write(string.format("ERRORS_WRITE %d\n", summary.errors.write))
  io.write(string.format("ERRORS_STATUS %d\n", summary.errors.status))
  io.write(string.format("ERRORS_TIMEOUT %d\n", summary.errors.timeout))
end
