"""Authorization endpoint: redirect_uri rules, PKCE, prompt, max_age, consent, RFC 9207."""

from urllib.parse import urlencode

import pytest

from tests.helpers import (
    PASSWORD,
    REDIRECT,
    authorize,
    csrf_from,
    get_code,
    login,
    make_client,
    make_user,
    pass_totp,
    pkce,
    query,
)


def test_unknown_client_shows_error_page_and_never_redirects(ctx, signed_in):
    rp = make_client()
    rp.client_id = "no-such-client"
    response, _ = authorize(signed_in, rp, pkce()[1])
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert "invalid_client" in response.text


@pytest.mark.parametrize("uri", [
    "https://evil.example/cb",
    REDIRECT + "/extra",
    REDIRECT + "?x=1",
    REDIRECT.replace("https", "http"),
    REDIRECT.upper(),
    "https://rp.example.evil.example/cb",
    "https://rp.example@evil.example/cb",
])
def test_unregistered_redirect_uri_is_refused_without_redirect(ctx, signed_in, uri):
    rp = make_client()
    response, _ = authorize(signed_in, rp, pkce()[1], redirect_uri=uri)
    assert response.status_code == 400
    assert "Location" not in response.headers


def test_missing_redirect_uri_is_refused_without_redirect(ctx, signed_in):
    rp = make_client()
    response, _ = authorize(signed_in, rp, pkce()[1], redirect_uri=None)
    assert response.status_code == 400 and "Location" not in response.headers


def test_loopback_any_port_only_for_clients_that_opt_in(ctx, signed_in):
    native = make_client(redirect_uri="http://127.0.0.1/cb", public=True, loopback_any_port=True)
    response, _ = authorize(signed_in, native, pkce()[1], redirect_uri="http://127.0.0.1:51234/cb")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("http://127.0.0.1:51234/cb?")
    strict = make_client(redirect_uri="http://127.0.0.1:4000/cb", public=True)
    response, _ = authorize(signed_in, strict, pkce()[1], redirect_uri="http://127.0.0.1:4001/cb")
    assert response.status_code == 400


def test_unsupported_response_type_goes_back_to_the_client(ctx, signed_in):
    rp = make_client()
    response, params = authorize(signed_in, rp, pkce()[1], response_type="token")
    assert response.status_code == 302
    got = query(response.headers["Location"])
    assert got["error"] == "unsupported_response_type"
    assert got["state"] == params["state"]
    assert got["iss"] == "http://idp.test"


def test_success_response_carries_iss(ctx, signed_in):
    rp = make_client()
    verifier, challenge = pkce()
    response, params = authorize(signed_in, rp, challenge)
    got = query(response.headers["Location"])
    assert got["iss"] == "http://idp.test" and got["code"] and got["state"] == params["state"]


def test_public_client_must_send_pkce(ctx, signed_in):
    rp = make_client(public=True)
    response, _ = authorize(signed_in, rp, None)
    got = query(response.headers["Location"])
    assert got["error"] == "invalid_request" and "PKCE" in got["error_description"]


def test_plain_pkce_is_refused(ctx, signed_in):
    rp = make_client(public=True)
    verifier, _ = pkce()
    response, _ = authorize(signed_in, rp, None, code_challenge=verifier,
                            code_challenge_method="plain")
    got = query(response.headers["Location"])
    assert got["error"] == "invalid_request" and "S256" in got["error_description"]


def test_registration_parameter_is_refused(ctx, signed_in):
    rp = make_client()
    response, _ = authorize(signed_in, rp, pkce()[1], registration="x")
    assert query(response.headers["Location"])["error"] == "registration_not_supported"


@pytest.mark.parametrize("param,error", [
    ("request", "invalid_request_object"),       # not a signed request object (RFC 9101)
    ("request_uri", "invalid_request_uri"),      # not one our PAR endpoint issued
])
def test_request_objects_and_uris_not_ours_are_refused_without_redirect(ctx, signed_in, param,
                                                                        error):
    rp = make_client()
    response, _ = authorize(signed_in, rp, pkce()[1], **{param: "https://evil.example/r"})
    assert response.status_code == 400 and "Location" not in response.headers
    assert error in response.text


