-- wrk script for the soak: requests taken in turn from a weighted mix
-- (dofile($SOAK_MIX) returns {{method, path, headers, body, weight}, ...});
-- runs until stopped (the soak sends SIGINT), then prints a summary line
-- with the status counts of all threads (WRKJSON {...}).
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local mix = dofile(os.getenv("SOAK_MIX"))
  reqs = {}
  for _, m in ipairs(mix) do
    local r = wrk.format(m[1], m[2], m[3], m[4])
    for _ = 1, m[5] do table.insert(reqs, r) end
  end
  -- Threads start at different points of the cycle.
  i = (id * 7919) % #reqs
  counts = {}
end

function request()
  i = i % #reqs + 1
  return reqs[i]
end

function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("counts")) do total[k] = (total[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(total) do table.insert(parts, string.format('"%d":%d', k, v)) end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,' ..
    '"status_errors":%d,"timeouts":%d,"p50_us":%d,"p99_us":%d,"status":{%s}}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), table.concat(parts, ",")))
end
