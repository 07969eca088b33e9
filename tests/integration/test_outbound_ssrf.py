"""Server-side request forgery: the IdP cannot be aimed at its own network (issue 18).

A second application (`strict`) runs on the same database with the environment of a default
deployment: no IDP_OUTBOUND_ALLOW, so loopback is as forbidden as 10.0.0.1 or cloud metadata.
The session's `app` has the tests' allow-list (127.0.0.0/8 and ::1) and shows the other side:
what the allow-list names is reached. A test resolver (app.extensions[RESOLVER_KEY]) decides
what names resolve to, and changes its answer between registration and delivery."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import select

from idp import create_app
from idp.admin import service
from idp.admin.models import InitialAccessToken, RegistrationAccessToken
from idp.audit.models import AuditEvent
from idp.config import Settings
from idp.core import outbound
from idp.extensions import db
from idp.notify.sms import HttpSender
from idp.oidc import backchannel
from idp.oidc.models import Client
from idp.onboarding.registry import NppesRegistry
from idp.smart import service as smart
from tests.conftest import TEST_POLICY, ClosingClient
from tests.helpers import exchange, get_code, login, make_client, make_user
from tests.receiver import Receiver

PUBLIC = "93.184.216.34"
META = {"client_name": "Scheduling app", "redirect_uris": ["https://sched.example/cb"],
        "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
        "scope": "openid profile email", "token_endpoint_auth_method": "client_secret_basic"}


class Resolver:
    """DNS as the test says; a name it does not know does not resolve."""

    def __init__(self) -> None:
        self.answers: dict[str, list[str]] = {
            "inward.test": ["127.0.0.1"], "metadata.test": ["169.254.169.254"],
            "lan.test": ["10.20.30.40"], "v6-inward.test": ["::1"],
            "mixed.test": [PUBLIC, "192.168.0.10"], "public.test": [PUBLIC]}

    def __call__(self, host: str, port: int) -> list[str]:
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.answers[host]


@pytest.fixture(scope="module")
def strict_app(app, env):
    """The IdP as deployed by default: the same database, no outbound allow-list."""
    settings = Settings.from_env({k: v for k, v in env.items() if k != "IDP_OUTBOUND_ALLOW"})
    assert settings.outbound_allow == ()
    application = create_app(settings, policy_overrides=TEST_POLICY)
    application.config["TESTING"] = True
    application.test_client_class = ClosingClient
    return application


@pytest.fixture
def dns(app, strict_app, monkeypatch) -> Resolver:
    resolver = Resolver()
    monkeypatch.setitem(app.extensions, outbound.RESOLVER_KEY, resolver)
    monkeypatch.setitem(strict_app.extensions, outbound.RESOLVER_KEY, resolver)
    return resolver


@pytest.fixture
def strict(strict_app, dns):
    return strict_app.test_client()


class Listener:
    """A bare listening socket on 127.0.0.1: `connections()` counts who knocked."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def connections(self) -> int:
        count = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1


@pytest.fixture
def listener():
    server = Listener()
    yield server
    server.sock.close()


def _initial() -> str:
    issued = service.issue_initial_token(actor="test", lifetime=3600, uses=1)
    db.session.commit()
    return issued.token


def _register(http, token: str, uri: str):
    return http.post("/register", json={**META, "backchannel_logout_uri": uri},
                     headers={"Authorization": f"Bearer {token}"})


def _events(name: str) -> list[AuditEvent]:
    db.session.rollback()
    return list(db.session.execute(select(AuditEvent).where(AuditEvent.event == name)
                                   .order_by(AuditEvent.seq)).scalars())


FORBIDDEN = [
    # (backchannel_logout_uri, what the refusal names)
    ("http://127.0.0.1:5432/", "loopback"),
    ("https://127.0.0.1/bcl", "loopback"),
    ("https://10.0.0.1/", "private"),
    ("https://172.16.0.1/bcl", "private"),
    ("https://192.168.1.1/bcl", "private"),
    ("https://169.254.169.254/latest/meta-data/iam/security-credentials/", "link-local"),
    ("https://[::1]/bcl", "loopback"),
    ("http://[::1]:8080/bcl", "loopback"),
    ("https://[fe80::1]/bcl", "link-local"),
    ("https://[fc00::1]/bcl", "private"),
    ("https://[fd00:ec2::254]/latest/meta-data/", "private"),   # AWS metadata over IPv6
    ("https://224.0.0.1/bcl", "multicast"),
    ("https://[ff02::1]/bcl", "multicast"),
    ("https://0.0.0.0/bcl", "unspecified"),
    ("https://[::]/bcl", "unspecified"),
    ("https://100.64.0.1/bcl", "not globally routable"),
    # legacy IPv4 spellings resolvers accept
    ("https://2130706433/bcl", "loopback"),
    ("https://0177.0.0.1/bcl", "loopback"),
    ("https://0x7f.1/bcl", "loopback"),
    ("https://0x7f000001/bcl", "loopback"),
    ("https://127.1/bcl", "loopback"),
    ("https://2852039166/latest/meta-data/", "link-local"),
    ("https://0xa9.0xfe.0xa9.0xfe/", "link-local"),
    # IPv4 inside IPv6
    ("https://[::ffff:127.0.0.1]/bcl", "loopback"),
    ("https://[::ffff:169.254.169.254]/", "link-local"),
    ("https://[::ffff:a00:1]/bcl", "private"),
    ("https://[64:ff9b::a9fe:a9fe]/", "link-local"),
    # host names whose DNS answer is internal
    ("https://inward.test/bcl", "loopback"),
    ("http://localhost:8001/bcl", "loopback"),
    ("https://metadata.test/bcl", "link-local"),
    ("https://lan.test/bcl", "private"),
    ("https://v6-inward.test/bcl", "loopback"),
    ("https://mixed.test/bcl", "private"),   # one bad address in the answer is enough
]