@pytest.mark.parametrize("extra", [
    {"response_mode": "fragment"}, {"response_mode": "form_post.jwt"}, {"prompt": "none login"},
    {"prompt": "select_account"}, {"max_age": "-1"}, {"max_age": "abc"},
])
def test_unadvertised_values_are_refused(ctx, signed_in, extra):
    rp = make_client()
    response, _ = authorize(signed_in, rp, pkce()[1], **extra)
    assert query(response.headers["Location"])["error"] == "invalid_request"


def test_scope_without_openid_is_refused(ctx, signed_in):
    rp = make_client()
    response, _ = authorize(signed_in, rp, pkce()[1], scope="profile")
    assert query(response.headers["Location"])["error"] == "invalid_scope"


def test_unknown_scope_is_refused(ctx, signed_in):
    rp = make_client()
    response, _ = authorize(signed_in, rp, pkce()[1], scope="openid admin.everything")
    assert query(response.headers["Location"])["error"] == "invalid_scope"


def test_scope_the_client_is_not_registered_for_is_refused(ctx, signed_in):
    """A known scope outside the client's registration (here roles, which releases the
    user's roles and EPCS entitlement) is invalid_scope, not silently granted."""
    rp = make_client(scope="openid profile email")
    response, _ = authorize(signed_in, rp, pkce()[1], scope="openid profile roles")
    got = query(response.headers["Location"])
    assert got["error"] == "invalid_scope" and "roles" in got["error_description"]
    allowed, _ = authorize(signed_in, rp, pkce()[1], scope="openid profile")
    assert "code" in query(allowed.headers["Location"])


def test_prompt_none_without_session_is_login_required(ctx, client):
    rp = make_client()
    response, params = authorize(client, rp, pkce()[1], prompt="none")
    got = query(response.headers["Location"])
    assert got["error"] == "login_required" and got["state"] == params["state"]
    assert got["iss"] == "http://idp.test"


def test_without_session_the_user_is_sent_to_login_and_back(ctx, client):
    make_user()
    rp = make_client()
    response, params = authorize(client, rp, pkce()[1], login_hint="drsmith")
    assert response.status_code == 302 and "/login?" in response.headers["Location"]
    page = client.get(response.headers["Location"])
    assert 'value="drsmith"' in page.text  # login_hint fills the username
    next_url = query(response.headers["Location"])["next"]
    password_ok = client.post("/login", data={"username": "drsmith", "password": PASSWORD,
                                              "csrf_token": csrf_from(page.text),
                                              "next": next_url})
    assert password_ok.headers["Location"] == "/mfa/challenge"
    done = pass_totp(client, "drsmith")
    # the second factor's answer is the authorization response itself: no redirect to
    # /authorize that would only lead on (issue 26)
    assert done.status_code == 302 and done.headers["Location"].startswith(REDIRECT + "?code=")
    assert query(done.headers["Location"])["state"] == params["state"]


def test_prompt_login_forces_a_new_sign_in_then_succeeds(ctx, signed_in):
    rp = make_client()
    verifier, challenge = pkce()
    response, params = authorize(signed_in, rp, challenge, prompt="login")
    assert "/login?" in response.headers["Location"]
    next_url = query(response.headers["Location"])["next"]
    again = login(signed_in, next_url=next_url)
    assert again.headers["Location"].startswith(REDIRECT + "?code=")


def test_max_age_zero_forces_a_new_sign_in_then_succeeds(ctx, signed_in, frozen):
    """max_age=0: the sign-in the request asked for satisfies it (it cannot be 0 s old by the
    time the browser is back), and the next request with max_age=0 asks again."""
    rp = make_client()
    frozen.advance(5)
    response, _ = authorize(signed_in, rp, pkce()[1], max_age="0")
    assert "/login?" in response.headers["Location"]
    again = login(signed_in, next_url=query(response.headers["Location"])["next"])
    assert again.headers["Location"].startswith(REDIRECT + "?code="), again.headers["Location"]
    frozen.advance(2)
    response, _ = authorize(signed_in, rp, pkce()[1], max_age="0")
    assert "/login?" in response.headers["Location"]


def test_max_age_exceeded_requires_login_and_prompt_none_says_so(ctx, signed_in, frozen):
    rp = make_client()
    frozen.advance(120)
    response, _ = authorize(signed_in, rp, pkce()[1], max_age="60")
    assert "/login?" in response.headers["Location"]
    response, _ = authorize(signed_in, rp, pkce()[1], max_age="60", prompt="none")
    assert query(response.headers["Location"])["error"] == "login_required"
    response, _ = authorize(signed_in, rp, pkce()[1], max_age="600", prompt="none")
    assert "code" in query(response.headers["Location"])


