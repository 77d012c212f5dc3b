-- wrk script for benchmarks/cluster/run.py: UpdateProperties round trips with a session cookie.
--
-- wrk -t2 -c32 -d10s -s bench.lua http://127.0.0.1:HAPROXY -- THREADS COOKIE ID [ID ...]
--
-- Each request: POST /api/v2/me/interactions/{id}
--   {"operationName":"UpdateProperties","userData":{"n":<counter>}}
-- with "Cookie: JSESSIONID=<COOKIE>". Thread t (0-based) takes the ids at positions t,
-- t+THREADS, ... and cycles through them in order (wrk's Lua API does not say which connection
-- a request goes out on, so there is no id per connection). With more ids per thread than
-- connections per thread, two requests for one id are in flight at once only when one request
-- is slower than a whole cycle of the others.
-- done() prints one line "BENCH {json}": counts, errors and latency percentiles in µs.

local thread_count = 0

function setup(thread)
   thread:set("tid", thread_count)
   thread_count = thread_count + 1
end

local ids, headers
local next_id, counter = 1, 0

function init(args)
   local threads = tonumber(args[1])
   headers = {
      ["Cookie"] = "JSESSIONID=" .. args[2],
      ["Content-Type"] = "application/json",
   }
   ids = {}
   for i = 3, #args do
      if (i - 3) % threads == tid then
         ids[#ids + 1] = args[i]
      end
   end
   if #ids == 0 then
      -- fewer ids than threads: every thread cycles through all of them
      for i = 3, #args do ids[#ids + 1] = args[i] end
   end
end

function request()
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
