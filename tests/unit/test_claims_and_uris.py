"""Redirect URI matching (exact; RFC 8252 loopback any-port only when enabled), redirect URI
registration rules, the same-site `next` rule, and which claims each scope releases."""

from __future__ import annotations

import pytest

from idp.accounts.models import User
from idp.oidc.clients import ClientError, validate_uri
from idp.oidc.models import Client

REGISTERED = "https://rp.example/cb"


def client(*uris: str, loopback_any_port: bool = False) -> Client:
    return Client(client_id="c", client_name="RP", redirect_uris=list(uris),
                  token_endpoint_auth_method="none", loopback_any_port=loopback_any_port)


# -- Client.check_redirect_uri ------------------------------------------------------------------
@pytest.mark.parametrize("asked", [
    "https://rp.example/cb/", "https://rp.example/CB", "https://RP.example/cb",
    "http://rp.example/cb", "https://rp.example:443/cb", "https://rp.example/cb?x=1",
    "https://rp.example/cb#", "https://rp.example/cb#x", "https://rp.example./cb",
    "https://rp.example/cb ", " https://rp.example/cb", "https://rp.example/c%62",
    "https://evil.example@rp.example/cb", "https://rp.example@evil.example/cb",
    "https://rp.example/cb/../cb", "//rp.example/cb", "", "https://rp.example",
])
def test_redirect_uri_is_an_exact_string_match(asked: str):
    for flag in (False, True):
        rp = client(REGISTERED, loopback_any_port=flag)
        assert rp.check_redirect_uri(REGISTERED)
        assert not rp.check_redirect_uri(asked), (asked, flag)


@pytest.mark.parametrize(("registered", "asked"), [
    ("http://127.0.0.1/cb", "http://127.0.0.1:51004/cb"),
    ("http://127.0.0.1:8080/cb", "http://127.0.0.1:51004/cb"),
    ("http://127.0.0.1/cb", "http://127.0.0.1/cb"),
    ("http://[::1]/cb", "http://[::1]:51004/cb"),
    ("http://127.0.0.1/cb?app=1", "http://127.0.0.1:9/cb?app=1"),
])
def test_loopback_any_port_when_enabled(registered: str, asked: str):
    assert client(registered, loopback_any_port=True).check_redirect_uri(asked)
    if asked != registered:
        assert not client(registered).check_redirect_uri(asked)  # only with the flag


@pytest.mark.parametrize(("registered", "asked"), [
    ("http://127.0.0.1/cb", "http://127.0.0.1:51004/other"),       # another path
    ("http://127.0.0.1/cb", "http://127.0.0.1:51004/cb/"),
    ("http://127.0.0.1/cb", "http://127.0.0.1:51004/cb?x=1"),      # another query
    ("http://127.0.0.1/cb", "http://127.0.0.1:51004/cb#f"),
    ("http://127.0.0.1/cb", "https://127.0.0.1:51004/cb"),         # https: exact match only
    ("https://127.0.0.1/cb", "https://127.0.0.1:51004/cb"),
    ("http://localhost/cb", "http://localhost:51004/cb"),          # a name, not a literal
    ("http://127.0.0.1/cb", "http://localhost:51004/cb"),
    ("http://127.0.0.1/cb", "http://[::1]:51004/cb"),              # another address
    ("http://127.0.0.1/cb", "http://127.0.0.2:51004/cb"),
    ("http://127.0.0.1/cb", "http://127.1:51004/cb"),
    ("http://127.0.0.1/cb", "http://127.0.0.1.evil.example:51004/cb"),
    ("http://127.0.0.1/cb", "http://evil.example@127.0.0.1:51004/cb"),  # userinfo
    ("http://127.0.0.1/cb", "http://127.0.0.1:99999/cb"),          # not a port
    ("http://127.0.0.1/cb", "http://127.0.0.1:abc/cb"),
    ("http://rp.example/cb", "http://rp.example:8080/cb"),         # not loopback
    ("https://rp.example/cb", "https://rp.example:8443/cb"),
])
def test_loopback_rule_never_widens_beyond_the_port(registered: str, asked: str):
    assert not client(registered, loopback_any_port=True).check_redirect_uri(asked)


