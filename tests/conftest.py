"""Fixtures: a real database (SQLite file, or a fresh PostgreSQL schema when DATABASE_URL is
set), real key files, the app with migrations applied, and time that tests can move."""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient

from idp import clock, create_app, enable_migrations
from idp.config import POLICY_DIR, Settings
from idp.extensions import db, limiter
from idp.oidc import revocation_cache

# Every log line of the run is scanned for secrets (log_scan); a real slapd for the LDAP tests
# (ldap_server: fixtures slapd, ldap_app, lctx, lclient).
pytest_plugins = ("tests.log_scan", "tests.ldap_server")

# Cheap argon2 for speed; the production parameters are exercised in tests/unit.
TEST_POLICY = {"password.argon2": {"time_cost": 1, "memory_cost": 1024, "parallelism": 1}}
TEST_ISSUER = "http://idp.test"
RATELIMIT_PREFIX = f"idp-limits-test-{uuid.uuid4().hex[:12]}"


def _database(tmp: Path) -> tuple[str, str | None]:
    url = os.environ.get("DATABASE_URL")
    if not url:
        return f"sqlite:///{tmp / 'test.sqlite3'}", None
    url = url.replace("postgresql://", "postgresql+psycopg://", 1) \
        if url.startswith("postgresql://") else url
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}", schema


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("idp")


@pytest.fixture(scope="session")
def database(workdir: Path):
    url, schema = _database(workdir)
    yield url
    if schema:
        engine = sa.create_engine(os.environ["DATABASE_URL"].replace(
            "postgresql://", "postgresql+psycopg://", 1))
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Mailbox:
    """A real SMTP server (aiosmtpd) on loopback; `messages` holds what arrived."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list = []
        box = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802
                from email import message_from_bytes, policy

                from tests.log_scan import register_mail_secrets

                message = message_from_bytes(envelope.content, policy=policy.default)
                box.messages.append(message)
                register_mail_secrets(message)
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def to(self, address: str) -> list:
        return [m for m in self.messages if m["To"] == address]

    def body(self, message) -> str:
        return message.get_body(preferencelist=("plain",)).get_content()


@pytest.fixture(scope="session")
def smtp_server():
    box = Mailbox()
    yield box
    box.controller.stop()


@pytest.fixture
def mailbox(smtp_server):
    smtp_server.messages.clear()
    return smtp_server


@pytest.fixture(scope="session")
def env(workdir: Path, database: str, smtp_server) -> dict[str, str]:
    """The environment every IdP of this test session runs with (in-process or gunicorn)."""
    from tests.log_scan import register

    register("IDP_SECRET_KEY", "test-secret-key-0123456789-abcdefghijklmnop")
    return {
        "IDP_ISSUER": TEST_ISSUER,
        "DATABASE_URL": database,
        "IDP_KEYS_DIR": str(workdir / "keys"),
        "IDP_INSTANCE_DIR": str(workdir / "instance"),
        "IDP_POLICY_DIR": str(POLICY_DIR),
        "IDP_SECRET_KEY": "test-secret-key-0123456789-abcdefghijklmnop",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp_server.port),
        # Rate limits in the shared Redis under a key prefix of this run's own: two suites
        # running at once (SQLite and PostgreSQL, two developers) neither count nor flush
        # each other's limits.
        "IDP_RATELIMIT_PREFIX": RATELIMIT_PREFIX,
        # The relying parties, SMS gateway and registry fakes of the tests listen on loopback:
        # the outbound allow-list (idp/core/outbound.py) lets the IdP reach them, no code path.
        "IDP_OUTBOUND_ALLOW": "127.0.0.0/8 ::1",
    }


class ClosingClient(FlaskClient):
    """Reads and closes each response as a WSGI server does, so work registered to run after
    the response (response.call_on_close: deferred emails) happens before the test looks."""

    def open(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        kwargs.setdefault("buffered", True)
        return super().open(*args, **kwargs)


@pytest.fixture(scope="session")
def app(env: dict[str, str]):
    from flask_migrate import upgrade

    application = create_app(Settings.from_env(env), policy_overrides=TEST_POLICY)
    application.config["TESTING"] = True
    application.test_client_class = ClosingClient

    def _fresh_g() -> None:
        # Tests hold an app context open (the `ctx` fixture) while the test client makes
        # requests, and Flask then reuses that context, `g` included. In production every
        # request has its own: give each test request an empty `g` as well.
        from flask import g

        g.__dict__.clear()

    # First of all hooks (before idp.web.gates reads the session into g).
    application.before_request_funcs.setdefault(None, []).insert(0, _fresh_g)
    with application.app_context():
        enable_migrations(application)
        upgrade(revision="heads")  # the real migrations, not create_all
    return application


@pytest.fixture(autouse=True)
def _clean_tables(request: pytest.FixtureRequest):
    """Each test starts with empty tables and fresh rate limits."""
    yield
    if "app" not in request.fixturenames:
        return
    application = request.getfixturevalue("app")
    with application.app_context():
        limiter.reset()
        db.session.rollback()
        for table in reversed(db.metadata.sorted_tables):
            db.session.execute(table.delete())
        db.session.commit()
    revocation_cache.clear()  # account ids come again in the next test's emptied tables


@pytest.fixture
def ctx(app):
    with app.app_context():
        yield app


@pytest.fixture
def client(app):
    return app.test_client()


class Clock:
    """Moves idp.clock.now(); everything time-dependent in the IdP reads it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.offset = timedelta(0)
        real = clock.now.__wrapped__ if hasattr(clock.now, "__wrapped__") else clock.now

        def fake_now() -> datetime:
            return real() + self.offset

        monkeypatch.setattr(clock, "now", fake_now)

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch)
