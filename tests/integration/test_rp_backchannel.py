"""The relying parties' /backchannel-logout (OpenID Connect Back-Channel Logout 1.0 §2.5-2.8):
a valid logout token from the IdP ends the RP's local session with that sid, in every worker;
every tampered or replayed token is refused with 400 and changes nothing. The tokens are signed
by the in-process IdP's real keys; the RPs read its JWKS through its test client."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from werkzeug.serving import make_server

from clients import rp as rp_module
from idp import clock
from idp.context import keystore, settings
from idp.oidc import backchannel
from idp.oidc.tokens import sign
from tests.conftest import TEST_ISSUER
from tests.helpers import exchange, get_code, login, make_client, make_user
from tests.rp_helpers import RoutedIdp, make_rp, sign_in

EVENT = "http://schemas.openid.net/event/backchannel-logout"
CLIENT_ID = "portal-test"


@pytest.fixture
def idp(app) -> RoutedIdp:
    return RoutedIdp(app)


@pytest.fixture
def portal(ctx, idp, tmp_path):
    return make_rp("portal", tmp_path / "portal-state", idp)


def claims(**changes) -> dict:
    now = clock.timestamp()
    base = {"iss": settings().issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 120,
            "jti": f"jti-{time.monotonic_ns()}", "sid": "sid-1", "sub": "sub-1",
            "events": {EVENT: {}}}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def token(typ: str | None = "logout+jwt", **changes) -> str:
    return sign(claims(**changes), "RS256", typ=typ)


def post(http, value: str | None, **kwargs):
    data = {} if value is None else {"logout_token": value}
    return http.post("/backchannel-logout", data=data, **kwargs)


def signed_in(http) -> bool:
    page = http.get("/")
    assert page.status_code == 200, page.text
    return "Welcome, Ana Smith" in page.text


def test_a_valid_logout_token_ends_the_local_session_with_that_sid(portal):
    http, bystander = portal.test_client(), portal.test_client()
    sign_in(http, sub="sub-1", sid="sid-1")
    sign_in(bystander, sub="sub-1", sid="sid-2")  # the same user, another IdP session
    assert signed_in(http) and signed_in(bystander)

    response = post(http, backchannel.logout_token(CLIENT_ID, "sid-1", "sub-1"))
    assert response.status_code == 200 and response.data == b""
    assert response.headers["Cache-Control"] == "no-store"

    page = http.get("/")
    assert "Welcome, Ana Smith" not in page.text and "Sign in" in page.text
    assert 'id="ended-elsewhere"' in page.text  # told why
    assert "ended-elsewhere" not in http.get("/").text  # the cookie was cleared: said once
    assert signed_in(bystander)


def test_a_stylesheet_request_does_not_swallow_the_notice(portal):
    """The browser fetches the page's stylesheets on their own requests: an ended session must
    be noticed by the next page, not by a stylesheet request whose answer shows nothing."""
    http = portal.test_client()
    sign_in(http, sub="sub-1", sid="sid-1")
    page = http.get("/")
    links = re.findall(r'<link rel="stylesheet" href="([^"]+)"', page.text)
    assert len(links) == 2, links  # the shared sheet and the app's colour
    assert post(http, backchannel.logout_token(CLIENT_ID, "sid-1", "sub-1")).status_code == 200
    for link in links:
        assert http.get(link).status_code == 200
    after = http.get("/")
    assert "Welcome, Ana Smith" not in after.text and 'id="ended-elsewhere"' in after.text


def test_every_worker_sees_the_ended_session(portal, idp, tmp_path):
    """Two gunicorn workers are two processes: the record lives in their shared store."""
    other_worker = make_rp("portal", tmp_path / "portal-state", idp)
    browser = other_worker.test_client()
    sign_in(browser, sub="sub-1", sid="sid-1")
    assert signed_in(browser)
    assert post(portal.test_client(),
                backchannel.logout_token(CLIENT_ID, "sid-1", "sub-1")).status_code == 200
    assert not signed_in(browser)


def test_a_sub_only_token_ends_that_users_earlier_sessions(portal):
    earlier, other_user = portal.test_client(), portal.test_client()
    sign_in(earlier, sub="sub-1", sid="sid-1", signed_in_at=time.time() - 60)
    sign_in(other_user, sub="sub-2", sid="sid-9")
    assert post(earlier, token(sid=None)).status_code == 200
    assert not signed_in(earlier)
    assert signed_in(other_user)
    later = portal.test_client()
    sign_in(later, sub="sub-1", sid="sid-3", signed_in_at=time.time() + 5)
    assert signed_in(later)  # a sign-in after the logout is a new session


def test_the_endpoint_needs_no_csrf_token_but_the_rest_of_the_app_does(portal):
    http = portal.test_client()
    sign_in(http, sub="sub-1", sid="sid-1")
    assert http.post("/logout").status_code == 400  # a browser form: CSRF-protected
    assert post(http, token(sid="sid-7")).status_code == 200  # server to server: exempt


def _foreign_key_token() -> str:
    """Signed by a key the IdP never had, under the kid of the IdP's real key."""
    kid = keystore().signing_key("RS256").kid
    key = RSAKey.generate_key(2048, parameters={"kid": kid}, private=True)
    return jwt.encode({"alg": "RS256", "kid": kid, "typ": "logout+jwt"}, claims(), key,
                      algorithms=["RS256"])


def _altered_payload() -> str:
    """A genuine token whose payload was changed after signing (another sid)."""
    import base64
    import json

    header, payload, signature = token().split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["sid"] = "someone-elses-sid"
    forged = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def _unsigned() -> str:
    import base64
    import json

    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'logout+jwt'})}.{part(claims())}."