@pytest.mark.parametrize(("uri", "family"), FORBIDDEN)
def test_registration_refuses_internal_backchannel_uris(ctx, strict, uri, family):
    token = _initial()
    before = set(db.session.execute(select(AuditEvent.event)).scalars())
    response = _register(strict, token, uri)
    assert response.status_code == 400, response.text
    body = response.get_json()
    assert body["error"] == "invalid_client_metadata"
    assert family in body["error_description"]
    assert body["error_description"].startswith("backchannel-logout-uri:")
    # nothing stored; the initial access token's use is given back
    db.session.rollback()
    assert db.session.execute(select(Client)).first() is None
    assert db.session.execute(select(RegistrationAccessToken)).first() is None
    assert db.session.execute(select(InitialAccessToken.uses_left)).scalar_one() == 1
    # audited, and that is the only new event
    [event] = _events("registration.refused_uri")
    assert event.actor.startswith("registration:")
    assert event.detail["field"] == "backchannel-logout-uri"
    assert family in event.detail["reason"]
    after = set(db.session.execute(select(AuditEvent.event)).scalars())
    assert after - before == {"registration.refused_uri"}
    # a clean registration with the same token still works
    assert _register(strict, token, "https://public.test/bcl").status_code == 201


def test_the_audit_names_the_host_not_the_path_or_query(ctx, strict):
    token = _initial()
    uri = "https://169.254.169.254/latest/meta-data/iam/role-x?signature=s3cr3t-value"
    assert _register(strict, token, uri).status_code == 400
    [event] = _events("registration.refused_uri")
    assert event.detail["host"] == "169.254.169.254"
    assert "s3cr3t" not in str(event.detail) and "meta-data" not in str(event.detail)


@pytest.mark.parametrize("uri", [f"https://{PUBLIC}/bcl", "https://public.test/bcl",
                                 "https://not-resolving-yet.test/bcl"])
def test_registration_accepts_public_and_unresolved_uris(ctx, strict, uri):
    response = _register(strict, _initial(), uri)
    assert response.status_code == 201, response.text
    assert response.get_json()["backchannel_logout_uri"] == uri


def test_a_registration_update_is_checked_too(ctx, strict):
    doc = _register(strict, _initial(), "https://public.test/bcl").get_json()
    headers = {"Authorization": f"Bearer {doc['registration_access_token']}"}
    body = {**META, "client_id": doc["client_id"],
            "backchannel_logout_uri": "https://169.254.169.254/latest/meta-data/"}
    response = strict.put(f"/register/{doc['client_id']}", json=body, headers=headers)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_client_metadata"
    db.session.rollback()
    row = db.session.execute(select(Client)).scalar_one()
    assert row.backchannel_logout_uri == "https://public.test/bcl"
    [event] = _events("registration.refused_uri")
    assert event.actor == f"client:{doc['client_id']}"


def test_the_allow_list_admits_what_it_names_and_only_that(ctx, client, dns):
    """The tests' allow-list (127.0.0.0/8, ::1) lets loopback through; the rest stays shut."""
    assert _register(client, _initial(), "http://127.0.0.1:8001/bcl").status_code == 201
    assert _register(client, _initial(), "https://inward.test/bcl").status_code == 201
    for uri in ("https://10.0.0.1/bcl", "https://169.254.169.254/", "https://[fc00::1]/"):
        response = _register(client, _initial(), uri)
        assert response.status_code == 400 and \
            response.get_json()["error"] == "invalid_client_metadata"


def test_the_cli_and_admin_share_the_rule(ctx, dns):
    from idp.oidc.clients import ClientError, create_client

    with pytest.raises(ClientError, match="link-local"):
        create_client(name="x", redirect_uris=["https://rp.example/cb"],
                      backchannel_logout_uri="https://169.254.169.254/")
    db.session.rollback()


