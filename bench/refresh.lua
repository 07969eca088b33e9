-- wrk script: refresh-token grants. Refresh tokens rotate on every use (a reused one revokes
-- its family), so each connection sends a token no request has used yet: a pool is seeded with
-- one token per grant (env TOKENS, space-separated; at least as many as connections) and each
-- answer puts the new token back. Env AUTH: HTTP Basic credentials of the client.
-- Run with one wrk thread (-t1): the pool is per thread. wrk calls request() once before the
-- run to check the script (script_verify_request), which takes one token that is never sent:
-- use at most (tokens - 1) connections, or one connection only sends "exhausted" (a 400).
-- done() runs in wrk's main Lua state, where `bad` stays 0: non200 is wrk's own count of
-- answers >= 400, and the first failed answer is written from the thread (FIRST_BAD).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = os.getenv("AUTH")
local pool = {}
for token in string.gmatch(os.getenv("TOKENS") or "", "%S+") do pool[#pool + 1] = token end
local bad = 0
local first_bad = nil
request = function()
  local token = table.remove(pool) or "exhausted"
  return wrk.format(nil, nil, nil, "grant_type=refresh_token&refresh_token=" .. token)
end
response = function(status, headers, body)
  local token = body and string.match(body, '"refresh_token"%s*:%s*"([^"]+)"')
  if status == 200 and token then
    pool[#pool + 1] = token
  else
    bad = bad + 1
    if not first_bad then  -- written from this thread's state: done() runs in another one
      first_bad = status .. " " .. string.sub(body or "", 1, 160)
      io.write("FIRST_BAD " .. first_bad .. "\n")
    end
  end
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.1f p50_ms=%.2f p95_ms=%.2f p99_ms=%.2f non200=%d requests=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    bad + summary.errors.status, summary.requests))
end
