"""Web security gaps of issue 10: trusted hosts, no-store on every authenticated page and
token answer, repeated OAuth parameters refused, input bounds, cookie attributes (and the
__Host- prefix under an https issuer)."""

from __future__ import annotations

import pytest

from idp import create_app
from idp.config import ConfigError, Settings
from tests.conftest import TEST_ISSUER, TEST_POLICY, ClosingClient
from tests.helpers import (
    PASSWORD,
    auth_params,
    basic,
    exchange,
    get_code,
    login,
    make_client,
    make_user,
    pkce,
    query,
)
from tests.log_scan import register as register_secret


# -- Host header ------------------------------------------------------------------------------
def test_trusted_hosts_default_to_the_issuer_host_and_are_configurable():
    base = {"IDP_ISSUER": "https://login.hospital.example:8443", "IDP_SECRET_KEY": "k" * 32}
    assert Settings.from_env(base).trusted_hosts == ("login.hospital.example", "localhost",
                                                     "127.0.0.1")
    assert Settings.from_env({**base, "IDP_TRUSTED_HOSTS": "a.example, .b.example"}
                             ).trusted_hosts == ("a.example", ".b.example")
    for bad in ("https://a.example", "a.example:443", "a b"):
        with pytest.raises(ConfigError, match="IDP_TRUSTED_HOSTS"):
            Settings.from_env({**base, "IDP_TRUSTED_HOSTS": bad})


@pytest.mark.parametrize("path", ["/login", "/.well-known/openid-configuration", "/authorize",
                                  "/token", "/account", "/password/forgot"])
def test_a_forged_host_gets_400_and_never_a_url_built_on_it(ctx, client, path):
    make_user()
    method = client.post if path == "/token" else client.get
    forged = method(path, headers={"Host": "evil.example"})
    assert forged.status_code == 400, forged.text
    assert "evil.example" not in forged.text
    assert "evil.example" not in forged.headers.get("Location", "")
    if path.startswith("/token"):
        assert forged.get_json()["error"] == "invalid_request"
    # the issuer's host is served (and the discovery document names the issuer, not the Host)
    for host in ("idp.test", "idp.test:8443", "localhost:8000", "127.0.0.1"):
        good = client.get("/.well-known/openid-configuration", headers={"Host": host})
        assert good.status_code == 200 and good.get_json()["issuer"] == TEST_ISSUER, host
    for near_miss in ("idp.test.evil.example", "evilidp.test", "127.0.0.1.nip.io"):
        assert client.get("/login", headers={"Host": near_miss}).status_code == 400


def test_forwarded_host_is_ignored_without_trusted_proxies(ctx, client):
    response = client.get("/.well-known/openid-configuration",
                          headers={"X-Forwarded-Host": "evil.example",
                                   "X-Forwarded-Proto": "https"})
    assert response.status_code == 200 and "evil.example" not in response.text


# -- Cache-Control: no-store ------------------------------------------------------------------
def _no_store(response) -> bool:
    return "no-store" in response.headers.get("Cache-Control", "")


def test_every_authenticated_page_is_no_store(app, ctx, client):
    """Walk every GET page without path arguments, signed in as an administrator (so the admin
    console answers too): each dynamic answer carries no-store; only static files, discovery
    (OpenID and SMART) and JWKS (and the OpenAPI description) may be cached."""
    make_user(role="admin", npi=None, username="admin")
    assert login(client, username="admin").status_code == 302
    walked = 0
    for rule in app.url_map.iter_rules():
        if "GET" not in (rule.methods or ()) or rule.arguments or rule.endpoint == "static":
            continue
        response = client.get(rule.rule)
        walked += 1
        if rule.rule in ("/.well-known/openid-configuration", "/.well-known/smart-configuration",
                         "/.well-known/udap", "/jwks.json", "/openapi.json"):
            assert "public" in response.headers["Cache-Control"], rule.rule
            continue
        assert _no_store(response), f"{rule.rule} -> {response.status_code} " \
                                    f"{response.headers.get('Cache-Control')}"
        assert client.get_cookie("idp_session") is not None or rule.rule == "/logout", \
            f"{rule.rule} signed us out"
        if client.get_cookie("idp_session") is None:
            assert login(client, username="admin").status_code == 302
    assert walked > 20
    assert _no_store(client.get("/account")) and client.get("/account").status_code == 200


def test_token_userinfo_and_introspection_answers_are_no_store(ctx, client):
    make_user()
    rp = make_client()
    login(client)
    code, verifier, _ = get_code(client, rp)
    token = exchange(client, rp, code, verifier)
    assert token.status_code == 200 and _no_store(token)
    access = token.get_json()["access_token"]
    userinfo = client.get("/userinfo", headers={"Authorization": f"Bearer {access}"})
    assert userinfo.status_code == 200 and _no_store(userinfo)
    introspection = client.post("/introspect", data={"token": access}, headers=basic(rp))
    assert introspection.status_code == 200 and _no_store(introspection)
    refused = client.post("/token", data={"grant_type": "authorization_code", "code": "x"},
                          headers=basic(rp))
    assert refused.status_code == 400 and _no_store(refused)


