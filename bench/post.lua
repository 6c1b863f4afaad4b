-- wrk script for bench/run.py: POST {"n": 1} as JSON with the API key from the environment.
--
-- The key comes from $SWITCHBOARD_BENCH_KEY, never from argv (argv is visible to every user
-- through ps and /proc). Each thread counts what it sent and what came back; done() adds the
-- threads up and prints one machine-readable line:
--
--   SBBENCH sent=<n> responses=<n> 2xx=<n> non2xx=<n> connect=<n> read=<n> write=<n> status=<n> timeout=<n>
--
-- "sent" minus "responses" is the number of requests still in flight when wrk stopped the clock:
-- the server may have accepted (and stored) those although wrk never saw their answers.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

local request_text

function init(args)
   local key = os.getenv("SWITCHBOARD_BENCH_KEY")
   if key == nil or key == "" then
      error("SWITCHBOARD_BENCH_KEY is not set")
   end
   local headers = {
      ["Content-Type"] = "application/json",
      ["Authorization"] = "Bearer " .. key,
   }
   request_text = wrk.format("POST", nil, headers, '{"n": 1}')
   sent = 0
   responses = 0
   ok = 0
   bad = 0
end

function request()
   sent = sent + 1
   return request_text
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
