"""UDAP Tiered OAuth for User Authentication (HL7 FAST Security IG STU2 §6, `udap_to`;
docs/udap.md), the data holder's side, end to end and its attacks.

The IdP under test runs in-process (the Flask test client is the browser at it). Its upstream
is A SECOND INSTANCE OF THIS IdP, a real gunicorn process with its own SQLite database, keys,
issuer, server certificate (SAN URI = its base URL, from the test community's CA) and the
test community as a trust community of its own: it answers our UDAP registration, signs the
person in (password, authenticator app, consent) and issues the ID token our IdP verifies.
For the attacks a small forging UDAP upstream on loopback (tests/upstream_support.py) spoils
one thing at a time: a certificate from an untrusted root, an ID token for another audience,
a wrong nonce. Nothing of the IdP is replaced."""

# ruff: noqa: F811 - pytest fixtures imported from test_udap are parameters here
from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
import requests
from sqlalchemy import func, select

from clients import ehr
from idp.audit.models import AuditEvent
from idp.config import POLICY_DIR
from idp.extensions import db
from idp.federation.upstream.models import Upstream, UpstreamLink
from idp.sessions.models import SsoSession
from tests.conftest import TEST_ISSUER, free_port
from tests.e2e.conftest import Server, gunicorn_process
from tests.helpers import (
    PASSWORD,
    csrf_from,
    forget_totp_use,
    make_client,
    make_user,
    pkce,
    query,
    totp_now,
)
from tests.integration.test_smart import EHR, FHIR_BASE
from tests.integration.test_udap import community, server_cert  # noqa: F401 - fixtures
from tests.rp_helpers import rp_env
from tests.udap_pki import pem, pki
from tests.upstream_support import ForgingUdapUpstream, callback_path, sign_in_at_this_idp

IDP = str(Path(sys.executable).parent / "idp")
UPSTREAM_PASSWORD = "Tiered-Upstream-Juniper-58!"
SCOPE = "openid udap roles user/Patient.rs"  # roles: the EHR lets staff read any patient


@dataclasses.dataclass
class SecondIdp:
    server: Server
    totp_secret: str

    @property
    def base(self) -> str:
        return self.server.base


