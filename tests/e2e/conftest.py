"""End-to-end fixtures: the IdP as a real gunicorn process, and what tests seed for it.

The gunicorn process runs with the environment of the session's `env` fixture (same database,
keys, instance dir and secret key) except IDP_ISSUER, which names the real port. The `app`
fixture has run the migrations already; users and clients are created in-process and committed,
so gunicorn sees them.
"""

from __future__ import annotations

import html
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyotp
import pytest
import requests

from idp.config import PROJECT_ROOT
from idp.extensions import db
from tests.conftest import RATELIMIT_PREFIX
from tests.helpers import (
    PASSWORD,
    TOTP_SECRETS,
    Rp,
    csrf_from,
    forget_totp_use,
    make_client,
    make_user,
    wait_ready,
)

START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, limit: int = 6000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return "(no output)"


@dataclass(frozen=True)
class Server:
    base: str       # also the issuer
    log_dir: Path

    def url(self, path: str) -> str:
        return self.base + path

    def stderr(self) -> str:
        """The end of the node's stderr, for failure messages."""
        return _tail(self.log_dir / "gunicorn.stderr")

    def full_log(self) -> str:
        """All of the node's stderr, for assertions: one request line per request pushes
        early lines out of stderr()'s tail."""
        return _tail(self.log_dir / "gunicorn.stderr", limit=10**9)


@contextmanager
def gunicorn_process(args: list[str], port: int, child_env: dict[str, str],
                     server: Server) -> Iterator[Server]:
    """`gunicorn idp.wsgi:app` on 127.0.0.1:`port` with `args`, logging into server.log_dir;
    yields `server` once it answers; stops the process."""
    cmd = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}",
           "--no-control-socket", *args, "idp.wsgi:app"]
    with open(server.log_dir / "gunicorn.stdout", "wb") as out, \
            open(server.log_dir / "gunicorn.stderr", "wb") as err:
        proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=child_env, stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL)
    try:
        _wait_ready(proc, server)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(scope="session")
