-- wrk script: replay a pool of pre-built raw HTTP requests (bench/wrk.py writes the pool).
--
-- $BENCH_POOL names a file of records "<byte length>\n<raw request>"; thread k of
-- $BENCH_THREADS sends records k, k+n, k+2n, ... (no two threads send the same request). A thread
-- that runs out starts over; the server deduplicates the repeats, and bench/wrk.py reports them.
-- With $BENCH_DELAY_MS each connection waits that long before each request (a paced load).
-- Counting and the SBBENCH line are bench/counts.lua's.

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "counts.lua")

local pool = {}
local next_index = 1

function init(args)
   local path = os.getenv("BENCH_POOL")
   if path == nil or path == "" then
      error("BENCH_POOL is not set")
   end
   local n = tonumber(os.getenv("BENCH_THREADS") or "1")
   local file = assert(io.open(path, "rb"))
   local record = 0
   while true do
      local size = file:read("*l")
      if size == nil then
         break
      end
      local text = file:read(tonumber(size))
      if record % n == id then
         table.insert(pool, text)
      end
      record = record + 1
   end
   file:close()
   reset_counts()
end

function request()
   sent = sent + 1
   local text = pool[next_index]
   next_index = next_index % #pool + 1
   return text
end

local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "")
if delay_ms ~= nil then
   function delay()
      return delay_ms
   end
end
