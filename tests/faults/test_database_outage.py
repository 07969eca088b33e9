"""The database restarting mid-traffic, on PostgreSQL (always: this module uses its own schema
of postgresql://postgres@127.0.0.1:5432/test whatever database the suite runs on), against a
gunicorn node that reaches PostgreSQL through a TCP proxy the test controls.

- proxy closed (the database is down): 503 + Retry-After, a readable page, JSON OAuth errors on
  protocol endpoints, no stack trace; proxy reopened: the node recovers by itself;
- every connection of the node terminated (pg_terminate_backend): the next request succeeds;
- a connection killed inside a transaction (a trigger that calls pg_terminate_backend at the
  audit INSERT): a failed login's lockout count, a token issue and a completed sign-in are each
  all or nothing, and the audit chain stays intact.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyotp
import pytest
import requests
import sqlalchemy as sa

from tests.e2e.conftest import Server
from tests.faults.conftest import gunicorn_node
from tests.faults.tcp_proxy import TcpProxy
from tests.helpers import csrf_from

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
IDP = str(Path(sys.executable).parent / "idp")
PASSWORD = "Quartz-Meadow-Lantern-47!"
USERNAME = "np.fault"


@dataclass
class Node:
    server: Server
    proxy: TcpProxy
    engine: sa.Engine        # direct to PostgreSQL, this module's schema
    app_name: str            # application_name of the node's connections
    env: dict[str, str]      # the node's environment (direct URL), for `idp` commands
    client_id: str
    client_secret: str
    totp: pyotp.TOTP

    def url(self, path: str) -> str:
        return self.server.url(path)

    def token(self) -> requests.Response:
        basic = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        return requests.post(self.url("/token"), timeout=30, headers={
            "Authorization": f"Basic {basic}"}, data={
            "grant_type": "client_credentials", "scope": "system/Patient.rs"})

    def scalar(self, sql: str, **params: object) -> object:
        with self.engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar()


def _idp(env: dict[str, str], *args: str) -> dict:
    result = subprocess.run([IDP, *args, "--json"], env={**os.environ, **env},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def node(env: dict[str, str], workdir: Path):
    schema = f"fault_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(f"{PG}?options=-csearch_path%3D{schema}")
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    direct = {**env, "DATABASE_URL": f"{PG}?options=-csearch_path%3D{schema}"}
    proxy = TcpProxy(5432)
    app_name = f"idp-{schema}"
    try:
        _idp(direct, "db", "upgrade")
        _idp(direct, "users", "create", "--username", USERNAME, "--email",
             "np.fault@hospital.example", "--role", "physician", "--password", PASSWORD)
        secret = _idp(direct, "mfa", "enroll-totp", USERNAME)["secret"]
        service = _idp(direct, "clients", "create", "--name", "fault-service",
                       "--redirect-uri", "https://svc.example/cb",
                       "--grant-type", "client_credentials", "--scope", "system/Patient.rs")
        proxied = (f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/test"
                   f"?options=-csearch_path%3D{schema}&application_name={app_name}")
        with gunicorn_node(env, workdir / "db-outage", DATABASE_URL=proxied) as server:
            yield Node(server, proxy, engine, app_name, direct, service["client_id"],
                       service["client_secret"], pyotp.TOTP(secret))
    finally:
        proxy.close()
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def _wait_until_ok(node: Node, seconds: float = 20.0) -> requests.Response:
    deadline = time.monotonic() + seconds
    while True:
        response = node.token()
        if response.status_code == 200 or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def test_database_down_answers_503_and_recovers(node: Node):
    assert node.token().status_code == 200
    http = requests.Session()
    page = http.get(node.url("/login"), timeout=10)
    csrf = csrf_from(page.text)

    node.proxy.close()  # the database goes away mid-traffic
    try:
        token = node.token()
        assert token.status_code == 503
        assert token.headers["Retry-After"].isdigit()
        assert token.json()["error"] == "temporarily_unavailable"
        assert token.headers["Cache-Control"] == "no-store"

        login = http.post(node.url("/login"), allow_redirects=False, timeout=30, data={
            "username": USERNAME, "password": PASSWORD, "csrf_token": csrf})
        assert login.status_code == 503 and login.headers["Retry-After"].isdigit()
        assert login.headers["Content-Type"].startswith("text/html")
        assert "briefly unavailable" in login.text
        for body in (token.text, login.text):
            assert "Traceback" not in body and "psycopg" not in body \
                and "OperationalError" not in body

        ready = requests.get(node.url("/readyz"), timeout=10)
        assert ready.status_code == 503
    finally:
        node.proxy.open()  # the database is back

    assert _wait_until_ok(node).status_code == 200  # no restart needed
    page = http.get(node.url("/login"), timeout=10)
    login = http.post(node.url("/login"), allow_redirects=False, timeout=30, data={
        "username": USERNAME, "password": PASSWORD, "csrf_token": csrf_from(page.text)})
    assert login.status_code == 302 and "/mfa/challenge" in login.headers["Location"]
    assert "Traceback" not in node.server.full_log()


def test_terminated_connections_are_replaced(node: Node):
    assert node.token().status_code == 200  # the pool holds a connection now
    with node.engine.connect() as conn:
        killed = conn.execute(sa.text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = :name"), {"name": node.app_name}).scalar()
    assert killed >= 1
    # pool_pre_ping notices the dead connection and opens a new one: no error at all
    assert [node.token().status_code for _ in range(3)] == [200, 200, 200]


KILLER = """
CREATE OR REPLACE FUNCTION kill_connection() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NEW; END $$;
"""


class KillAt:
    """While active, the node's connection dies at the INSERT of this audit event, i.e. in the
    middle of the transaction that records it (the change itself is already written)."""

    def __init__(self, node: Node, event: str) -> None:
        self.node, self.event = node, event

    def __enter__(self) -> KillAt:
        with self.node.engine.begin() as conn:
            conn.execute(sa.text(KILLER))
            conn.execute(sa.text(
                "CREATE TRIGGER kill_at_event BEFORE INSERT ON audit_events FOR EACH ROW "
                f"WHEN (NEW.event = '{self.event}') EXECUTE FUNCTION kill_connection()"))
        return self

    def __exit__(self, *exc: object) -> None:
        with self.node.engine.begin() as conn:
            conn.execute(sa.text("DROP TRIGGER kill_at_event ON audit_events"))


def _events(node: Node, event: str) -> int:
    return node.scalar("SELECT count(*) FROM audit_events WHERE event = :e", e=event)


def _failed_logins(node: Node) -> int:
    return node.scalar("SELECT failed_logins FROM users WHERE username = :u", u=USERNAME)


def _password_step(node: Node, http: requests.Session, password: str) -> requests.Response:
    page = http.get(node.url("/login"), timeout=10)
    return http.post(node.url("/login"), allow_redirects=False, timeout=30, data={
        "username": USERNAME, "password": password, "csrf_token": csrf_from(page.text)})


def test_a_failed_login_and_its_lockout_count_are_all_or_nothing(node: Node):
    before, events = _failed_logins(node), _events(node, "login.failure")
    with KillAt(node, "login.failure"):
        response = _password_step(node, requests.Session(), "Wrong-Password-123!")
        assert response.status_code == 503
    # the counter's UPDATE ran before the connection died: it must not have survived alone
    assert (_failed_logins(node), _events(node, "login.failure")) == (before, events)
    response = _password_step(node, requests.Session(), "Wrong-Password-123!")
    assert response.status_code == 401
    assert (_failed_logins(node), _events(node, "login.failure")) == (before + 1, events + 1)


def test_a_token_issue_is_all_or_nothing(node: Node):
    rows, events = node.scalar("SELECT count(*) FROM oauth_access_tokens"), \
        _events(node, "token.issued")
    with KillAt(node, "token.issued"):
        assert node.token().status_code == 503
    assert node.scalar("SELECT count(*) FROM oauth_access_tokens") == rows
    assert _events(node, "token.issued") == events
    assert _wait_until_ok(node).status_code == 200
    assert node.scalar("SELECT count(*) FROM oauth_access_tokens") == rows + 1
    assert _events(node, "token.issued") == events + 1


def test_a_sign_in_is_all_or_nothing_and_the_audit_chain_holds(node: Node):
    sessions = "SELECT count(*) FROM sso_sessions s JOIN users u ON u.id = s.user_id " \
               "WHERE u.username = :u"
    http = requests.Session()
    first = _password_step(node, http, PASSWORD)
    assert first.status_code == 302
    challenge = http.get(node.url("/mfa/challenge"), timeout=10)
    code = node.totp.now()
    with KillAt(node, "login.success"):
        done = http.post(node.url("/mfa/challenge"), allow_redirects=False, timeout=30, data={
            "code": code, "csrf_token": csrf_from(challenge.text)})
        assert done.status_code == 503
    assert node.scalar(sessions, u=USERNAME) == 0
    assert _events(node, "login.success") == 0
    # nothing was kept, not even the TOTP step's "used once" mark: the same code now works
    challenge = http.get(node.url("/mfa/challenge"), timeout=10)
    done = http.post(node.url("/mfa/challenge"), allow_redirects=False, timeout=30, data={
        "code": code, "csrf_token": csrf_from(challenge.text)})
    assert done.status_code == 302, done.text[:500]
    assert node.scalar(sessions, u=USERNAME) == 1
    assert _events(node, "login.success") == 1
    assert _failed_logins(node) == 0  # the completed sign-in reset the count
    verified = subprocess.run([IDP, "audit", "verify", "--json"],
                              env={**os.environ, **node.env}, capture_output=True, text=True,
                              timeout=60)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "Traceback" not in node.server.full_log()


def test_connections_killed_under_concurrent_traffic_leave_nothing_half_written(node: Node):
    """Token requests and wrong-password sign-ins from several threads while a killer
    terminates the node's connections again and again: every answer is 200/401/429 or 503
    (never 500), and afterwards the access-token rows and their audit events are equal in
    number, the lockout count equals its audited failures, and the chain verifies."""
    import random
    import threading

    _idp(node.env, "users", "create", "--username", "np.race", "--email",
         "np.race@hospital.example", "--role", "physician", "--password", PASSWORD)
    tokens_before = node.scalar("SELECT count(*) FROM oauth_access_tokens")
    events_before = _events(node, "token.issued")
    statuses: list[int] = []
    stop = threading.Event()
    kills = [0]

    def tokens() -> None:
        while not stop.is_set():
            statuses.append(node.token().status_code)

    def failures() -> None:
        while not stop.is_set():
            http = requests.Session()
            page = http.get(node.url("/login"), timeout=30)
            if page.status_code != 200:
                statuses.append(page.status_code)
                continue
            statuses.append(http.post(node.url("/login"), allow_redirects=False, timeout=30,
                                      data={"username": "np.race", "password": "Wrong-Pass-1!",
                                            "csrf_token": csrf_from(page.text)}).status_code)

    def killer() -> None:
        while not stop.is_set():
            with node.engine.connect() as conn:
                kills[0] += conn.execute(sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = :name"), {"name": node.app_name}).scalar()
            time.sleep(random.uniform(0.1, 0.8))

    threads = [threading.Thread(target=f) for f in (tokens, tokens, tokens, failures, killer)]
    for thread in threads:
        thread.start()
    time.sleep(8)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)

    seen = {s: statuses.count(s) for s in set(statuses)}  # e.g. 200: 431, 401: 7, 503: 50
    assert kills[0] >= 5, seen
    assert set(statuses) <= {200, 401, 429, 503}, seen
    assert statuses.count(200) >= 5
    issued = node.scalar("SELECT count(*) FROM oauth_access_tokens") - tokens_before
    assert issued == _events(node, "token.issued") - events_before
    failed = node.scalar("SELECT failed_logins FROM users WHERE username = 'np.race'")
    assert failed >= 1 and 401 in statuses, seen  # some failures did get through
    audited = node.scalar("SELECT count(*) FROM audit_events e JOIN users u ON u.id = e.user_id"
                          " WHERE u.username = 'np.race' AND e.event = 'login.failure' "
                          "AND e.detail::text LIKE '%bad_password%'")
    assert failed == audited
    verified = subprocess.run([IDP, "audit", "verify", "--json"],
                              env={**os.environ, **node.env}, capture_output=True, text=True,
                              timeout=60)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "Traceback" not in node.server.full_log() and "unhandled" not in node.server.full_log()
