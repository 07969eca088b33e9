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
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from idp.config import PROJECT_ROOT
from idp.extensions import db
from tests.helpers import PASSWORD, Rp, csrf_from, make_client, make_user

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
        return _tail(self.log_dir / "gunicorn.stderr")


@pytest.fixture(scope="session")
def idp_server(app, env: dict[str, str], workdir: Path):
    """Start `gunicorn idp.wsgi:app` on a free loopback port; yield a Server; stop it."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_dir = workdir / "gunicorn"
    log_dir.mkdir(exist_ok=True)
    child_env = {**os.environ, **env, "IDP_ISSUER": base}
    # The test process's own settings must not leak in through os.environ.
    child_env.pop("IDP_PROXY_HOPS", None)
    cmd = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2",
           "--no-control-socket",
           "--access-logfile", "-", "--graceful-timeout", "5", "idp.wsgi:app"]
    with open(log_dir / "gunicorn.stdout", "wb") as out, \
            open(log_dir / "gunicorn.stderr", "wb") as err:
        proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=child_env, stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL)
    server = Server(base, log_dir)
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
    # A 500 anywhere in the run would show up as an unhandled error in the log.
    assert "unhandled" not in server.stderr(), server.stderr()


def _wait_ready(proc: subprocess.Popen, server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"gunicorn exited with {proc.returncode} before it was ready:\n"
                        f"{server.stderr()}", pytrace=False)
        try:
            response = requests.get(server.url("/readyz"), timeout=2)
            if response.status_code == 200 and response.json().get("status") == "ready":
                return
            last = f"{response.status_code} {response.text[:200]}"
        except requests.RequestException as exc:
            last = type(exc).__name__
        time.sleep(0.1)
    pytest.fail(f"gunicorn was not ready within {START_TIMEOUT}s (last: {last}):\n"
                f"{server.stderr()}", pytrace=False)


@dataclass(frozen=True)
class Person:
    username: str
    npi: str | None
    subject: str
    password: str
    email: str


@pytest.fixture
def person(ctx) -> Person:
    """A committed user, as plain values (no ORM object to lazy-load while gunicorn writes)."""
    user = make_user(license_state="CA", facility="General Hospital", department="Cardiology")
    found = Person(user.username, user.npi, user.subject, PASSWORD, user.email)
    db.session.commit()  # end the read transaction: SQLite writers in gunicorn must not wait
    return found


def seed_client(**kwargs) -> Rp:
    """make_client(...) and end the transaction, for the same reason as `person`."""
    rp = make_client(**kwargs)
    db.session.commit()
    return rp


def browser_sign_in(server: Server, authorization_url: str, username: str, password: str,
                    redirect_uri: str) -> str:
    """The browser's part of the code flow, over plain HTTP: follow /authorize to /login, fill
    the form (csrf_token, next), come back to /authorize and return the redirect to the RP
    (the Location header, not followed: nothing serves the redirect_uri)."""
    http = requests.Session()
    first = http.get(authorization_url, allow_redirects=False, timeout=10)
    assert first.status_code == 302, first.text[:500]
    login_url = requests.compat.urljoin(authorization_url, first.headers["Location"])
    assert login_url.startswith(server.url("/login?")), login_url
    page = http.get(login_url, timeout=10)
    assert page.status_code == 200, page.text[:500]
    next_url = re.search(r'name="next" value="([^"]+)"', page.text)
    assert next_url, "login form has no next field"
    signed_in = http.post(server.url("/login"), allow_redirects=False, timeout=10, data={
        "username": username, "password": password, "csrf_token": csrf_from(page.text),
        "next": html.unescape(next_url.group(1))})
    assert signed_in.status_code == 302, signed_in.text[:500]
    back = requests.compat.urljoin(server.base, signed_in.headers["Location"])
    assert back.startswith(server.url("/authorize?")), back
    final = http.get(back, allow_redirects=False, timeout=10)
    assert final.status_code == 302, final.text[:500]
    location = final.headers["Location"]
    assert location.startswith(redirect_uri + "?"), location
    return location