# -- RFC 6749 §3.1: parameters sent once -------------------------------------------------------
@pytest.mark.parametrize("name", ["client_id", "redirect_uri", "scope", "state", "nonce",
                                  "code_challenge", "prompt", "acr_values"])
def test_repeated_parameter_at_authorize_is_invalid_request(ctx, client, name):
    make_user()
    rp = make_client()
    login(client)
    _, challenge = pkce()
    params = auth_params(rp, challenge, prompt="login", acr_values="urn:healthidp:acr:aal1")
    pairs = list(params.items()) + [(name, params[name])]
    response = client.get("/authorize", query_string=pairs)
    assert response.status_code == 400 and "invalid_request" in response.text
    assert "Location" not in response.headers
    ok = client.get("/authorize", query_string=[p for p in pairs[:-1] if p[0] != "prompt"])
    assert ok.status_code == 302 and "code" in query(ok.headers["Location"])


@pytest.mark.parametrize("name", ["grant_type", "code", "redirect_uri", "code_verifier"])
def test_repeated_parameter_at_token_is_invalid_request(ctx, client, name):
    make_user()
    rp = make_client()
    login(client)
    code, verifier, _ = get_code(client, rp)
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": rp.redirect_uri,
            "code_verifier": verifier}
    pairs = "&".join(f"{k}={v}" for k, v in [*data.items(), (name, data[name])])
    twice = client.post("/token", data=pairs, headers=basic(rp),
                        content_type="application/x-www-form-urlencoded")
    assert twice.status_code == 400 and twice.get_json()["error"] == "invalid_request"
    assert "repeated" in twice.get_json()["error_description"]
    # also once in the query and once in the body
    split = client.post(f"/token?{name}={data[name]}", data=data, headers=basic(rp))
    assert split.status_code == 400 and split.get_json()["error"] == "invalid_request"
    # the code was not consumed by the refused requests
    assert exchange(client, rp, code, verifier).status_code == 200


# -- sizes --------------------------------------------------------------------------------------
def test_body_over_the_limit_is_413_and_too_many_fields_refused(app, ctx, client):
    limit = app.config["MAX_CONTENT_LENGTH"]
    assert limit == app.extensions["idp"].policy.web.max_body_bytes
    big = client.post("/token", data={"grant_type": "x" * (limit + 1)})
    assert big.status_code == 413 and big.get_json()["error"] == "invalid_request"
    parts = app.extensions["idp"].policy.web.max_form_parts
    many = "&".join(f"f{i}=1" for i in range(parts + 1))
    answer = client.post("/token", data=many, content_type="application/x-www-form-urlencoded")
    assert answer.status_code == 413 and answer.get_json()["error"] == "invalid_request"
    in_query = client.get("/login?" + many)
    assert in_query.status_code == 413
    multipart = client.post("/login", data={f"f{i}": "1" for i in range(parts + 1)},
                            content_type="multipart/form-data")
    assert multipart.status_code == 413
    fits = client.post("/token", content_type="application/x-www-form-urlencoded",
                       data="&".join(f"f{i}=1" for i in range(parts)))
    assert fits.status_code == 400
    assert fits.get_json().get("error_description") != "The request has too many fields."


def test_protocol_parameter_over_max_length_is_invalid_request(app, ctx, client):
    make_user()
    rp = make_client()
    limit = app.extensions["idp"].policy.web.max_param_length
    _, challenge = pkce()
    params = auth_params(rp, challenge, state="s" * (limit + 1))
    page = client.get("/authorize", query_string=params)
    assert page.status_code == 400 and "invalid_request" in page.text
    token = client.post("/token", headers=basic(rp), data={
        "grant_type": "refresh_token", "refresh_token": "r" * (limit + 1)})
    assert token.status_code == 400 and token.get_json()["error"] == "invalid_request"
    at_limit = client.post("/token", headers=basic(rp), data={
        "grant_type": "refresh_token", "refresh_token": "r" * limit})
    assert at_limit.status_code == 400 and at_limit.get_json()["error"] == "invalid_grant"


# -- cookies ------------------------------------------------------------------------------------
def _set_cookies(response) -> dict[str, str]:
    return {c.split("=", 1)[0]: c for c in response.headers.getlist("Set-Cookie")}