def test_acr_values_unreachable_still_answers_with_achieved_acr(ctx, signed_in):
    rp = make_client()
    code, _, _ = get_code(signed_in, rp, acr_values="urn:healthidp:acr:aal2")
    assert code


def test_consent_page_for_third_party_then_remembered(ctx, signed_in):
    rp = make_client(first_party=False)
    response, params = authorize(signed_in, rp, pkce()[1])
    assert response.status_code == 200
    assert 'name="decision" value="allow"' in response.text
    assert "Your email address" in response.text
    # prompt=none cannot show the consent page
    none, _ = authorize(signed_in, rp, pkce()[1], prompt="none")
    assert query(none.headers["Location"])["error"] == "consent_required"
    url = "/authorize?" + urlencode(params)
    token = csrf_from(response.text)
    allowed = signed_in.post(url, data={"decision": "allow", "csrf_token": token})
    assert allowed.status_code == 302 and "code=" in allowed.headers["Location"]
    again, _ = authorize(signed_in, rp, pkce()[1])
    assert again.status_code == 302 and "code=" in again.headers["Location"]
    forced, _ = authorize(signed_in, rp, pkce()[1], prompt="consent")
    assert forced.status_code == 200 and "decision" in forced.text
    wider, _ = authorize(signed_in, rp, pkce()[1], scope="openid profile email roles")
    assert wider.status_code == 200  # a wider scope set asks again


def test_consent_denied_returns_access_denied(ctx, signed_in):
    rp = make_client(first_party=False)
    response, params = authorize(signed_in, rp, pkce()[1])
    denied = signed_in.post("/authorize?" + urlencode(params),
                            data={"decision": "deny", "csrf_token": csrf_from(response.text)})
    got = query(denied.headers["Location"])
    assert got["error"] == "access_denied" and got["state"] == params["state"]
    assert got["iss"] == "http://idp.test"


def test_consent_post_without_csrf_token_is_refused(ctx, signed_in):
    rp = make_client(first_party=False)
    response, params = authorize(signed_in, rp, pkce()[1])
    forged = signed_in.post("/authorize?" + urlencode(params), data={"decision": "allow"})
    assert forged.status_code == 400 and "Location" not in forged.headers


def test_consent_can_be_revoked_from_the_account_page(ctx, signed_in):
    rp = make_client(first_party=False)
    response, params = authorize(signed_in, rp, pkce()[1])
    signed_in.post("/authorize?" + urlencode(params),
                   data={"decision": "allow", "csrf_token": csrf_from(response.text)})
    account = signed_in.get("/account")
    assert rp.client_id in account.text
    import re

    action = re.search(r'action="(/account/consents/\d+/revoke)"', account.text).group(1)
    signed_in.post(action, data={"csrf_token": csrf_from(account.text)})
    again, _ = authorize(signed_in, rp, pkce()[1])
    assert again.status_code == 200 and "decision" in again.text


def test_a_nonce_is_used_once_per_client_also_when_it_comes_back_from_a_sign_in(
        ctx, signed_in):
    """A nonce the client used already gets no second code: refused at once in a signed-in
    browser; in a browser without a session the request goes to the sign-in first (nothing is
    issued without one) and is refused when it comes back signed in, before any code."""
    rp = make_client()
    get_code(signed_in, rp, nonce="n-once")
    again, _ = authorize(signed_in, rp, pkce()[1], nonce="n-once")
    assert again.status_code == 302 and again.headers["Location"].startswith(REDIRECT)
    assert query(again.headers["Location"])["error"] == "invalid_request"
    browser = signed_in.application.test_client()
    start, params = authorize(browser, rp, pkce()[1], nonce="n-once")
    assert start.status_code == 302 and "/login?" in start.headers["Location"]
    done = login(browser, next_url=query(start.headers["Location"])["next"])
    # the sign-in holds (its session is made); the authorization request is refused
    assert done.status_code == 302 and done.headers["Location"].startswith("/authorize?")
    refused = browser.get(done.headers["Location"])
    assert refused.headers["Location"].startswith(REDIRECT)
    got = query(refused.headers["Location"])
    assert got["error"] == "invalid_request" and "code" not in got
    assert got["state"] == params["state"]
