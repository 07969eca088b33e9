"""The EHR's sensitive action: signing a prescription needs an access token with acr at least
urn:healthidp:acr:aal2-phr (and the write scope, and a prescriber's role). A weaker token sends
the user through the IdP's authorize endpoint with acr_values (step-up); the IdP's answer
`unmet_authentication_requirements` (no WebAuthn authenticator enrolled) is shown in plain
words, and the EHR session from before survives it. The access tokens are signed by the
in-process IdP's real keys; the step-up request goes to the real IdP."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from clients.ehr.scopes import ACR_AAL2, ACR_AAL2_PHR, PRESCRIPTIONS_WRITE
from idp import clock
from idp.context import settings
from idp.demo import CLIENTS
from idp.extensions import db
from idp.mfa.models import Factor
from idp.oidc.tokens import sign
from tests.helpers import login, make_client, make_user
from tests.rp_helpers import EHR_AUDIENCE, RP_URL, RoutedIdp, make_rp, sign_in

READ = "openid profile roles ehr.patients.read"


@pytest.fixture
def ehr(ctx, app, tmp_path):
    return make_rp("ehr", tmp_path / "ehr-state", RoutedIdp(app))


def access_token(*, acr: str | None, scope: str = f"{READ} {PRESCRIPTIONS_WRITE}",
                 roles: tuple[str, ...] = ("physician",), **changes) -> str:
    now = clock.timestamp()
    claims = {"iss": settings().issuer, "aud": EHR_AUDIENCE, "sub": "sub-1",
              "client_id": "ehr-test", "iat": now, "exp": now + 600, "jti": f"j{now}",
              "scope": scope, "roles": list(roles), "auth_time": now, "acr": acr,
              "sid": "sid-1", **changes}
    return sign({k: v for k, v in claims.items() if v is not None}, "RS256", typ="at+jwt")


def signed_in_ehr(ehr, **token_args):
    http = ehr.test_client()
    roles = token_args.get("roles", ("physician",))
    sign_in(http, sub="sub-1", sid="sid-1", roles=roles,
            access_token=access_token(**token_args))
    return http


def csrf(page_text: str) -> str:
    import re

    return re.search(r'name="csrf_token" value="([^"]+)"', page_text).group(1)


def press_sign(http):
    page = http.get("/prescriptions/sign")
    assert page.status_code == 200, page.text
    return http.post("/prescriptions/sign", data={"csrf_token": csrf(page.text)})


def test_a_phishing_resistant_sign_in_may_sign(ehr):
    http = signed_in_ehr(ehr, acr=ACR_AAL2_PHR)
    page = http.get("/prescriptions/sign")
    assert "Sign prescription" in page.text and "Placebocillin" in page.text
    assert "meets the requirement" in page.text
    done = press_sign(http)
    assert done.status_code == 200 and 'id="signed"' in done.text
    assert "RX-9001 signed by Ana Smith" in done.text


@pytest.mark.parametrize("token_args", [
    {"acr": ACR_AAL2},                                   # TOTP: not phishing-resistant
    {"acr": "urn:healthidp:acr:aal1"},
    {"acr": None},                                       # no acr at all
    {"acr": "urn:example:unknown-but-strong-sounding"},  # unknown counts as too weak
    {"acr": ACR_AAL2_PHR, "scope": READ},                # strong, but no write scope
])
def test_a_weaker_token_is_sent_through_step_up_at_the_idp(ehr, token_args):
    http = signed_in_ehr(ehr, **token_args)
    page = http.get("/prescriptions/sign")
    assert "you will be asked for your security key or biometrics" in page.text
    response = press_sign(http)
    assert response.status_code == 302
    target = urlsplit(response.headers["Location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == f"{settings().issuer}/authorize"
    params = {k: v[0] for k, v in parse_qs(target.query).items()}
    assert params["acr_values"] == ACR_AAL2_PHR
    assert params["client_id"] == "ehr-test" and params["response_type"] == "code"
    assert params["redirect_uri"] == f"{RP_URL}/callback"
    assert PRESCRIPTIONS_WRITE in params["scope"].split() and "openid" in params["scope"]
    assert params["state"] and params["nonce"] and params["code_challenge_method"] == "S256"
    with http.session_transaction() as session:
        assert session["step_up"] == {"acr": ACR_AAL2_PHR, "return_to": "/prescriptions/sign"}
        assert session["user"]["name"] == "Ana Smith"  # still signed in meanwhile


def test_an_expired_token_is_also_stepped_up(ehr):
    now = clock.timestamp()
    http = signed_in_ehr(ehr, acr=ACR_AAL2_PHR, iat=now - 900, exp=now - 300)
    response = press_sign(http)
    assert response.status_code == 302 and "acr_values=" in response.headers["Location"]


def test_a_role_that_does_not_prescribe_is_refused_without_step_up(ehr):
    http = signed_in_ehr(ehr, acr=ACR_AAL2_PHR, roles=("admin_staff",))
    page = http.get("/prescriptions/sign")
    assert "only physicians and nurse practitioners sign prescriptions" in page.text
    assert "<button" not in page.text.split('id="prescription"')[1]
    response = http.post("/prescriptions/sign", data={"csrf_token": csrf(http.get("/").text)})
    assert response.status_code == 403 and 'id="signed"' not in response.text


def test_signing_needs_a_csrf_token_and_a_session(ehr):
    http = signed_in_ehr(ehr, acr=ACR_AAL2_PHR)
    assert http.post("/prescriptions/sign").status_code == 400
    anonymous = ehr.test_client()
    assert anonymous.get("/prescriptions/sign").status_code == 302


def _step_up_at_the_real_idp(ehr, client):
    """Press Sign with an aal2 token; follow the EHR's redirect into the (in-process) IdP,
    where the browser is signed in; return the IdP's answer and the EHR browser."""
    http = signed_in_ehr(ehr, acr=ACR_AAL2)
    to_idp = press_sign(http)
    assert to_idp.status_code == 302
    target = urlsplit(to_idp.headers["Location"])
    answer = client.get(f"{target.path}?{target.query}")
    return http, answer


