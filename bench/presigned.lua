-- wrk script: cycle through pre-signed Twilio requests (signatures computed in Python
-- beforehand, so wrk does no crypto) and classify every answer.
-- Args: <requests file> <threads>. One request per line: path TAB body TAB signature.
-- Thread k takes lines k, k+threads, ...: every CallSid is used by exactly one thread.

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  local nthreads = tonumber(args[2])
  reqs = {}
  local i = 0
  for line in io.lines(args[1]) do
    if i % nthreads == id then
      local path, body, sig = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)$")
      reqs[#reqs + 1] = wrk.format("POST", path, {
        ["Content-Type"] = "application/x-www-form-urlencoded",
        ["X-Twilio-Signature"] = sig,
      }, body)
    end
    i = i + 1
  end
  n, ok, bad, wrapped = 0, 0, 0, 0
end

function request()
  n = n + 1
  if n > #reqs then
    n = 1
    wrapped = 1
  end
  return reqs[n]
end

-- A 200 is not enough: "please try again later" is a 200 too. Count only the answers a
-- working service gives: the first prompt (its gather posts to /voice/account; a re-prompt
-- adds ?attempt=), the card prompt, the PIN prompt with a ciphertext, the account.
function response(status, headers, body)
  if status == 200 and (body:find("vault%3Av", 1, true) or body:find("AC12345678", 1, true)
                        or body:find("payment card", 1, true)
                        or body:find('action="/voice/account"', 1, true)) then
    ok = ok + 1
  else
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local ok_total, bad_total, wrapped_total = 0, 0, 0
  for _, t in ipairs(threads) do
    ok_total = ok_total + t:get("ok")
    bad_total = bad_total + t:get("bad")
    wrapped_total = wrapped_total + t:get("wrapped")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "max_us": %d, "ok": %d, "bad": %d, "wrapped": %d, "errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, ok_total, bad_total, wrapped_total,
    e.connect + e.read + e.write + e.status + e.timeout))
end
