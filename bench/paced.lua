-- wrk script: load.lua's request mix sent at a fixed rate (wrk2 is not in Debian).
-- Each thread sends PACED_RATE_PER_THREAD requests/s: before each request a connection takes the
-- thread's next send slot (one every 1/rate s) and waits for it.  A connection still waiting for its
-- answer sends nothing, so the rate holds only while enough connections are free (give wrk
-- several times rate x latency of them); slots missed by more than a second are dropped, not sent
-- in a burst.  Latency is wrk's: from the request's write to its answer.
--   LOAD_LUA=bench/load.lua WORLD_DIR=/tmp/world PACED_RATE_PER_THREAD=1000 \
--     wrk -t2 -c16 -d10s -s bench/paced.lua http://127.0.0.1:8080

dofile(os.getenv("LOAD_LUA") or "bench/load.lua")

local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } mb_paced_timespec;
int clock_gettime(int clk_id, mb_paced_timespec *tp);
]]
local ts = ffi.new("mb_paced_timespec")
local CLOCK_MONOTONIC = 1

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local interval_ms = 1000 / tonumber(os.getenv("PACED_RATE_PER_THREAD") or "1000")
local next_slot = nil

function delay()
  local now = now_ms()
  if next_slot == nil or next_slot < now - 1000 then
    next_slot = now
  end
  next_slot = next_slot + interval_ms
  local wait = next_slot - now
  if wait < 0 then
    return 0
  end
  return wait
end
