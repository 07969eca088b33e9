-- wrk script: POST a form body (env BODY) with an Authorization header (env AUTH), optionally
-- paced: each connection waits DELAY_MS before each request (a fixed, lower request rate).
wrk.method = "POST"
wrk.body = os.getenv("BODY")
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
if os.getenv("AUTH") and os.getenv("AUTH") ~= "" then wrk.headers["Authorization"] = os.getenv("AUTH") end
local pause = tonumber(os.getenv("DELAY_MS") or "0")
if pause > 0 then delay = function() return pause end end
local bad = 0
response = function(status, headers, body) if status ~= 200 then bad = bad + 1 end end
done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.1f p50_ms=%.2f p95_ms=%.2f p99_ms=%.2f non200=%d requests=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    bad + summary.errors.status, summary.requests))
end
