-- wrk script for rag-service: a mix of searches (8-way fan-outs), answers (three short windows
-- around the fake model) and agent steps (coalesced writes). `wrk ... -s mix.lua -- search`
-- sends searches only. Prints one JSON line at the end: requests/s, non-2xx share, p50/p99.
local counter = 0
local only = nil

local nonce = ""

function init(args)
  only = args[1]
  -- Each thread and each run its own draws and keys: a key seen before is answered from the
  -- journal without calling the model, which would flatter the run.
  local address = tonumber(tostring({}):match("0x(%x+)") or "0", 16) or 0
  math.randomseed(os.time() + address)
  nonce = string.format("%x%x", os.time(), address % 1000003)
end

function request()
  counter = counter + 1
  local question = "question-" .. math.random(1, 100000)
  local pick = math.random(1, 100)
  if only == "search" or (only == nil and pick <= 80) then
    return wrk.format("GET", "/search?q=" .. question)
  elseif only == "answer" or (only == nil and pick <= 95) then
    return wrk.format("POST", "/answer?q=" .. question .. "&key=" .. nonce .. "-" .. counter)
  else
    return wrk.format("POST", "/agents/agent-" .. math.random(1, 50) .. "/steps?state=thinking")
  end
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "requests_per_s": %.1f, "non_2xx": %d, "socket_errors": %d, "p50_ms": %.2f, "p99_ms": %.2f}\n',
    summary.requests, seconds, summary.requests / seconds, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