@pytest.fixture(scope="module")
def second_idp(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[SecondIdp]:
    """Another organisation's instance of this IdP as the Tiered OAuth upstream: its UDAP
    server certificate, the test community, `udap` a self-service scope for registered
    clients (its operator lets UDAP-registered servers ask `openid udap` without approval),
    and one person, ana.up, with an authenticator app."""
    from tests.log_scan import register

    tmp = tmp_path_factory.mktemp("tiered-upstream")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    policies = tmp / "policies"
    shutil.copytree(POLICY_DIR, policies)
    scopes = policies / "scopes.toml"
    text = scopes.read_text()
    line = re.search(r"^self_service_scopes = \[.*\]$", text, re.M)
    assert line, "scopes.toml has no self_service_scopes"
    scopes.write_text(text.replace(line.group(0), line.group(0)[:-1] + ', "udap"]'))
    holder = pki().server(base)
    (tmp / "server.pem").write_bytes(holder.cert_pem() + b"".join(pem(c) for c in holder.chain))
    (tmp / "server.key").write_bytes(holder.key_pem())
    (tmp / "root.pem").write_bytes(pki().anchor_pem())
    (tmp / "ca.crl").write_bytes(pki().crl_pem())
    child = {**os.environ, **env, "IDP_ISSUER": base,
             "DATABASE_URL": f"sqlite:///{tmp / 'upstream.sqlite3'}",
             "IDP_INSTANCE_DIR": str(tmp / "instance"), "IDP_KEYS_DIR": str(tmp / "keys"),
             "IDP_POLICY_DIR": str(policies), "IDP_RATELIMIT_PREFIX": f"tiered-{port}",
             "IDP_UDAP_CERTIFICATE": str(tmp / "server.pem"),
             "IDP_UDAP_KEY": str(tmp / "server.key"), "IDP_LOG_FORMAT": "json"}
    child.pop("IDP_PROXY_HOPS", None)

    def idp(*args: str) -> dict:
        done = subprocess.run([IDP, *args, "--json"], env=child, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    idp("db", "upgrade")
    idp("udap", "communities", "add", "--name", "fast-test", "--anchor", str(tmp / "root.pem"),
        "--crl", str(tmp / "ca.crl"))
    register("password", UPSTREAM_PASSWORD)
    idp("users", "create", "--username", "ana.up", "--email", "ana@partner.example",
        "--role", "physician", "--password", UPSTREAM_PASSWORD, "--given-name", "Ana",
        "--family-name", "Smith")
    secret = idp("mfa", "enroll-totp", "ana.up")["secret"]
    register("TOTP seed", secret)
    log_dir = tmp / "logs"
    log_dir.mkdir()
    with gunicorn_process(["--workers", "1", "--worker-class", "gthread", "--threads", "4"],
                          port, child, Server(base, log_dir)) as server:
        yield SecondIdp(server, secret)
    assert "unhandled" not in server.full_log(), server.stderr()


def _authorize(http, rp, idp: str, scope: str = SCOPE, **extra: str):
    verifier, challenge = pkce()
    params = {"response_type": "code", "client_id": rp.client_id,
              "redirect_uri": rp.redirect_uri, "scope": scope, "state": "st-tiered",
              "nonce": "n-tiered", "code_challenge": challenge,
              "code_challenge_method": "S256", "idp": idp, **extra}
    return http.get("/authorize?" + urlencode(params)), verifier


def _follow_to_upstream(http, response) -> str:
    """Our /authorize -> /upstream/<name>/start -> the upstream's authorization endpoint."""
    assert response.status_code == 302, response.text[:500]
    start = response.headers["Location"]
    assert start.startswith("/upstream/to-"), (start, [e.detail for e in _events(
        "udap.tiered_refused")])
    trip = http.get(start)
    assert trip.status_code == 302, trip.text[:500]
    return trip.headers["Location"]


def _sign_in_at_second(url: str, second: SecondIdp) -> str:
    """The browser at the second IdP: password, authenticator app, acknowledgment, consent;
    returns where it sends the browser back (our callback)."""
    return sign_in_at_this_idp(requests.Session(), url, second.base, "ana.up", UPSTREAM_PASSWORD,
                               second.totp_secret)


def _form_post(http, path: str, data: dict):
    page = http.get(path)
    assert page.status_code == 200, page.text[:500]
    return http.post(path, data={**data, "csrf_token": csrf_from(page.text)})


def _events(kind: str) -> list[AuditEvent]:
    return list(db.session.execute(select(AuditEvent).where(AuditEvent.event == kind)
                                   ).scalars())


def _count(model: type) -> int:
    db.session.rollback()
    return db.session.execute(select(func.count()).select_from(model)).scalar_one()


# -- end to end: a second instance of this IdP as the upstream -------------------------------
@pytest.fixture(scope="module")
def holder_idp(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Server]:
    """The IdP under test as the data holder, a gunicorn process on the test database (what
    a test seeds in-process it serves), issuer http://127.0.0.1:PORT (a loopback redirect
    URI: the upstream accepts http only there), with its UDAP server certificate and a
    logo_uri for its registrations (the IG requires one for authorization_code)."""
    tmp = tmp_path_factory.mktemp("tiered-holder")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    policies = tmp / "policies"
    shutil.copytree(env["IDP_POLICY_DIR"], policies)
    udap_toml = policies / "udap.toml"
    udap_toml.write_text(udap_toml.read_text().replace(
        'tiered_logo_uri = ""', 'tiered_logo_uri = "https://holder.example/logo.png"'))
    holder = pki().server(base)
    (tmp / "server.pem").write_bytes(holder.cert_pem() + b"".join(pem(c) for c in holder.chain))
    (tmp / "server.key").write_bytes(holder.key_pem())
    child = {**os.environ, **env, "IDP_ISSUER": base, "IDP_POLICY_DIR": str(policies),
             "IDP_UDAP_CERTIFICATE": str(tmp / "server.pem"),
             "IDP_UDAP_KEY": str(tmp / "server.key"), "IDP_LOG_FORMAT": "json"}
    child.pop("IDP_PROXY_HOPS", None)
    log_dir = tmp / "logs"
    log_dir.mkdir()
    with gunicorn_process(["--workers", "1", "--worker-class", "gthread", "--threads", "4"],
                          port, child, Server(base, log_dir)) as server:
        yield server
    assert "unhandled" not in server.full_log(), server.stderr()


def _start(browser: requests.Session, holder: Server, rp, idp: str) -> tuple[str, str]:
    """The browser at our /authorize (Tiered OAuth) and on to the upstream; returns (the
    upstream's authorization URL, our PKCE verifier)."""
    verifier, challenge = pkce()
    params = {"response_type": "code", "client_id": rp.client_id,
              "redirect_uri": rp.redirect_uri, "scope": SCOPE, "state": "st-tiered",
              "nonce": "n-" + secrets.token_hex(6), "code_challenge": challenge,
              "code_challenge_method": "S256", "idp": idp}
    first = browser.get(holder.url("/authorize?" + urlencode(params)), allow_redirects=False,
                        timeout=20)
    assert first.status_code == 302, first.text[:500]
    start = first.headers["Location"]
    assert start.startswith("/upstream/to-"), (start, _refusals())
    trip = browser.get(holder.url(start), allow_redirects=False, timeout=10)
    assert trip.status_code == 302, trip.text[:500]
    return trip.headers["Location"], verifier


def _refusals() -> list:
    db.session.rollback()
    return [e.detail for e in _events("udap.tiered_refused")]


def _browser_form(browser: requests.Session, holder: Server, path: str, data: dict
                  ) -> requests.Response:
    page = browser.get(holder.url(path), timeout=10)
    assert page.status_code == 200, page.text[:500]
    return browser.post(holder.url(path), data={**data, "csrf_token": csrf_from(page.text)},
                        allow_redirects=False, timeout=10)


def test_tiered_oauth_through_a_second_instance_of_this_idp(
        holder_idp, second_idp, community, tmp_path):
    """IG §6 with two real servers: `openid udap` + idp= at our /authorize; the upstream's
    signed metadata is trusted, we register there by UDAP DCR, the person signs in there, its
    ID token is verified, the person proves the local account once (linking rules, our second
    factor), the client gets its code, and the EHR's FHIR API serves the access token."""
    make_user()
    rp = make_client(scope=SCOPE)
    db.session.commit()  # the gunicorn processes write next
    browser = requests.Session()
    at_upstream, verifier = _start(browser, holder_idp, rp, second_idp.base)
    assert at_upstream.startswith(second_idp.base + "/authorize?"), at_upstream
    asked = query(at_upstream)
    assert asked["scope"] == "openid udap" and asked["nonce"] and asked["state"]
    assert asked["code_challenge_method"] == "S256"
    db.session.rollback()
    row = db.session.execute(select(Upstream)).scalar_one()
    assert (row.issuer, row.client_auth, row.client_id) == (second_idp.base, "udap",
                                                            asked["client_id"])
    db.session.commit()
    back = _sign_in_at_second(at_upstream, second_idp)
    assert back.startswith(holder_idp.url(f"/upstream/{row.name}/callback?")), back
    # an unknown upstream identity: nothing linked silently, the person proves the account
    answer = browser.get(back, allow_redirects=False, timeout=10)
    assert answer.headers["Location"] == "/upstream/link", answer.text[:500]
    assert _count(UpstreamLink) == 0
    db.session.commit()
    proven = _browser_form(browser, holder_idp, "/upstream/link",
                           {"username": "drsmith", "password": PASSWORD})
    assert proven.headers["Location"] == "/mfa/challenge", proven.text[:500]
    done = _browser_form(browser, holder_idp, "/mfa/challenge", {"code": totp_now("drsmith")})
    assert done.status_code == 302, done.text[:500]
    resumed = done.headers["Location"]
    assert resumed.startswith("/authorize?") and "idp=" in resumed, resumed
    # back at the original /authorize: the session was signed in at that upstream
    final = browser.get(holder_idp.url(resumed), allow_redirects=False, timeout=10)
    assert final.status_code == 302, final.text[:500]
    assert final.headers["Location"].startswith(rp.redirect_uri), final.headers["Location"]
    code = query(final.headers["Location"])
    assert code["state"] == "st-tiered"
    forget_totp_use("drsmith")
    db.session.rollback()
    link = db.session.execute(select(UpstreamLink)).scalar_one()
    assert (link.issuer, link.how) == (second_idp.base, "proven")
    sso = db.session.execute(select(SsoSession).where(SsoSession.ended_at.is_(None))
                             ).scalar_one()
    assert sso.amr[0] == "fed" and "mfa" in sso.amr
    db.session.commit()
    tokens = requests.post(holder_idp.url("/token"), timeout=10, data={
        "grant_type": "authorization_code", "code": code["code"],
        "redirect_uri": rp.redirect_uri, "code_verifier": verifier},
        auth=(rp.client_id, rp.client_secret))
    assert tokens.status_code == 200, tokens.text
    access = tokens.json()["access_token"]
    ehr_app = ehr.create_app(rp_env("ehr", tmp_path / "ehr", IDP_ISSUER=holder_idp.base,
                                    EHR_URL=EHR, EHR_AUDIENCE=EHR))
    fhir = ehr_app.test_client().get(f"{FHIR_BASE}/Patient",
                                     headers={"Authorization": f"Bearer {access}"})
    assert fhir.status_code == 200, fhir.text
    assert fhir.get_json()["resourceType"] == "Bundle"
    # our client_id at the upstream is kept: another browser's request registers no more
    assert len(_events("udap.tiered_registered")) == 1
    db.session.commit()
    again, _ = _start(requests.Session(), holder_idp, rp, second_idp.base)
    assert query(again)["client_id"] == row.client_id
    db.session.rollback()
    assert len(_events("udap.tiered_registered")) == 1


def test_as_the_upstream_the_second_instance_announces_udap_to(second_idp):
    """The upstream's side: /.well-known/udap announces udap_to only now that it works."""
    doc = requests.get(second_idp.base + "/.well-known/udap", timeout=10).json()
    assert "udap_to" in doc["udap_profiles_supported"] and doc["signed_metadata"]


# -- attacks ----------------------------------------------------------------------------------
@pytest.fixture
def forging():
    upstream = ForgingUdapUpstream(pki().server)
    yield upstream
    upstream.stop()


@pytest.fixture
def impostor():
    upstream = ForgingUdapUpstream(pki().untrusted_server)
    yield upstream
    upstream.stop()


def _refused_with_invalid_idp(client, idp: str, reason: str) -> None:
    rp = make_client(scope=SCOPE)
    response, _ = _authorize(client, rp, idp)
    assert response.status_code == 302, response.text[:500]
    location = response.headers["Location"]
    assert location.startswith(rp.redirect_uri + "?"), location
    answer = query(location)
    assert answer["error"] == "invalid_idp" and answer["state"] == "st-tiered"
    assert _count(Upstream) == 0 and _count(UpstreamLink) == 0
    refused = _events("udap.tiered_refused")
    assert len(refused) == 1 and reason in refused[0].detail["reason"], refused[0].detail


def test_an_upstream_whose_certificate_chains_to_an_untrusted_root_is_refused(
        client, community, server_cert, impostor):
    _refused_with_invalid_idp(client, impostor.issuer, "not trusted")
    assert impostor.registrations == []  # not even registered with


def test_an_unreachable_upstream_is_refused(client, community, server_cert):
    _refused_with_invalid_idp(client, f"http://127.0.0.1:{free_port()}", "unreachable")


def test_an_upstream_on_an_internal_address_is_refused_by_the_outbound_client(
        client, community, server_cert):
    _refused_with_invalid_idp(client, "http://169.254.169.254", "outbound policy refused")


def test_an_idp_that_is_not_a_base_url_is_refused(client, community, server_cert):
    _refused_with_invalid_idp(client, "javascript:alert(1)", "not a base URL")


def test_without_a_server_certificate_we_cannot_register_upstream(
        client, community, forging):
    _refused_with_invalid_idp(client, forging.issuer, "no server certificate")


def test_policy_may_let_the_user_sign_in_here_instead(app, client, community, impostor,
                                                      monkeypatch):
    """udap.toml tiered_fallback = "local": an unusable upstream leaves the local sign-in."""
    runtime = app.extensions["idp"]
    rules = dataclasses.replace(runtime.policy.udap, tiered_fallback="local")
    monkeypatch.setattr(runtime, "policy", dataclasses.replace(runtime.policy, udap=rules))
    rp = make_client(scope=SCOPE)
    response, _ = _authorize(client, rp, impostor.issuer)
    assert response.status_code == 302 and response.headers["Location"].startswith("/login?")
    assert _count(Upstream) == 0


def test_prompt_none_cannot_go_upstream(client, community, server_cert, forging):
    rp = make_client(scope=SCOPE)
    response, _ = _authorize(client, rp, forging.issuer, prompt="none")
    assert query(response.headers["Location"])["error"] == "interaction_required"
    assert forging.registrations == []


def _trip(client, upstream: ForgingUdapUpstream):
    """To the forging upstream and straight back to our callback (it signs anyone in)."""
    make_user()
    rp = make_client(scope=SCOPE)
    response, _ = _authorize(client, rp, upstream.issuer)
    at_upstream = _follow_to_upstream(client, response)
    back = requests.get(at_upstream, allow_redirects=False, timeout=10)
    assert back.status_code == 302
    return back.headers["Location"]


def _refused_at_callback(client, url: str, error: str) -> None:
    """The callback refuses, nothing is linked and no session starts; the browser goes back
    to the client's /authorize, which answers the client `error` (IG §6) at its redirect
    URI, once."""
    answer = client.get(callback_path(url))
    assert answer.status_code == 302, answer.text[:500]
    resumed = answer.headers["Location"]
    assert resumed.startswith("/authorize?") and "idp=" in resumed, resumed
    told = client.get(resumed)
    assert told.status_code == 302, told.text[:500]
    assert told.headers["Location"].startswith("https://rp.example/cb?"), told.headers
    answered = query(told.headers["Location"])
    assert answered["error"] == error and answered["state"] == "st-tiered"
    assert _count(UpstreamLink) == 0
    assert db.session.execute(select(func.count()).select_from(SsoSession)).scalar_one() == 0
    assert len(_events("udap.tiered_failed")) == 1


def test_an_id_token_for_another_audience_is_refused(client, community, server_cert,
                                                     forging):
    forging.tamper = {"aud": "another-server"}
    url = _trip(client, forging)
    _refused_at_callback(client, url, "invalid_idp")
    # our token request authenticated with a client assertion carrying our certificate
    sent = forging.token_requests[0]
    assert sent["client_assertion_type"].endswith("jwt-bearer") and sent["udap"] == "1"
    assert "client_secret" not in sent and not sent["authorization"]
    failed = _events("upstream.login_failed")
    assert "wrong audience" in failed[0].detail["reason"]


def test_an_id_token_with_another_nonce_is_refused(client, community, server_cert,
                                                   forging):
    forging.tamper = {"nonce": "someone-elses-nonce"}
    _refused_at_callback(client, _trip(client, forging), "invalid_idp")
    assert "nonce" in _events("upstream.login_failed")[0].detail["reason"]


def test_a_callback_with_another_state_is_a_server_error(client, community, server_cert,
                                                          forging):
    url = _trip(client, forging)
    forged = url.replace("state=", "state=x", 1)
    assert forged != url and urlsplit(url).path.endswith("/callback")
    _refused_at_callback(client, forged, "server_error")
    assert forging.token_requests == []  # the code was never redeemed


def test_the_upstreams_own_error_is_access_denied(client, community, server_cert, forging):
    url = _trip(client, forging)
    parts = urlsplit(url)
    state = query(url)["state"]
    denied = f"{parts.path}?" + urlencode({"error": "access_denied", "state": state,
                                           "iss": forging.issuer})
    _refused_at_callback(client, TEST_ISSUER + denied, "access_denied")


def test_an_upstream_without_the_udap_scope_is_refused(client, community, server_cert,
                                                       forging, monkeypatch):
    plain = forging.udap_metadata()
    monkeypatch.setattr(forging, "udap_metadata", lambda: {**plain,
                                                           "scopes_supported": ["openid"]})
    _refused_with_invalid_idp(client, forging.issuer, "openid and udap scopes")


def test_a_person_who_connects_no_account_leaves_the_client_access_denied(
        client, community, server_cert, forging):
    """IG §6: a data holder that cannot resolve the person to a local user answers
    access_denied. The person, shown the unknown identity's page, goes back without
    connecting an account; a forged or tokenless cancel is refused (400), never a 500."""
    answer = client.get(callback_path(_trip(client, forging)))
    assert answer.headers["Location"] == "/upstream/link", answer.text[:500]
    page = client.get("/upstream/link")
    assert page.status_code == 200 and 'name="cancel"' in page.text
    assert client.post("/upstream/link", data={"cancel": "1"}).status_code == 400  # no CSRF
    cancelled = client.post("/upstream/link", data={"cancel": "1",
                                                    "csrf_token": csrf_from(page.text)})
    assert cancelled.status_code == 302, cancelled.text[:500]
    told = client.get(cancelled.headers["Location"])
    answered = query(told.headers["Location"])
    assert answered["error"] == "access_denied" and answered["state"] == "st-tiered"
    assert _count(UpstreamLink) == 0
    assert client.get("/upstream/link").status_code == 404  # the held identity is gone
    assert len(_events("upstream.link_declined")) == 1
    assert forging.issuer in page.text  # the upstream by its URL, not its internal name