# -- delivery ----------------------------------------------------------------------------------
def _sign_in_and_out(http, rp) -> str:
    """Sign in at the RP through `http`, then log out there: returns the session id."""
    assert login(http).status_code == 302
    code, verifier, _ = get_code(http, rp, scope="openid profile")
    id_token = exchange(http, rp, code, verifier).get_json()["id_token"]
    keys = KeySet.import_key_set(http.get("/jwks.json").get_json())
    sid = jwt.decode(id_token, keys).claims["sid"]
    http.get("/logout", query_string={"id_token_hint": id_token})
    return sid


def test_delivery_refuses_a_name_whose_dns_answer_turned_inward(ctx, strict, dns, listener):
    """Public at registration, 127.0.0.1 at delivery (DNS rebinding): no connection is made,
    the refusal is the attempt's error, and the delivery is abandoned at once."""
    dns.answers["rebind.test"] = [PUBLIC]
    make_user()
    with strict.application.app_context():
        rp = make_client(backchannel_logout_uri=f"https://rebind.test:{listener.port}/bcl")
    dns.answers["rebind.test"] = ["127.0.0.1"]
    sid = _sign_in_and_out(strict, rp)
    db.session.rollback()
    [row] = backchannel.deliveries(sid)
    assert row.attempts == 1 and row.delivered_at is None
    assert backchannel.status(row) == "abandoned"   # not retried 20 times
    assert row.last_error.startswith("refused by the outbound policy: rebind.test resolves to")
    assert "loopback" in row.last_error
    assert listener.connections() == 0
    [event] = _events("logout_token.abandoned")
    assert "outbound policy" in event.detail["error"] and event.detail["attempts"] == 1
    # cron does not try it again
    with strict.application.app_context():
        assert backchannel.deliver_due().attempted == 0
    assert listener.connections() == 0


def test_a_loopback_listener_hears_nothing_unless_allow_listed(ctx, client, strict):
    """The same RP on 127.0.0.1: the default deployment never connects to it; the IdP whose
    allow-list names loopback delivers the logout token."""
    make_user()
    quiet = Listener()
    try:
        rp = make_client(name="internal", backchannel_logout_uri=f"http://127.0.0.1:{quiet.port}"
                                                                 "/backchannel-logout")
        sid = _sign_in_and_out(strict, rp)
        db.session.rollback()
        [row] = backchannel.deliveries(sid)
        assert backchannel.status(row) == "abandoned"
        assert row.last_error == "refused by the outbound policy: loopback address 127.0.0.1"
        assert quiet.connections() == 0
    finally:
        quiet.sock.close()
    receiver = Receiver().start()
    try:
        rp = make_client(name="allowed", backchannel_logout_uri=receiver.url())
        sid = _sign_in_and_out(client, rp)
        [post] = receiver.posts
        assert post.logout_token
        db.session.rollback()
        assert backchannel.status(backchannel.deliveries(sid)[0]) == "delivered"
    finally:
        receiver.stop()


class Redirector:
    """An RP endpoint that answers every POST with 307 to somewhere else."""

    def __init__(self, location: str) -> None:
        self.posts = 0
        box = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                box.posts += 1
                self.send_response(307)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/bcl"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_redirecting_rp_is_not_followed(ctx, client, listener):
    """Even where the allow-list lets the IdP reach the RP, its 307 to another address (here
    an allow-listed one too) is an answer, not an instruction: a failed attempt."""
    redirector = Redirector(f"http://127.0.0.1:{listener.port}/internal")
    try:
        rp = make_client(backchannel_logout_uri=redirector.url)
        make_user()
        sid = _sign_in_and_out(client, rp)
        assert redirector.posts == 1
        db.session.rollback()
        [row] = backchannel.deliveries(sid)
        assert row.last_error == "HTTP 307" and backchannel.status(row) == "waiting"
        assert listener.connections() == 0
    finally:
        redirector.stop()


# -- the operator-configured calls go through the same client ----------------------------------
def test_sms_gateway_on_an_internal_address_is_refused_without_retries(strict_app, listener):
    with strict_app.app_context():
        sender = HttpSender(f"http://127.0.0.1:{listener.port}/send", None, outbound.client())
        assert sender.send("+12025550123", "Your code is 123456") is False
    assert listener.connections() == 0


def test_npi_registry_on_an_internal_address_is_refused(strict_app, listener):
    with strict_app.app_context():
        registry = NppesRegistry(f"http://127.0.0.1:{listener.port}/api/", 2, outbound.client())
        result = registry.lookup("1245319599", "Maria", "Lopez")
    assert not result.available and "outbound policy" in result.note
    assert listener.connections() == 0


def test_smart_patient_directory_on_an_internal_address_is_refused(ctx, strict_app):
    """The EHR's FHIR base (EHR_AUDIENCE, here http://127.0.0.1:8002) is loopback: the default
    deployment refuses to call it; an operator running the EHR there allow-lists it."""
    user = make_user()
    with strict_app.app_context():
        with pytest.raises(smart.DirectoryUnavailable, match="outbound policy.*loopback"):
            smart.patient_directory(db.session.merge(user))
