-- wrk script for benchmarks/http/run.py.
--
-- wrk -t2 -c32 -d15s -s bench.lua http://127.0.0.1:PORT -- MODE THREADS COOKIE [ID ...]
--
-- MODE:
--   constant  GET /bench/constant (no credentials sent)
--   me        GET /api/v2/me with the session cookie
--   update    POST /api/v2/me/interactions/{id} {"operationName":"UpdateProperties",
--             "userData":{"n":<counter>}} with the session cookie. Thread t (0-based) takes the
--             ids at positions t, t+THREADS, ... and cycles through them; wrk's Lua API does not
--             say which connection a request is for, so ids go round-robin per thread.
-- done() prints one line "BENCH {json}" with the counts and the latency percentiles (µs).

local thread_count = 0

function setup(thread)
   thread:set("tid", thread_count)
   thread_count = thread_count + 1
end

local mode, ids, headers, fixed
local next_id, counter = 1, 0

function init(args)
   mode = args[1]
   local threads = tonumber(args[2])
   local cookie = args[3]
   headers = {}
   if cookie ~= nil and cookie ~= "-" then
      headers["Cookie"] = "JSESSIONID=" .. cookie
   end
   if mode == "constant" then
      fixed = wrk.format("GET", "/bench/constant", {})
   elseif mode == "me" then
      fixed = wrk.format("GET", "/api/v2/me", headers)
   elseif mode == "update" then
      headers["Content-Type"] = "application/json"
      ids = {}
      for i = 4, #args do
         if (i - 4) % threads == tid then
            ids[#ids + 1] = args[i]
         end
      end
      if #ids == 0 then
         -- fewer interactions than threads: share them
         for i = 4, #args do ids[#ids + 1] = args[i] end
      end
   else
      error("unknown mode " .. tostring(mode))
   end
end

function request()
   if fixed ~= nil then
      return fixed
   end
   counter = counter + 1
   local id = ids[next_id]
   next_id = next_id % #ids + 1
   local body = '{"operationName":"UpdateProperties","userData":{"n":' .. counter .. '}}'
   return wrk.format("POST", "/api/v2/me/interactions/" .. id, headers, body)
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"mean":%.1f,"stdev":%.1f,"max":%d,' ..
      '"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.mean, latency.stdev, latency.max,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9)))
end