def test_cookies_are_httponly_samesite_and_not_secure_over_http(ctx, client):
    make_user()
    page = client.get("/login")
    flow = _set_cookies(page)["idp_flow"]
    assert "HttpOnly" in flow and "SameSite=Lax" in flow and "Secure" not in flow
    done = login(client)
    sso = _set_cookies(done)["idp_session"]
    assert "HttpOnly" in sso and "SameSite=Lax" in sso and "Path=/" in sso
    assert "Secure" not in sso and "Domain" not in sso
    # the device cookie ("new device" alerts): set at the sign-in, kept 400 days
    device = _set_cookies(done)["idp_device"]
    assert "HttpOnly" in device and "SameSite=Lax" in device and "Path=/" in device
    assert f"Max-Age={400 * 86400}" in device
    assert "Secure" not in device and "Domain" not in device
    assert "__Host-idp_device" not in _set_cookies(done)


@pytest.fixture
def https_app(env):
    application = create_app(Settings.from_env({**env, "IDP_ISSUER": "https://idp.test"}),
                             policy_overrides=TEST_POLICY)
    application.config["TESTING"] = True
    application.test_client_class = ClosingClient
    return application


def test_under_an_https_issuer_cookies_are_secure_and_host_prefixed(app, https_app):
    with app.app_context():
        make_user()
    http = https_app.test_client()
    http.environ_base["HTTP_REFERER"] = "https://idp.test/login"  # Flask-WTF's https check
    page = http.get("/login", base_url="https://idp.test")
    assert page.status_code == 200
    flow = _set_cookies(page)["__Host-idp_flow"]
    assert "Secure" in flow and "HttpOnly" in flow and "Path=/" in flow
    assert "Domain" not in flow and "SameSite=Lax" in flow
    done = _https_login(http)
    cookies = _set_cookies(done)
    assert "idp_session" not in cookies
    sso = cookies["__Host-idp_session"]
    assert "Secure" in sso and "HttpOnly" in sso and "Path=/" in sso and "Domain" not in sso
    assert "idp_device" not in cookies
    device = cookies["__Host-idp_device"]
    register_secret("device cookie", device.split(";")[0].split("=", 1)[1])
    assert "Secure" in device and "HttpOnly" in device and "SameSite=Lax" in device
    assert "Path=/" in device and "Domain" not in device and f"Max-Age={400 * 86400}" in device
    with https_app.app_context():  # the session stores the hash of the prefixed cookie's value
        import hashlib

        from idp.extensions import db
        from idp.sessions.models import SsoSession

        [stored] = db.session.query(SsoSession.device_hash).all()
        assert stored[0] == hashlib.sha256(
            device.split(";")[0].split("=", 1)[1].encode()).hexdigest()
    # the prefixed cookie is the one that signs the browser in; HSTS is sent under https
    account = http.get("/account", base_url="https://idp.test")
    assert account.status_code == 200 and "drsmith" in account.text
    assert "max-age=" in account.headers["Strict-Transport-Security"]
    unprefixed = https_app.test_client()
    unprefixed.set_cookie("idp_session", sso.split(";")[0].split("=", 1)[1], domain="idp.test")
    assert unprefixed.get("/account", base_url="https://idp.test").status_code == 302


def _https_login(http):
    from tests.helpers import csrf_from

    page = http.get("/login", base_url="https://idp.test")
    response = http.post("/login", base_url="https://idp.test", data={
        "username": "drsmith", "password": "Sturdy-Cedar-Lantern-42!", "next": "/account",
        "csrf_token": csrf_from(page.text)})
    assert response.status_code == 302, response.text
    assert response.headers["Location"].startswith("/mfa/challenge")
    return _pass_totp_https(http)


def _pass_totp_https(http):
    from idp.extensions import db
    from idp.mfa.models import Factor
    from tests.helpers import csrf_from, forget_totp_use, totp_now

    with http.application.app_context():
        factor_id = db.session.query(Factor.id).filter_by(kind="totp").scalar()
        code = totp_now("drsmith")
    challenge = http.get("/mfa/challenge", base_url="https://idp.test")
    done = http.post("/mfa/challenge", base_url="https://idp.test", data={
        "code": code, "factor": factor_id, "csrf_token": csrf_from(challenge.text)})
    with http.application.app_context():
        forget_totp_use("drsmith")
    assert done.status_code == 302, done.text
    return done


# -- CSP form-action ----------------------------------------------------------------------------
def _form_action(response) -> list[str]:
    csp = response.headers["Content-Security-Policy"]
    directives = {d.strip().split()[0]: d.strip().split()[1:] for d in csp.split(";") if d.strip()}
    return directives.get("form-action", [])


