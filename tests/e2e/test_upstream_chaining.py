"""IdP-to-IdP chaining (issue 23): a second instance of this IdP (its own gunicorn, database,
keys and issuer) is the upstream of the IdP under test (the session's gunicorn, idp_server).
The person signs in up there with its password and authenticator app (and its daily
acknowledgment), comes back, proves the local account once (password + authenticator app
here), and is linked by the partner IdP's (iss, sub); the session's amr starts with `fed`.

The second instance always runs on SQLite (a file of its own), whatever DATABASE_URL says: it is
the other organisation's IdP, not the one under test."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from idp.extensions import db
from idp.federation.upstream import service
from idp.federation.upstream.models import UpstreamLink
from idp.sessions.models import SsoSession
from tests.conftest import free_port
from tests.e2e.conftest import Server, gunicorn_process
from tests.helpers import PASSWORD, csrf_from, forget_totp_use, make_user, totp_now
from tests.upstream_support import sign_in_at_this_idp

pytestmark = pytest.mark.e2e

IDP = str(Path(sys.executable).parent / "idp")
UPSTREAM_PASSWORD = "Upstream-Cedar-Lantern-77!"


@dataclasses.dataclass
class SecondIdp:
    server: Server
    client_id: str
    client_secret: str
    totp_secret: str


@pytest.fixture(scope="module")
def second_idp(env: dict[str, str], idp_server: Server,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecondIdp]:
    from tests.log_scan import register

    tmp = tmp_path_factory.mktemp("second-idp")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    child = {**os.environ, **env, "IDP_ISSUER": base,
             "DATABASE_URL": f"sqlite:///{tmp / 'second.sqlite3'}",
             "IDP_INSTANCE_DIR": str(tmp / "instance"), "IDP_KEYS_DIR": str(tmp / "keys"),
             "IDP_RATELIMIT_PREFIX": f"second-{port}", "IDP_LOG_FORMAT": "json"}
    child.pop("IDP_PROXY_HOPS", None)

    def idp(*args: str) -> dict:
        done = subprocess.run([IDP, *args, "--json"], env=child, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    idp("db", "upgrade")
    register("password", UPSTREAM_PASSWORD)
    idp("users", "create", "--username", "ana.up", "--email", "ana@partner.example",
        "--role", "physician", "--password", UPSTREAM_PASSWORD, "--given-name", "Ana",
        "--family-name", "Smith")
    secret = idp("mfa", "enroll-totp", "ana.up")["secret"]
    register("TOTP seed", secret)
    client = idp("clients", "create", "--name", "Downstream IdP", "--redirect-uri",
                 idp_server.url("/upstream/partner/callback"), "--scope",
                 "openid profile email", "--first-party", "--backchannel-logout-uri",
                 idp_server.url("/upstream/partner/backchannel-logout"))
    register("client secret", client["client_secret"])
    log_dir = tmp / "logs"
    log_dir.mkdir()
    with gunicorn_process(["--workers", "1", "--worker-class", "gthread", "--threads", "4"],
                          port, child, Server(base, log_dir)) as server:
        yield SecondIdp(server, client["client_id"], client["client_secret"], secret)


def _sign_in_upstream(http: requests.Session, url: str, second: SecondIdp) -> str:
    """The browser at the upstream IdP: its login, authenticator app and acknowledgment; returns
    the URL it sends the browser back to (ours)."""
    return sign_in_at_this_idp(http, url, second.server.base, "ana.up", UPSTREAM_PASSWORD,
                               second.totp_secret)


def _form_post(http: requests.Session, server: Server, path: str, data: dict
               ) -> requests.Response:
    page = http.get(server.url(path), timeout=10)
    assert page.status_code == 200, page.text[:500]
    return http.post(server.url(path), data={**data, "csrf_token": csrf_from(page.text)},
                     allow_redirects=False, timeout=10)


def test_this_idp_signs_in_through_another_instance_of_itself(ctx, idp_server, second_idp):
    """The IdP under test runs in gunicorn (idp_server, issuer http://127.0.0.1:PORT); the
    browser is a requests session at both."""
    person = make_user()
    row = service.create(name="partner", issuer=second_idp.server.base,
                         client_id=second_idp.client_id,
                         client_secret=second_idp.client_secret, actor="test")
    db.session.commit()
    browser = requests.Session()

    start = browser.get(idp_server.url("/upstream/partner/start?next=/account"),
                        allow_redirects=False, timeout=10)
    assert start.status_code == 302, start.text[:300]
    back = _sign_in_upstream(browser, start.headers["Location"], second_idp)
    assert back.startswith(idp_server.url("/upstream/partner/callback?")) and "iss=" in back
    answer = browser.get(back, allow_redirects=False, timeout=10)
    assert answer.headers["Location"] == "/upstream/link", answer.text[:500]
    proven = _form_post(browser, idp_server, "/upstream/link",
                        {"username": person.username, "password": PASSWORD})
    assert proven.headers["Location"] == "/mfa/challenge", proven.text[:500]
    done = _form_post(browser, idp_server, "/mfa/challenge", {"code": totp_now("drsmith")})
    assert done.status_code == 302 and done.headers["Location"] == "/account", done.text[:500]
    forget_totp_use("drsmith")
    db.session.rollback()
    link = db.session.execute(select(UpstreamLink)).scalar_one()
    assert (link.issuer, link.how) == (row.issuer, "proven")
    # The link key is the partner IdP's (iss, sub): its pairwise-or-public subject of ana.up.
    assert link.subject and link.subject != person.subject
    live = db.session.execute(select(SsoSession).where(SsoSession.ended_at.is_(None))
                              ).scalars().all()
    assert [s.amr[0] for s in live] == ["fed"] and "mfa" in live[0].amr