def idp_server(app, env: dict[str, str], workdir: Path):
    """Start `gunicorn idp.wsgi:app` on a free loopback port; yield a Server; stop it."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_dir = workdir / "gunicorn"
    log_dir.mkdir(exist_ok=True)
    # Logged as `idp serve` logs: the app's JSON request lines, no gunicorn access log (its
    # request line holds the path: reset and verification links; the log scan caught them).
    child_env = {**os.environ, **env, "IDP_ISSUER": base, "IDP_LOG_FORMAT": "json"}
    # The test process's own settings must not leak in through os.environ.
    child_env.pop("IDP_PROXY_HOPS", None)
    # gthread, as `idp serve` runs it: a sync worker sits blocked on an idle connection (Chromium
    # opens speculative ones), and two such sockets leave no worker for the next request.
    with gunicorn_process(["--workers", "2", "--worker-class", "gthread", "--threads", "4",
                           "--graceful-timeout", "5"], port, child_env,
                          Server(base, log_dir)) as server:
        yield server
    # A 500 anywhere in the run would show up as an unhandled error in the log.
    assert "unhandled" not in server.full_log(), server.stderr()


def _wait_ready(proc: subprocess.Popen, server: Server) -> None:
    wait_ready(proc, lambda: requests.get(server.url("/readyz"), timeout=2), server.stderr,
               "gunicorn", START_TIMEOUT)


@dataclass(frozen=True)
class Person:
    username: str
    npi: str | None
    subject: str
    password: str
    email: str
    # The seed of the authenticator app make_user() enrolled (None: no factor enrolled);
    # taken from helpers.TOTP_SECRETS when not given.
    totp_secret: str | None = None

    def __post_init__(self) -> None:
        if self.totp_secret is None:
            object.__setattr__(self, "totp_secret", TOTP_SECRETS.get(self.username))

    def totp_now(self) -> str:
        """The code the person's authenticator app shows now (real time: gunicorn's clock)."""
        assert self.totp_secret, f"{self.username} has no authenticator app enrolled"
        return pyotp.TOTP(self.totp_secret).now()


@pytest.fixture
def person(ctx) -> Person:
    """A committed user, as plain values (no ORM object to lazy-load while gunicorn writes);
    an authenticator app is enrolled: person.totp_secret, person.totp_now()."""
    user = make_user(license_state="CA", facility="General Hospital", department="Cardiology")
    found = Person(user.username, user.npi, user.subject, PASSWORD, user.email,
                   TOTP_SECRETS[user.username])
    db.session.commit()  # end the read transaction: SQLite writers in gunicorn must not wait
    return found


def seed_client(**kwargs) -> Rp:
    """make_client(...) and end the transaction, for the same reason as `person`."""
    rp = make_client(**kwargs)
    db.session.commit()
    return rp


def browser_sign_in(server: Server, authorization_url: str, username: str, password: str,
                    redirect_uri: str, *, totp_secret: str | None = None,
                    forget: bool = True, http: requests.Session | None = None,
                    consent: bool = False) -> str:
    """The browser's part of the code flow, over plain HTTP: follow /authorize to /login, fill
    the form (csrf_token, next), then the second step at /mfa/challenge with the code of the
    authenticator app (seed `totp_secret`, by default the one make_user() enrolled), come back
    answering with the redirect to the RP, which is returned (the Location header, not
    followed: nothing serves the redirect_uri); with consent, through /authorize as before.

    `forget` clears the factor's used time step afterwards (helpers.forget_totp_use, test
    set-up only) so that a test may sign the same person in again within the same 30 s; it
    needs the app context the `person` fixture holds. `http`: the browser (its cookies: the
    IdP's SSO session, for a later RP-initiated logout); a new one by default. `consent`:
    the consent page is expected (offline_access asks for it) and allowed."""
    secret = totp_secret or TOTP_SECRETS[username]
    http = http if http is not None else requests.Session()
    first = http.get(authorization_url, allow_redirects=False, timeout=10)
    assert first.status_code == 302, first.text[:500]
    login_url = requests.compat.urljoin(authorization_url, first.headers["Location"])
    assert login_url.startswith(server.url("/login?")), login_url
    page = http.get(login_url, timeout=10)
    assert page.status_code == 200, page.text[:500]
    next_url = re.search(r'name="next" value="([^"]+)"', page.text)
    assert next_url, "login form has no next field"
    password_ok = http.post(server.url("/login"), allow_redirects=False, timeout=10, data={
        "username": username, "password": password, "csrf_token": csrf_from(page.text),
        "next": html.unescape(next_url.group(1))})
    assert password_ok.status_code == 302, password_ok.text[:500]
    challenge_url = requests.compat.urljoin(server.base, password_ok.headers["Location"])
    assert challenge_url == server.url("/mfa/challenge"), challenge_url

    challenge = http.get(challenge_url, allow_redirects=False, timeout=10)
    assert challenge.status_code == 200, challenge.text[:500]
    assert "Code from your authenticator app" in challenge.text, challenge.text[:1500]
    signed_in = http.post(challenge_url, allow_redirects=False, timeout=10, data={
        "code": pyotp.TOTP(secret).now(), "csrf_token": csrf_from(challenge.text)})
    assert signed_in.status_code == 302, signed_in.text[:1500]
    if forget:
        forget_totp_use(username)
    back = requests.compat.urljoin(server.base, signed_in.headers["Location"])
    if not consent:  # the second factor's answer is the authorization response (issue 26)
        assert back.startswith(redirect_uri + "?"), back
        return back
    assert back.startswith(server.url("/authorize?")), back  # consent: asked at /authorize
    final = http.get(back, allow_redirects=False, timeout=10)
    if consent:
        assert final.status_code == 200 and 'name="decision"' in final.text, final.text[:500]
        final = http.post(back, allow_redirects=False, timeout=10, data={
            "decision": "allow", "csrf_token": csrf_from(final.text)})
    assert final.status_code == 302, final.text[:500]
    location = final.headers["Location"]
    assert location.startswith(redirect_uri + "?"), location
    return location


REDIS_URL = "redis://127.0.0.1:6379/15"  # a database of its own, flushed by the tests


class RedisLimits:
    """The rate-limit store the nodes share: this run's keys only (IDP_RATELIMIT_PREFIX), so a
    run at the same time on the same Redis keeps its counts."""

    def flush(self) -> None:
        flush_limits(REDIS_URL)


def flush_limits(url: str) -> None:
    """Delete this test run's rate-limit keys (and nobody else's) from the Redis at `url`."""
    import redis

    store = redis.Redis.from_url(url)
    for key in store.scan_iter(match=f"*{RATELIMIT_PREFIX}*", count=1000):
        store.delete(key)


@pytest.fixture
def redis_limits() -> RedisLimits:
    limits = RedisLimits()
    limits.flush()
    return limits


@pytest.fixture(scope="module")
def two_nodes(app, env: dict[str, str], workdir: Path):
    """Two IdP nodes: separate gunicorn processes on different ports, one issuer, sharing the
    database, the key directory and Redis (rate limits), as behind a load balancer."""
    RedisLimits().flush()
    ports = [free_port(), free_port()]
    issuer = f"http://127.0.0.1:{ports[0]}"
    procs, servers = [], []
    for name, port in zip(("a", "b"), ports, strict=True):
        log_dir = workdir / f"node-{name}"
        log_dir.mkdir(exist_ok=True)
        child_env = {**os.environ, **env, "IDP_ISSUER": issuer, "REDIS_URL": REDIS_URL}
        with open(log_dir / "gunicorn.stdout", "wb") as out, \
                open(log_dir / "gunicorn.stderr", "wb") as err:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers",
                 "2", "--threads", "4", "--no-control-socket", "idp.wsgi:app"],
                cwd=PROJECT_ROOT, env=child_env, stdout=out, stderr=err,
                stdin=subprocess.DEVNULL))
        servers.append(Server(f"http://127.0.0.1:{port}", log_dir))
    try:
        for proc, server in zip(procs, servers, strict=True):
            _wait_ready(proc, server)
        yield servers
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=15)
    for server in servers:
        assert "unhandled" not in server.full_log(), server.stderr()


# -- browser tests: one Chromium and one relying-party page server per module ---------------
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


class _Callback(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.hits.append(self.path)
        body = b"<!doctype html><title>RP</title><p>Back at the relying party.</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def rp_site():
    """The relying party's redirect_uri, really served on loopback; records what arrives."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Callback)
    httpd.hits = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, driven by Playwright (never a downloaded browser)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Exception as exc:  # noqa: BLE001 - any launch failure fails the test
            pytest.fail(f"Chromium did not start from {CHROMIUM}: {exc}", pytrace=False)
        yield chromium
        chromium.close()
