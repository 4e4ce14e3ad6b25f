-- wrk script: POST the body in file $BENCH_BODY with "Authorization: Bearer
-- $BENCH_KEY" (or, with $BENCH_KEYS naming a file of keys, one per line, the
-- keys in turn); prints one machine-readable summary line (WRKJSON {...}).
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")

local keys_file = os.getenv("BENCH_KEYS")
if keys_file and keys_file ~= "" then
  local reqs, i = {}, 0
  function init(args)
    for k in io.lines(keys_file) do
      local h = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. k}
      table.insert(reqs, wrk.format("POST", nil, h, wrk.body))
    end
    i = math.random(#reqs)
  end
  function request()
    i = i % #reqs + 1
    return reqs[i]
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
