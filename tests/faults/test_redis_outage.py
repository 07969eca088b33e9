"""Redis down: rate limits fall back to in-process counting (and the log says so); sign-in keeps
working. Redis is reached through a TCP proxy the test closes."""

from __future__ import annotations

import time
from pathlib import Path

import pyotp
import redis
import requests

from idp.context import policy
from tests.conftest import RATELIMIT_PREFIX
from tests.e2e.conftest import Server, flush_limits
from tests.faults.conftest import gunicorn_node
from tests.faults.tcp_proxy import TcpProxy
from tests.helpers import PASSWORD, TOTP_SECRETS, csrf_from, make_user

REDIS_DB = 14  # 15 is test_two_nodes'; other runs may share this server: keys under this
# run's prefix only (tests.conftest.RATELIMIT_PREFIX)
REDIS = f"redis://127.0.0.1:6379/{REDIS_DB}"


def _password_step(node: Server, http: requests.Session, username: str, password: str
                   ) -> requests.Response:
    page = http.get(node.url("/login"), timeout=10)
    return http.post(node.url("/login"), allow_redirects=False, timeout=30, data={
        "username": username, "password": password, "csrf_token": csrf_from(page.text)})


def _sign_in(node: Server, username: str) -> requests.Response:
    http = requests.Session()
    first = _password_step(node, http, username, PASSWORD)
    assert first.status_code == 302 and "/mfa/challenge" in first.headers["Location"], \
        first.status_code
    challenge = http.get(node.url("/mfa/challenge"), timeout=10)
    return http.post(node.url("/mfa/challenge"), allow_redirects=False, timeout=30, data={
        "code": pyotp.TOTP(TOTP_SECRETS[username]).now(), "csrf_token": csrf_from(challenge.text)})


def test_rate_limits_fall_back_to_memory_when_redis_is_down(ctx, env, workdir: Path):
    make_user("np.one", npi=None)
    make_user("np.two", npi="1245319599")
    make_user("np.three", npi=None)
    store = redis.Redis.from_url(REDIS)
    flush_limits(REDIS)
    proxy = TcpProxy(6379)
    limit = int(policy().lockout.per_account_limit.split()[0])
    try:
        with gunicorn_node(env, workdir / "redis-outage",
                           REDIS_URL=f"redis://127.0.0.1:{proxy.port}/{REDIS_DB}") as node:
            # Redis up: the limits are counted there
            assert _password_step(node, requests.Session(), "np.one", "wrong-x").status_code \
                == 401
            assert store.keys(f"*{RATELIMIT_PREFIX}*"), "limits were not counted in Redis"

            proxy.close()  # Redis is gone
            flush_limits(REDIS)
            started = time.monotonic()
            assert _sign_in(node, "np.one").status_code == 302  # sign-in keeps working
            assert time.monotonic() - started < 15
            # ... and the per-account throttle still holds, counted in process memory
            statuses = [_password_step(node, requests.Session(), "np.two", "wrong-x")
                        .status_code for _ in range(limit + 1)]
            assert statuses[:limit] == [401] * limit and statuses[limit] == 429, statuses
            assert not store.keys(f"*{RATELIMIT_PREFIX}*")  # nothing reached Redis meanwhile
            log = node.full_log()
            assert "rate limits: Rate limit storage unreachable - falling back to in-memory " \
                "storage" in log, node.stderr()
            assert "unhandled" not in log and "Traceback" not in log, node.stderr()

            proxy.open()  # Redis is back: the limiter checks it now and then and returns to it
            deadline = time.monotonic() + 40  # it re-checks after 1, 2, 4, ... seconds
            while not store.keys(f"*{RATELIMIT_PREFIX}*") and time.monotonic() < deadline:
                _password_step(node, requests.Session(), "np.three", "wrong-x")
                time.sleep(0.5)
            assert store.keys(f"*{RATELIMIT_PREFIX}*"), "the limiter did not return to Redis"
            assert "rate limits: Rate limit storage recovered" in node.full_log()
    finally:
        proxy.close()
        flush_limits(REDIS)


