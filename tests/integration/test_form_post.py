"""OAuth 2.0 Form Post Response Mode at /authorize: the authorization response (and an error
sent back to the client) as an auto-submitting form to the redirect_uri, under a CSP that lets
that one form reach the client's origin and runs no inline script."""

from __future__ import annotations

import html
import re

from tests.helpers import (
    auth_params,
    authorize,
    exchange,
    login,
    make_client,
    make_user,
    pkce,
    query,
)


def _form(response) -> tuple[str, dict[str, str]]:
    assert response.status_code == 200, response.headers.get("Location")
    assert response.mimetype == "text/html"
    page = response.text
    action = re.search(r'<form method="post" action="([^"]+)"', page).group(1)
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page))
    return html.unescape(action), {k: html.unescape(v) for k, v in fields.items()}


def test_code_comes_back_as_an_auto_submitting_form(ctx, client):
    make_user()
    rp = make_client()
    login(client)
    verifier, challenge = pkce()
    response, params = authorize(client, rp, challenge, response_mode="form_post")
    action, fields = _form(response)
    assert action == rp.redirect_uri
    assert fields["state"] == params["state"] and fields["iss"] and fields["code"]
    csp = response.headers["Content-Security-Policy"]
    assert "form-action https://rp.example" in csp and "script-src 'self'" in csp
    assert "'unsafe-inline'" not in csp
    assert "<script>" not in response.text and "/static/js/form_post.js" in response.text
    assert response.headers["Cache-Control"] == "no-store"
    assert client.get("/static/js/form_post.js").status_code == 200
    tokens = exchange(client, rp, fields["code"], verifier)
    assert tokens.status_code == 200, tokens.text


def test_errors_go_back_in_the_mode_asked_for(ctx, client):
    rp = make_client()
    response, params = authorize(client, rp, pkce()[1], response_mode="form_post",
                                 prompt="none")
    action, fields = _form(response)
    assert action == rp.redirect_uri
    assert fields["error"] == "login_required" and fields["state"] == params["state"]


def test_hostile_state_is_escaped_in_the_form(ctx, client):
    make_user()
    rp = make_client()
    login(client)
    state = '"><script>alert(1)</script>'
    response, _ = authorize(client, rp, pkce()[1], response_mode="form_post", state=state)
    _, fields = _form(response)
    assert fields["state"] == state and "<script>alert" not in response.text


def test_unknown_response_mode_is_refused_by_query(ctx, client):
    make_user()
    rp = make_client()
    login(client)
    for mode in ("fragment", "form_post.jwt", "FORM_POST"):
        response, _ = authorize(client, rp, pkce()[1], response_mode=mode)
        assert response.status_code == 302, mode
        got = query(response.headers["Location"])
        assert got["error"] == "invalid_request" and "code" not in got, mode


def test_response_mode_twice_is_refused(ctx, client):
    make_user()
    rp = make_client()
    login(client)
    params = auth_params(rp, pkce()[1])
    response = client.get("/authorize", query_string=[*params.items(),
                                                      ("response_mode", "form_post"),
                                                      ("response_mode", "query")])
    # Authlib refuses a repeated parameter before the redirect_uri is validated: our page.
    assert response.status_code == 400 and "Location" not in response.headers
    assert "invalid_request" in response.text and "<form" not in response.text


def test_form_post_is_refused_for_a_native_app_scheme(ctx, client):
    make_user()
    rp = make_client(redirect_uri="com.example.app:/callback", public=True)
    login(client)
    response, _ = authorize(client, rp, pkce()[1], response_mode="form_post")
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith("com.example.app:/callback?")
    assert query(location)["error"] == "invalid_request"


def test_discovery_advertises_form_post(ctx, client):
    meta = client.get("/.well-known/openid-configuration").get_json()
    assert meta["response_modes_supported"] == ["query", "form_post"]
