-- bench/wrk.lua - wrk script of bench/run; prints one "WRKJSON {...}" line.
--
--   wrk ... -s bench/wrk.lua URL                      fixed URL (cache hits)
--   wrk ... -s bench/wrk.lua URL -- distinct P F T     every request a new key:
--       GET <path>?email=P<k>@example.com, k = F, F+1, ... spread over T wrk
--       threads (thread i takes F+i, F+i+T, ...), and counts statuses.
-- request() and response() are defined only in distinct mode, so that the
-- fixed mode costs wrk nothing per request (wrk decides after init()).

local threads = {}
local next_id = 0

function setup(thread)
   thread:set("id", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

function init(args)
   n200, n429, nother = 0, 0, 0
   if args[1] == "distinct" then
      local prefix = args[2]
      local k = tonumber(args[3]) + id
      local stride = tonumber(args[4])
      local path = wrk.path
      request = function()
         local r = wrk.format("GET", path .. "?email=" .. prefix .. k .. "%40example.com")
         k = k + stride
         return r
      end
      response = function(status, headers, body)
         if status == 200 then
            n200 = n200 + 1
         elseif status == 429 then
            n429 = n429 + 1
         else
            nother = nother + 1
         end
      end
   end
end

function done(summary, latency, requests)
   local a, b, c = 0, 0, 0
   for _, t in ipairs(threads) do
      a = a + (t:get("n200") or 0)
      b = b + (t:get("n429") or 0)
      c = c + (t:get("nother") or 0)
   end
   local e = summary.errors
   io.write(string.format(
      'WRKJSON {"requests": %d, "duration_us": %d, "bytes": %d, "rps": %.1f, ' ..
      '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f, ' ..
      '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
      '"n200": %d, "n429": %d, "nother": %d}\n',
      summary.requests, summary.duration, summary.bytes,
      summary.requests / (summary.duration / 1e6),
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      latency.mean, e.connect, e.read, e.write, e.status, e.timeout, a, b, c))
end
