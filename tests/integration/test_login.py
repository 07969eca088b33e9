"""The basic login: one message for every failure, safe redirects, cookie hygiene, idle timeout."""

import pytest

from idp.accounts.views import login_failed_message
from idp.extensions import db
from tests.helpers import PASSWORD, authorize, login, make_client, make_user, pkce, query


def _post(client, username, password, next_url="/account"):
    return login(client, username, password, next_url=next_url)


def test_login_by_username_or_npi(ctx, client):
    make_user()
    assert _post(client, "drsmith", PASSWORD).status_code == 302
    other = ctx.test_client()
    assert _post(other, "1234567893", PASSWORD).status_code == 302
    assert _post(ctx.test_client(), "DrSmith", PASSWORD).status_code == 302


@pytest.mark.parametrize("username,password", [
    ("drsmith", "wrong-password"), ("nobody", PASSWORD), ("9999999999", PASSWORD),
    ("disabled", PASSWORD),
])
def test_every_failure_reads_the_same(ctx, client, username, password):
    make_user()
    off = make_user("disabled", npi=None)
    off.disabled = True
    db.session.commit()
    response = _post(client, username, password)
    assert response.status_code == 401
    assert login_failed_message() in response.text
    assert "idp_session" not in response.headers.get("Set-Cookie", "")


def test_login_without_csrf_token_is_refused(ctx, client):
    make_user()
    response = client.post("/login", data={"username": "drsmith", "password": PASSWORD})
    assert response.status_code == 400 and "idp_session" not in response.headers.get(
        "Set-Cookie", "")


@pytest.mark.parametrize("target", [
    "https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)",
    "http:evil.example", "/ok\r\nSet-Cookie: x=1",
])
def test_next_never_leaves_the_site(ctx, client, target):
    make_user()
    response = _post(client, "drsmith", PASSWORD, next_url=target)
    assert response.status_code == 302 and response.headers["Location"] == "/account"


def test_session_cookie_is_opaque_httponly_lax_and_renewed_at_login(ctx, client):
    make_user()
    first = _post(client, "drsmith", PASSWORD)
    cookie = [c for c in first.headers.getlist("Set-Cookie") if c.startswith("idp_session=")][0]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    assert len(value) >= 43  # 256 bits, base64url
    second = _post(client, "drsmith", PASSWORD)
    renewed = [c for c in second.headers.getlist("Set-Cookie") if c.startswith("idp_session=")][0]
    assert renewed.split(";")[0] != cookie.split(";")[0]


def test_idle_session_is_refused_for_authorize_and_prompt_none(ctx, client, frozen):
    make_user()
    rp = make_client()
    login(client)
    frozen.advance(29 * 60)
    ok, _ = authorize(client, rp, pkce()[1], prompt="none")
    assert "code" in query(ok.headers["Location"])
    frozen.advance(30 * 60 + 1)
    expired, _ = authorize(client, rp, pkce()[1], prompt="none")
    assert query(expired.headers["Location"])["error"] == "login_required"


def test_pages_carry_security_headers(ctx, client):
    response = client.get("/login")
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    page = response.text
    assert 'autocomplete="current-password"' in page and 'name="csrf_token"' in page
    assert "Username or NPI" in page and '<button type="submit"' in page
