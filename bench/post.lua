-- wrk script for bench/api.py and bench/intake.py: POST {"n": 1} as JSON with the API key
-- from the environment.
--
-- The key comes from $SWITCHBOARD_BENCH_KEY, never from argv (argv is visible to every user
-- through ps and /proc). Counting and the SBBENCH line are bench/counts.lua's.

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "counts.lua")

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
   reset_counts()
end

function request()
   sent = sent + 1
   return request_text
end
