-- wrk script for bench/ingest.py: one fixed request, and a count of unexpected statuses.
--
-- Environment (read by every wrk thread when it loads this script):
--   BENCH_METHOD        GET or POST (default POST)
--   BENCH_BODY_FILE     file whose bytes are the request body (POST only)
--   BENCH_TOKEN         bearer token (optional)
--   BENCH_EXPECT_STATUS the status that counts as success (default 202)
-- done() prints one line "BENCH_RESULT {json}" that bench/wrk.py parses.

local function read_file(path)
  local file = assert(io.open(path, "rb"))
  local data = file:read("*a")
  file:close()
  return data
end

wrk.method = os.getenv("BENCH_METHOD") or "POST"
local body_file = os.getenv("BENCH_BODY_FILE")
if body_file and body_file ~= "" then
  wrk.body = read_file(body_file)
  wrk.headers["Content-Type"] = "application/json"
end
local token = os.getenv("BENCH_TOKEN")
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end
local expected = tonumber(os.getenv("BENCH_EXPECT_STATUS") or "202")

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  unexpected = 0
  statuses = {}
end

function response(status, headers, body)
  if status ~= expected then
    unexpected = unexpected + 1
  end
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
end

function done(summary, latency, requests)
  local unexpected_total = 0
  local merged = {}
  for _, thread in ipairs(threads) do
    unexpected_total = unexpected_total + thread:get("unexpected")
    for status, count in pairs(thread:get("statuses")) do
      merged[status] = (merged[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(merged) do
    parts[#parts + 1] = string.format('"%s":%d', status, count)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"unexpected":%d,' ..
    '"statuses":{%s},"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes, unexpected_total,
    table.concat(parts, ","), e.connect, e.read, e.write, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