TAMPERED = {
    "bad signature (foreign key)": (_foreign_key_token, "signature"),
    "payload altered after signing": (_altered_payload, "signature"),
    "alg none": (_unsigned, "UnsupportedAlgorithm"),
    "wrong audience": (lambda: token(aud="another-client"), "aud"),
    "audience list without us": (lambda: token(aud=["ehr-test", "x"]), "aud"),
    "wrong issuer": (lambda: token(iss="https://evil.example"), "iss"),
    "with a nonce": (lambda: token(nonce="n-123"), "nonce"),
    "missing events": (lambda: token(events=None), "event"),
    "events without the logout member": (
        lambda: token(events={"http://schemas.openid.net/event/other": {}}), "event"),
    "logout event not an object": (lambda: token(events={EVENT: "yes"}), "event"),
    "neither sid nor sub": (lambda: token(sid=None, sub=None), "neither sid nor sub"),
    "missing jti": (lambda: token(jti=None), "jti"),
    "missing iat": (lambda: token(iat=None), "iat"),
    "issued long ago": (lambda: token(iat=clock.timestamp() - 3600,
                                      exp=clock.timestamp() + 60), "too long ago"),
    "expired": (lambda: token(iat=clock.timestamp() - 200,
                              exp=clock.timestamp() - 100), "expired"),
    "an ID token's typ": (lambda: token(typ="JWT"), "typ"),
    "no typ": (lambda: token(typ=None), "typ"),
    "an access token": (lambda: token(typ="at+jwt"), "typ"),
    "not a JWT": (lambda: "not-a-token", "malformed"),
}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_a_tampered_logout_token_is_refused_and_ends_nothing(portal, case):
    make_token, reason = TAMPERED[case]
    http = portal.test_client()
    sign_in(http, sub="sub-1", sid="sid-1")
    response = post(http, make_token())
    assert response.status_code == 400, (case, response.data)
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["error"] == "invalid_request" and reason in body["error_description"], body
    assert signed_in(http), case


def test_a_replayed_logout_token_is_refused(portal):
    http = portal.test_client()
    value = backchannel.logout_token(CLIENT_ID, "sid-1", "sub-1")
    assert post(http, value).status_code == 200
    sign_in(http, sub="sub-1", sid="sid-5")
    replay = post(http, value)
    assert replay.status_code == 400 and "replayed" in replay.get_json()["error_description"]
    # Another token with the same jti but another sid (the jti is what counts).
    jti = jwt.decode(value, keystore().verification_keys()).claims["jti"]
    again = post(http, token(jti=jti, sid="sid-5"))
    assert again.status_code == 400 and "replayed" in again.get_json()["error_description"]
    assert signed_in(http)


@pytest.mark.parametrize("body, content_type", [
    (None, None), ('{"logout_token": "x"}', "application/json")])
def test_a_request_without_a_form_logout_token_is_refused(portal, body, content_type):
    http = portal.test_client()
    response = http.post("/backchannel-logout", data=body, content_type=content_type) \
        if body else post(http, None)
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_request"


def test_keys_unavailable_is_503_so_the_idp_retries(portal, idp):
    portal.extensions["rp.logout_tokens"]._keys = None
    idp.down = True
    response = post(portal.test_client(), token())
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert response.get_json()["error"] == "temporarily_unavailable"
    idp.down = False
    assert post(portal.test_client(), token()).status_code == 200


def test_a_session_older_than_the_maximum_ends(portal):
    http = portal.test_client()
    sign_in(http, sub="sub-1", sid="sid-1",
            signed_in_at=time.time() - rp_module.SESSION_MAX_AGE - 1)
    assert not signed_in(http)


def test_the_ehr_ends_its_session_too(ctx, idp, tmp_path):
    ehr = make_rp("ehr", tmp_path / "ehr-state", idp)
    http = ehr.test_client()
    sign_in(http, sub="sub-1", sid="sid-1")
    response = post(http, backchannel.logout_token("ehr-test", "sid-1", "sub-1"))
    assert response.status_code == 200
    page = http.get("/")
    assert "Patients" not in page.text and 'id="ended-elsewhere"' in page.text
    # The portal's token is not the EHR's.
    assert post(http, backchannel.logout_token(CLIENT_ID, "sid-2", "sub-1")).status_code == 400


def test_idp_logout_reaches_a_running_rp_over_http(ctx, client, idp, tmp_path):
    """The IdP (in process) ends a session; its delivery POSTs to the portal served over real
    HTTP; the portal checks the token with the IdP's keys and ends its session."""
    portal = make_rp("portal", tmp_path / "portal-state", idp)
    server = make_server("127.0.0.1", 0, portal, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        user = make_user()
        rp = make_client(backchannel_logout_uri=f"http://127.0.0.1:{server.port}"
                                                "/backchannel-logout")
        rp_id = rp.client_id
        portal.extensions["rp.logout_tokens"].client_id = rp_id
        login(client)
        code, verifier, _ = get_code(client, rp, scope="openid")
        id_token = exchange(client, rp, code, verifier).get_json()["id_token"]
        sid = jwt.decode(id_token, keystore().verification_keys()).claims["sid"]
        browser = portal.test_client()
        sign_in(browser, sub=user.subject, sid=sid)
        assert signed_in(browser)

        client.get("/logout", query_string={"id_token_hint": id_token})

        assert not signed_in(browser)
        [row] = backchannel.deliveries(sid)
        assert row.client_id == rp_id and row.delivered_at is not None
    finally:
        server.shutdown()


def test_the_issuer_is_the_idps(portal):
    assert portal.extensions["rp.logout_tokens"].issuer == TEST_ISSUER
    assert Path(portal.extensions["rp.store"].path).name == "portal-rp-state.sqlite3"