def _register_the_ehr():
    user = make_user()
    make_client(name="EHR", client_id="ehr-test", redirect_uri=f"{RP_URL}/callback",
                scope=CLIENTS["ehr"].scope)  # what the demo registers
    return user


def test_without_a_webauthn_authenticator_the_idp_error_is_shown_readably(ehr, client):
    _register_the_ehr()
    login(client)
    http, answer = _step_up_at_the_real_idp(ehr, client)
    # The IdP answers the EHR's redirect URI with the OIDC error.
    assert answer.status_code == 302
    location = urlsplit(answer.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{RP_URL}/callback"
    error = parse_qs(location.query)
    assert error["error"] == ["unmet_authentication_requirements"]
    assert "code" not in error

    page = http.get(f"{location.path}?{location.query}")
    assert page.status_code == 403
    text = page.text
    assert "A stronger sign-in is needed" in text
    assert "needs a phishing-resistant sign-in: a security key, or your device" in text
    assert "Your account has none set up yet" in text
    assert 'href="http://idp.test/mfa/factors"' in text  # where to add one
    assert 'href="/prescriptions/sign"' in text           # and back to the task
    assert "unmet_authentication_requirements" not in text  # no protocol jargon
    # The EHR session from before survives: still signed in, the draft still unsigned.
    still = http.get("/prescriptions/sign")
    assert still.status_code == 200 and "Ana Smith" in still.text
    assert 'id="signed"' not in still.text
    with http.session_transaction() as session:
        assert "step_up" not in session


def test_with_a_webauthn_authenticator_the_idp_asks_for_it(ehr, client):
    user = _register_the_ehr()
    db.session.add(Factor(user_id=user.id, kind="webauthn", label="Security key",
                          created_at=clock.now(), confirmed_at=clock.now(),
                          credential_id="cred-1", public_key=b"\x01", user_verified=True))
    db.session.commit()
    login(client)
    _, answer = _step_up_at_the_real_idp(ehr, client)
    assert answer.status_code == 302
    assert answer.headers["Location"].startswith("/mfa/challenge"), answer.headers["Location"]
    challenge = client.get("/mfa/challenge")
    assert "This action needs a stronger sign-in" in challenge.text


def test_an_error_for_a_request_this_browser_did_not_send_gets_the_generic_page(ehr):
    http = signed_in_ehr(ehr, acr=ACR_AAL2)
    press_sign(http)  # a step-up is pending, with its own state
    forged = http.get("/callback?error=unmet_authentication_requirements&state=forged"
                      f"&iss={settings().issuer}")
    assert forged.status_code == 400
    assert "Sign-in did not complete" in forged.text and "security key" not in forged.text


def test_cancelling_the_step_up_says_nothing_was_done(ehr):
    http = signed_in_ehr(ehr, acr=ACR_AAL2)
    state = parse_qs(urlsplit(press_sign(http).headers["Location"]).query)["state"][0]
    page = http.get(f"/callback?error=access_denied&state={state}&iss={settings().issuer}")
    assert page.status_code == 403 and "nothing was done" in page.text
    assert "Ana Smith" in http.get("/prescriptions/sign").text  # the session is intact
