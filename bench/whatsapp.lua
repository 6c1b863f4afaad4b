-- wrk script for bench/whatsapp.py: POST pre-signed Twilio WhatsApp webhooks.
--
-- $SWITCHBOARD_BENCH_BODIES names a file of "<X-Twilio-Signature>\t<form body>" lines, each a
-- distinct MessageSid signed for the server's URL. Thread k of n sends lines k, k+n, k+2n, ...
-- (no two threads send the same message; a thread that runs out starts over, and its repeats
-- are deduplicated by the server). done() prints the same SBBENCH line as bench/post.lua.

local threads = {}
local counter = 0

function setup(thread)
   thread:set("id", counter)
   counter = counter + 1
   table.insert(threads, thread)
end

local requests_text = {}
local next_index = 1

function init(args)
   local path = os.getenv("SWITCHBOARD_BENCH_BODIES")
   if path == nil or path == "" then
      error("SWITCHBOARD_BENCH_BODIES is not set")
   end
   local n = tonumber(os.getenv("SWITCHBOARD_BENCH_THREADS") or "1")
   local line_number = 0
   for line in io.lines(path) do
      if line_number % n == id then
         local tab = string.find(line, "\t", 1, true)
         local headers = {
            ["Content-Type"] = "application/x-www-form-urlencoded",
            ["X-Twilio-Signature"] = string.sub(line, 1, tab - 1),
         }
         table.insert(requests_text, wrk.format("POST", nil, headers, string.sub(line, tab + 1)))
      end
      line_number = line_number + 1
   end
   sent = 0
   responses = 0
   ok = 0
   bad = 0
end

function request()
   sent = sent + 1
   local text = requests_text[next_index]
   next_index = next_index + 1
   if next_index > #requests_text then
      next_index = 1
   end
   return text
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