def test_forms_may_post_to_this_site_and_registered_client_uris_only(ctx, client):
    from idp.oidc.clients import create_client

    make_client(redirect_uri="https://rp.example:8443/cb",
                post_logout_redirect_uris=["https://bye.example/out"])
    create_client(name="Native", redirect_uris=["org.hospital.app:/callback",
                                                "http://127.0.0.1/cb"],
                  public=True, loopback_any_port=True, first_party=False,
                  grant_types=["authorization_code"], scope="openid")
    off = make_client(redirect_uri="https://disabled.example/cb", name="Off")
    from idp.extensions import db
    from idp.oidc.models import Client

    db.session.query(Client).filter_by(client_id=off.client_id).update({"disabled": True})
    db.session.commit()
    page = client.get("/login")
    allowed = _form_action(page)
    assert allowed[0] == "'self'"
    assert set(allowed[1:]) == {"https://rp.example:8443", "https://bye.example",
                                "org.hospital.app:", "http://127.0.0.1:*"}
    # JSON answers carry no form-action; a new client is allowed at once
    assert _form_action(client.get("/jwks.json")) == []
    make_client(redirect_uri="https://new.example/cb", name="New")
    assert "https://new.example" in _form_action(client.get("/login"))


def test_a_sign_in_for_one_client_allows_that_client_only_and_one_registered_elsewhere(
        ctx, client):
    """The pages of a sign-in for a relying party (login form, second factor) list that
    client's URIs only, from the client registrations' cache /authorize validated against: a
    client another process registered a moment ago is read on first use (no cached list to
    wait for); a redirect's body is never rendered, so it carries no form-action."""
    from urllib.parse import urlencode

    from sqlalchemy import insert, select

    from idp.extensions import db
    from idp.oidc.models import Client
    from tests.helpers import csrf_from

    make_user()
    rp = make_client(redirect_uri="https://rp.example/cb",
                     post_logout_redirect_uris=["https://rp.example/bye"])
    make_client(redirect_uri="https://other.example/cb", name="Other")
    start = client.get("/authorize?" + urlencode(auth_params(rp, pkce()[1])))
    assert start.status_code == 302 and _form_action(start) == []
    page = client.get(start.headers["Location"])
    assert _form_action(page) == ["'self'", "https://rp.example"]
    password = client.post("/login", data={
        "username": "drsmith", "password": PASSWORD, "csrf_token": csrf_from(page.text),
        "next": query(start.headers["Location"])["next"]})
    assert password.headers["Location"] == "/mfa/challenge"
    assert _form_action(client.get("/mfa/challenge")) == ["'self'", "https://rp.example"]
    # registered by another process: a row this process's session never saw
    table = Client.__table__
    with db.engine.begin() as conn:
        row = dict(conn.execute(select(table).where(table.c.client_id == rp.client_id))
                   .mappings().one())
        row.pop("id")
        row.update(client_id="elsewhere-" + rp.client_id[:8], client_name="Elsewhere",
                   redirect_uris=["https://elsewhere.example/cb"], post_logout_redirect_uris=[])
        conn.execute(insert(table).values(**row))
    params = {"response_type": "code", "client_id": row["client_id"],
              "redirect_uri": "https://elsewhere.example/cb", "scope": "openid"}
    browser = client.application.test_client()
    login_page = browser.get("/login?" + urlencode({"next": "/authorize?" + urlencode(params)}))
    assert _form_action(login_page) == ["'self'", "https://elsewhere.example"]
    # the first browser's unfinished sign-in (its flow cookie) counts on its second step's
    # page only, not on a page that has nothing to do with it
    assert _form_action(client.get("/login?" + urlencode(
        {"next": "/authorize?" + urlencode(params)}))) == ["'self'", "https://elsewhere.example"]
    assert _form_action(client.get("/mfa/challenge")) == ["'self'", "https://rp.example"]
    # a page that is not part of one client's sign-in lists every enabled client
    assert {"https://rp.example", "https://other.example", "https://elsewhere.example"} <= \
        set(_form_action(browser.get("/login")))


def test_form_action_sources_ignore_what_could_break_the_header():
    from idp.web.form_action import sources_for

    assert sources_for(["https://a.example/cb", "https://u:p@b.example/x",
                        "https://c.example/x;script-src *", "https://d.example/'x'",
                        "not a uri", "http://localhost:5000/cb"], False) == {
        "https://a.example", "https://b.example", "http://localhost:5000"}


@pytest.mark.parametrize("path", [
    "/static/../config.py", "/static/%2e%2e/config.py", "/static/..%2fconfig.py",
    "/static/..%5cconfig.py", "/static/css/..%2f..%2fconfig.py", "/static/%2e%2e%2f__init__.py"])
def test_static_files_never_reach_the_package_code_beside_them(client, path):
    """static/ is package data inside idp/, next to the code: no spelling of ../ serves it."""
    response = client.get(path)
    assert response.status_code == 404, path
    assert b"import" not in response.data and b"PACKAGE_DIR" not in response.data
    assert client.get("/static/css/app.css").status_code == 200
