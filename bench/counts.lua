-- Counting shared by the wrk scripts (post.lua, pool.lua).
--
-- A script loads it first (dofile) and then defines only init() and request(); init() calls
-- reset_counts(). Each thread gets a 0-based "id" and counts what it sent and what came back;
-- done() adds the threads up and prints one machine-readable line, parsed by bench/wrk.py:
--
--   SBBENCH sent=<n> responses=<n> 2xx=<n> non2xx=<n> connect=<n> read=<n> write=<n> status=<n> timeout=<n>
--
-- "sent" minus "responses" is the number of requests still in flight when wrk stopped the clock:
-- the server may have accepted (and stored) those although wrk never saw their answers.

local threads = {}
local counter = 0

function setup(thread)
   thread:set("id", counter)
   counter = counter + 1
   table.insert(threads, thread)
end

function reset_counts()
   sent = 0
   responses = 0
   ok = 0
   bad = 0
end

function response(status, headers, body)
   responses = responses + 1
   if status >= 200 and status < 300 then
      ok = ok + 1
   else
      bad = bad + 1
   end
end

function done(summary, latency, requests)
   local totals = { sent = 0, responses = 0, ok = 0, bad = 0 }
   for _, thread in ipairs(threads) do
      for name, _ in pairs(totals) do
         totals[name] = totals[name] + (thread:get(name) or 0)
      end
   end
   local e = summary.errors
   io.write(string.format(
      "SBBENCH sent=%d responses=%d 2xx=%d non2xx=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
      totals.sent, totals.responses, totals.ok, totals.bad,
      e.connect, e.read, e.write, e.status, e.timeout))
end
