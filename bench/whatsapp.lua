-- wrk script for bench/whatsapp.py: POST pre-signed Twilio WhatsApp webhooks.
--
-- $SWITCHBOARD_BENCH_BODIES names a file of "<X-Twilio-Signature>\t<form body>" lines, each a
-- distinct MessageSid signed for the server's URL. Thread k of n sends lines k, k+n, k+2n, ...
-- (no two threads send the same message; a thread that runs out starts over, and its repeats
-- are deduplicated by the server). Counting and the SBBENCH line are bench/counts.lua's.

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "counts.lua")

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
   reset_counts()
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