# -- validate_uri (registration) ----------------------------------------------------------------
@pytest.mark.parametrize(("uri", "problem"), [
    ("https://rp.example/cb#frag", "fragment"),
    ("https://rp.example/cb#", "fragment"),
    ("https://*.rp.example/cb", "wildcard"),
    ("https://rp.example/*", "wildcard"),
    ("http://rp.example/cb", "https"),
    ("http://10.0.0.1/cb", "https"),
    ("ftp://rp.example/cb", "https"),
    ("javascript:alert(1)", ""),
    ("com.example.app:/cb", ""),
    ("https:///cb", "host"),
    ("/cb", "host"),
    ("https://rp.example:99999/cb", "not a valid URI"),
    ("https://[::1/cb", "not a valid URI"),
])
def test_validate_uri_refuses(uri: str, problem: str):
    with pytest.raises(ClientError, match=f"redirect-uri: .*{problem}"):
        validate_uri(uri, "redirect-uri")


@pytest.mark.parametrize("uri", [
    "https://rp.example/cb", "https://rp.example:8443/cb?x=1", "http://127.0.0.1/cb",
    "http://127.0.0.1:8080/cb", "http://[::1]:8080/cb", "http://localhost:3000/cb",
])
def test_validate_uri_accepts(uri: str):
    assert validate_uri(uri, "redirect-uri") == uri


def test_validate_uri_names_the_field():
    with pytest.raises(ClientError, match="^post-logout-redirect-uri: "):
        validate_uri("http://rp.example/out", "post-logout-redirect-uri")


# -- safe_next ----------------------------------------------------------------------------------
@pytest.mark.parametrize("target", [
    "https://evil.example", "https://evil.example/account", "//evil.example",
    "//evil.example/account", "/\\evil.example", "\\\\evil.example", "/\\/evil.example",
    "javascript:alert(1)", "data:text/html,x", "evil.example", "account", "http:/evil.example",
    "/account\x00", "/\t/evil.example", "/\r\n/evil.example", "/acc\nount", "\x01/account",
    " /account", "/" + "a" * 4096, "", None,
])
def test_safe_next_refuses(app, target: str | None):
    from idp.accounts.views import safe_next

    with app.test_request_context():
        fallback = "/account"
        assert safe_next(target) == fallback


@pytest.mark.parametrize("target", [
    "/account", "/authorize?client_id=x&redirect_uri=https%3A%2F%2Frp.example%2Fcb",
    "/", "/account#consents", "/%2F%2Fevil.example",
])
def test_safe_next_keeps_same_site_paths(app, target: str):
    from idp.accounts.views import safe_next

    with app.test_request_context():
        assert safe_next(target) == target


# -- claims per scope ---------------------------------------------------------------------------
def user(**extra: object) -> User:
    values = {"subject": "sub-123", "username": "drsmith", "email": "drsmith@hospital.example",
              "email_verified": False, "role": "physician", "given_name": "Ana",
              "family_name": "Smith", "npi": "1234567893", "license_state": "MA",
              "phone_number": None, "phone_number_verified": False, "facility": None,
              "department": "Cardiology"}
    values.update(extra)
    return User(**values)


@pytest.mark.parametrize(("scope", "expected"), [
    ("openid", {"sub": "sub-123"}),
    ("openid profile", {"sub": "sub-123", "name": "Ana Smith", "given_name": "Ana",
                        "family_name": "Smith", "preferred_username": "drsmith"}),
    ("openid email", {"sub": "sub-123", "email": "drsmith@hospital.example",
                      "email_verified": False}),
    ("openid phone", {"sub": "sub-123", "phone_number_verified": False}),
    ("openid npi", {"sub": "sub-123", "npi": "1234567893", "license_state": "MA"}),
    ("openid roles", {"sub": "sub-123", "roles": ["physician"], "department": "Cardiology"}),
    ("openid offline_access ehr.patients.read unknown", {"sub": "sub-123"}),
    ("", {"sub": "sub-123"}),
])
def test_claims_released_per_scope(ctx, scope: str, expected: dict):
    from idp.oidc.claims import user_claims

    assert user_claims(user(), scope) == expected
    assert user_claims(user(), scope.split()) == expected


def test_claims_never_include_internal_fields(ctx):
    from idp.oidc.claims import user_claims

    everything = "openid profile email phone npi roles offline_access"
    claims = user_claims(user(password_hash="$argon2id$secret", id=7), everything)
    assert claims["sub"] == "sub-123" != claims["preferred_username"]
    assert not {"password_hash", "id", "disabled", "username", "subject"} & set(claims)
    assert "$argon2id$secret" not in repr(claims)
