"""Nothing answers 500 to malformed input on any endpoint.

Every route of the app (enumerated from app.url_map, so a new endpoint is covered without
touching this file) gets the generic garbage: wrong methods, missing, duplicated, oversized and
NUL-carrying parameters, invalid UTF-8 and percent-encoding, JSON and other content types where
a form is expected, bogus Authorization headers and garbage cookies. The protocol endpoints,
the authorization endpoint, logout and login also get targeted cases built on a valid request
with one thing broken at a time. Each request runs for an anonymous and a signed-in browser.

For every response: status < 500, no traceback, no secret in the body or Location; protocol
endpoints refuse with a JSON `error`; redirects only go to this site or to a registered URI.

Requests run outside any test-held app context on purpose: each one gets its own `g` and
database session, as in production (a shared app context would carry `g` between requests).
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from joserfc import jwt
from joserfc.jwk import ECKey

from tests.conftest import TEST_ISSUER
from tests.helpers import (
    PASSWORD,
    REDIRECT,
    Rp,
    auth_params,
    basic,
    csrf_from,
    exchange,
    get_code,
    login,
    make_client,
    make_user,
    pkce,
)

# Endpoints that must answer a refusal as JSON with an `error` member (RFC 6749 §5.2, RFC 6750,
# RFC 7009, RFC 7662, RFC 7591).
PROTOCOL = ("/token", "/revoke", "/introspect", "/userinfo", "/register")
THIRD_REDIRECT = "https://third.example/cb"
PUBLIC_REDIRECT = "http://127.0.0.1/cb"
JWT_REDIRECT = "https://jwt.example/cb"
LOGOUT_REDIRECT = "https://rp.example/logged-out"
REDIRECT_PARAMS = {"code", "state", "iss", "error", "error_description"}
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND")
WHO = ("anonymous", "signed_in")
BIG = "x" * 100_000          # over MAX_CONTENT_LENGTH (64 KB) in a body
UNDER_LIMIT = "y" * 60_000   # a body the app must actually parse

# Parameter names any endpoint of an IdP may read.
PARAMS = ("client_id", "redirect_uri", "response_type", "scope", "state", "nonce", "prompt",
          "max_age", "code_challenge", "code_challenge_method", "acr_values", "login_hint",
          "grant_type", "code", "code_verifier", "refresh_token", "token", "token_type_hint",
          "access_token", "client_secret", "client_assertion", "client_assertion_type",
          "id_token_hint", "post_logout_redirect_uri", "next", "username", "password",
          "decision", "confirm", "csrf_token")


# -- the world every case runs against ----------------------------------------------------------
@dataclass
class World:
    app: Flask
    rp: Rp                 # confidential, first party, client_secret_basic
    third: Rp              # confidential, third party: consent page
    public: Rp             # public, PKCE, RFC 8252 loopback any port
    cc: Rp                 # client_credentials only
    jwt_client_id: str     # private_key_jwt
    jwt_key: ECKey
    foreign_key: ECKey     # a key the IdP never saw
    kids: dict[str, str]   # alg -> kid of the IdP's active keys
    browser: FlaskClient   # signed-in browser used to mint codes
    access_token: str
    id_token: str
    refresh_token: str
    cc_token: str          # access token without the openid scope
    secrets: list[str] = field(default_factory=list)
    registered: set[str] = field(default_factory=set)

    def code(self) -> tuple[str, str]:
        code, verifier, _ = get_code(self.browser, self.rp)
        return code, verifier


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64json(value: Any) -> str:
    return _b64(json.dumps(value).encode())


def alg_none(claims: dict, **header: Any) -> str:
    return f"{_b64json({'alg': 'none', **header})}.{_b64json(claims)}."


def signed(key: ECKey, claims: dict, **header: Any) -> str:
    return jwt.encode({"alg": "ES256", **header}, claims, key, algorithms=["ES256"])


def at_claims(**extra: Any) -> dict:
    now = int(time.time())
    return {"iss": TEST_ISSUER, "sub": "someone", "aud": TEST_ISSUER, "exp": now + 600,
            "iat": now, "jti": "forged-jti", "client_id": "x", "scope": "openid", **extra}


def assertion(world: World, key: ECKey | None = None, **overrides: Any) -> str:
    now = int(time.time())
    claims = {"iss": world.jwt_client_id, "sub": world.jwt_client_id,
              "aud": f"{TEST_ISSUER}/token", "exp": now + 120, "iat": now,
              "jti": f"jti-{time.perf_counter_ns()}"}
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return signed(key or world.jwt_key, claims, kid="client-key")


@pytest.fixture
def world(app: Flask) -> Iterator[World]:
    from idp.context import keystore
    from idp.extensions import db
    from idp.oidc.clients import create_client

    jwt_key = ECKey.generate_key("P-256", private=True)
    public_jwk = {**jwt_key.as_dict(private=False), "kid": "client-key", "alg": "ES256",
                  "use": "sig"}
    with app.app_context():
        make_user()
        rp = make_client(post_logout_redirect_uris=[LOGOUT_REDIRECT])
        third = make_client(redirect_uri=THIRD_REDIRECT, first_party=False, name="Third")
        public = make_client(redirect_uri=PUBLIC_REDIRECT, public=True, first_party=False,
                             loopback_any_port=True, name="Native")
        jwt_client = create_client(name="JWT RP", redirect_uris=[JWT_REDIRECT],
                                   jwks={"keys": [public_jwk]},
                                   grant_types=["authorization_code", "client_credentials"])
        cc_client = create_client(name="Service", redirect_uris=[],
                                  grant_types=["client_credentials"],
                                  scope="openid system/Patient.rs")
        db.session.commit()
        jwt_client_id = jwt_client.client.client_id
        cc = Rp(cc_client.client.client_id, cc_client.client_secret, "")
        store = keystore()
        kids = {alg: store.signing_key(alg).kid for alg in store.algorithms}
        private_parts = [k.key.as_dict(private=True).get("d") for k in store.keys()]
    browser = app.test_client()
    sign_in(browser)
    code, verifier, _ = get_code(browser, rp)
    tokens = exchange(browser, rp, code, verifier).get_json()
    cc_response = browser.post("/token", headers=basic(cc), data={
        "grant_type": "client_credentials", "scope": "system/Patient.rs"})
    assert cc_response.status_code == 200, cc_response.text
    world = World(
        app=app, rp=rp, third=third, public=public, cc=cc, jwt_client_id=jwt_client_id,
        jwt_key=jwt_key, foreign_key=ECKey.generate_key("P-256", private=True), kids=kids,
        browser=browser, access_token=tokens["access_token"], id_token=tokens["id_token"],
        refresh_token=tokens["refresh_token"], cc_token=cc_response.get_json()["access_token"])
    world.secrets = [PASSWORD, rp.client_secret, third.client_secret, cc.client_secret,
                     app.config["SECRET_KEY"], jwt_key.as_dict(private=True)["d"],
                     "PRIVATE KEY", *[d for d in private_parts if d]]
    world.registered = {REDIRECT, THIRD_REDIRECT, PUBLIC_REDIRECT, JWT_REDIRECT,
                        LOGOUT_REDIRECT}
    yield world


# -- requests and the checks every response must pass -------------------------------------------
@dataclass
class Req:
    method: str
    path: str
    query: str | bytes | dict | None = None
    data: str | bytes | dict | None = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None
    environ: dict[str, Any] | None = None
    cookies: dict[str, str] | None = None   # override these cookies of the browser
    csrf: bool = False                      # add a valid csrf_token to the form

    def sent(self) -> str:
        return repr((self.query, self.data, self.headers, self.environ, self.cookies))

    def has_bearer_credentials(self) -> bool:
        """An Authorization header, or a non-empty form access_token in a POST body (RFC 6750
        §2.2: never in a GET body)."""
        if "Authorization" in self.headers:
            return True
        form = self.content_type in (None, "application/x-www-form-urlencoded")
        return (self.method == "POST" and form and isinstance(self.data, dict)
                and bool(self.data.get("access_token")))


def _csrf(http: FlaskClient) -> str:
    return csrf_from(http.get("/login").text)


def send(app: Flask, http: FlaskClient, req: Req):
    data = req.data
    if req.csrf:
        data = {**(data or {}), "csrf_token": _csrf(http)}
    kwargs: dict[str, Any] = {"method": req.method, "headers": req.headers}
    environ = dict(req.environ or {})
    if isinstance(req.query, bytes):
        # Raw bytes, exactly as a server passes them on: WSGI strings are latin-1 decoded.
        environ["QUERY_STRING"] = req.query.decode("latin-1")
    elif req.query is not None:
        kwargs["query_string"] = (urlencode(req.query, doseq=True)
                                  if isinstance(req.query, dict) else req.query)
    if data is not None:
        kwargs["data"] = data
    if req.content_type is not None:
        kwargs["content_type"] = req.content_type
    if environ:
        kwargs["environ_overrides"] = environ
    if req.cookies is None:
        return http.open(req.path, **kwargs)
    # A raw Cookie header: the browser's own cookies, with the garbage in place of the named ones.
    jar = {name: http.get_cookie(name) for name in ("idp_session", "idp_flow")}
    pairs = [f"{name}={c.value}" for name, c in jar.items()
             if c is not None and name not in req.cookies]
    pairs += [f"{name}={value}" for name, value in req.cookies.items()]
    raw = app.test_client(use_cookies=False)
    return raw.open(req.path, **{**kwargs, "headers": {**req.headers,
                                                       "Cookie": "; ".join(pairs)}})


def _redirect_allowed(world: World, location: str) -> bool:
    parts = urlsplit(location)
    if not parts.scheme and not parts.netloc:
        return location.startswith("/") and not location.startswith("//") \
            and "\\" not in location
    if parts.netloc in ("localhost", urlsplit(TEST_ISSUER).netloc) and parts.scheme == "http":
        return True
    if parts.username is not None or parts.password is not None or parts.fragment:
        return False
    if not {k for k, _ in parse_qsl(parts.query, keep_blank_values=True)} <= REDIRECT_PARAMS:
        return False
    base = f"{parts.scheme}://{parts.netloc}{parts.path}"
    if base in world.registered:
        return True
    # RFC 8252 §7.3: the public client registered a loopback URI, any port goes.
    registered = urlsplit(PUBLIC_REDIRECT)
    return (parts.scheme == "http" and parts.hostname == registered.hostname
            and parts.path == registered.path)


def check(world: World, req: Req, response: Any, label: str,
          caplog: pytest.LogCaptureFixture) -> None:
    sent = req.sent()
    where = f"[{label}] {req.method} {req.path} {sent[:300]}"
    body = response.get_data().decode("utf-8", "replace")
    unhandled = [r.getMessage() for r in caplog.records if "unhandled" in r.getMessage()]
    caplog.clear()
    assert response.status_code < 500, f"{where} -> {response.status_code} {unhandled}"
    assert not unhandled, f"{where} -> {unhandled}"
    assert "Traceback" not in body and 'File "' not in body, f"{where} leaks a traceback"
    location = response.headers.get("Location", "")
    for secret in world.secrets:
        assert secret not in body and secret not in location, f"{where} leaks a secret"
    if world.refresh_token not in sent:
        assert world.refresh_token not in body, f"{where} leaks a refresh token"
    if response.status_code in (301, 302, 303, 307, 308):
        assert _redirect_allowed(world, location), f"{where} redirects to {location!r}"
    elif location:
        assert _redirect_allowed(world, location), f"{where} points to {location!r}"
    path = urlsplit(req.path).path
    if path in PROTOCOL and response.status_code >= 400 and req.method != "HEAD":
        assert response.is_json, f"{where} -> {response.status_code} not JSON: {body[:200]}"
        answer = response.get_json()
        assert isinstance(answer, dict), where
        if "error" not in answer:
            # RFC 6750 §3.1: a request with no credentials at all gets a bare challenge.
            assert path == "/userinfo" and response.status_code == 401, \
                f"{where} -> {response.status_code} without error: {body[:200]}"
            assert not req.has_bearer_credentials(), f"{where}: credentials ignored"
            assert response.headers.get("WWW-Authenticate", "").startswith("Bearer"), where
        else:
            assert isinstance(answer["error"], str) and answer["error"], where


def sign_in(http: FlaskClient) -> None:
    from idp.extensions import limiter

    limiter.reset()  # the per-IP login throttle is not what these tests are about
    response = login(http)
    assert response.status_code == 302, response.text


def browser(app: Flask, who: str) -> FlaskClient:
    http = app.test_client()
    if who == "signed_in":
        sign_in(http)
    return http


def run(world: World, http: FlaskClient, who: str, reqs: list[Req], label: str,
        caplog: pytest.LogCaptureFixture) -> int:
    from idp.extensions import limiter

    for req in reqs:
        limiter.reset()  # throttling would answer 429 before the code under test runs
        response = send(world.app, http, req)
        check(world, req, response, label, caplog)
        if who == "signed_in" and http.get_cookie("idp_session") is None:
            sign_in(http)  # a case signed us out: sign in again
    return len(reqs)


# -- every route of the app ---------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    endpoint: str
    rule: str
    path: str
    methods: tuple[str, ...]
    arguments: tuple[str, ...]


SAMPLES = ("1", "x", "x/y", "00000000-0000-0000-0000-000000000000")


def targets(app: Flask) -> list[Target]:
    """A concrete URL for every rule; fails for a rule none of the samples can fill."""
    adapter = app.url_map.bind("localhost")
    found = []
    for rule in app.url_map.iter_rules():
        methods = tuple(sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}))
        for sample in SAMPLES:
            try:
                built = rule.build(dict.fromkeys(rule.arguments, sample), append_unknown=False)
            except (ValueError, TypeError):
                built = None
            if built is None:
                continue
            path = built[1]
            try:
                matched, _ = adapter.match(path, method=methods[0], return_rule=True)
            except Exception:  # noqa: BLE001 - any routing failure means "try another sample"
                continue
            if matched is rule:
                found.append(Target(rule.endpoint, rule.rule, path, methods,
                                    tuple(sorted(rule.arguments))))
                break
        else:
            pytest.fail(f"no sample fills {rule.rule} ({rule.endpoint}): add one to SAMPLES")
    return found


def _with_path_values(target: Target, value: str) -> str:
    if not target.arguments:
        return target.path
    path = target.rule
    for _ in target.arguments:
        start = path.index("<")
        path = path[:start] + value + path[path.index(">", start) + 1:]
    return path


def _params(value: Any) -> dict[str, Any]:
    return dict.fromkeys(PARAMS, value)


def _in(method: str, path: str, params: dict | str | bytes, **kwargs: Any) -> Req:
    """Parameters in the query for GET, in the body for anything else."""
    if method == "GET":
        return Req(method, path, query=params, **kwargs)
    content = kwargs.pop("content_type", "application/x-www-form-urlencoded"
                         if isinstance(params, (str, bytes)) else None)
    return Req(method, path, data=params, content_type=content, **kwargs)


BASELINE = {"client_id": "", "redirect_uri": REDIRECT, "response_type": "code",
            "scope": "openid profile", "state": "s", "grant_type": "authorization_code",
            "code": "garbage", "token": "garbage", "next": "/account"}


def _baseline(world: World) -> dict[str, str]:
    return {**BASELINE, "client_id": world.rp.client_id}


GenericCase = Callable[[World, Target], list[Req]]


def g_methods(world: World, target: Target) -> list[Req]:
    return [Req(m, target.path) for m in ALL_METHODS]


def g_empty(world: World, target: Target) -> list[Req]:
    reqs = []
    for m in target.methods:
        reqs += [Req(m, target.path), _in(m, target.path, {}), _in(m, target.path, "")]
    return reqs


def g_duplicated(world: World, target: Target) -> list[Req]:
    same = {k: [v, v] for k, v in _baseline(world).items()}
    different = {k: ["1", "2", "3"] for k in PARAMS}
    return [_in(m, target.path, p) for m in target.methods for p in (same, different)]


def g_oversized(world: World, target: Target) -> list[Req]:
    reqs = []
    for m in target.methods:
        reqs.append(Req(m, target.path, query={**_baseline(world), **_params("q" * 8000)}))
        reqs.append(Req(m, target.path, query={**_baseline(world), "state": BIG}))
        reqs.append(Req(m, target.path, query={"client_id": BIG, "a" * 10_000: "b"}))
        reqs.append(Req(m, target.path, data={"client_id": BIG}))           # > 64 KB: 413
        reqs.append(Req(m, target.path, data={"token": UNDER_LIMIT}))
        reqs.append(Req(m, target.path, data={k: "z" * 2000 for k in PARAMS}))
        reqs.append(Req(m, target.path, environ={"CONTENT_LENGTH": "99999999999"},
                        data="a=b", content_type="application/x-www-form-urlencoded"))
        reqs.append(Req(m, target.path, headers={"User-Agent": "u" * 20_000,
                                                 "Accept-Language": "x" * 20_000}))
    reqs.append(Req("GET", _with_path_values(target, "9" * 40)))
    reqs.append(Req("GET", _with_path_values(target, "n" * 5000)))
    return reqs


INVALID_UTF8 = (b"client_id=\xff\xfe&redirect_uri=https%3A%2F%2Frp.example%2Fcb%ff&scope=openid"
                b"%C0%AF&state=\xc3\x28&token=\xed\xa0\x80&username=\xf0\x28\x8c\x28"
                b"&next=/\xff&grant_type=\x80&id_token_hint=\xfe")
BAD_PERCENT = ("client_id=%&redirect_uri=%zz&scope=%E0%A4%A&state=%%%&token=%g0"
               "&next=%2&username=%u0041&grant_type=%00%&id_token_hint=%")


def g_encoding(world: World, target: Target) -> list[Req]:
    reqs = []
    for m in target.methods:
        for raw in (INVALID_UTF8, BAD_PERCENT, BAD_PERCENT.encode()):
            reqs.append(Req(m, target.path, query=raw))
            reqs.append(Req(m, target.path, data=raw,
                            content_type="application/x-www-form-urlencoded"))
            reqs.append(Req(m, target.path, data=raw,
                            content_type="application/x-www-form-urlencoded; charset=latin-1"))
    reqs.append(Req("GET", target.path + "%ff%fe"))
    reqs.append(Req("GET", target.path.rstrip("/") + "/%00"))
    reqs.append(Req("GET", target.path, environ={"PATH_INFO": target.path + "\xff\xfe"}))
    return reqs


def g_nul(world: World, target: Target) -> list[Req]:
    reqs = []
    for m in target.methods:
        reqs.append(_in(m, target.path, {k: f"{v}\x00" for k, v in _baseline(world).items()}))
        reqs.append(_in(m, target.path, _params("a\x00b")))
        reqs.append(_in(m, target.path, b"client_id=%00&token=\x00&username=a%00"))
    return reqs


def g_content_types(world: World, target: Target) -> list[Req]:
    form = urlencode(_baseline(world))
    reqs = []
    for m in target.methods:
        reqs.append(Req(m, target.path, data=json.dumps(_baseline(world)),
                        content_type="application/json"))
        for body in ("{", "[]", "123", "null", '{"token": {"a": 1}}', "\xff"):
            reqs.append(Req(m, target.path, data=body, content_type="application/json"))
        for ctype in ("text/plain", "multipart/form-data", "multipart/form-data; boundary=x",
                      "application/x-www-form-urlencoded; charset=ebcdic-cp-be",
                      "application/xml", "", "garbage", "application/jwt", "*/*; q=x"):
            reqs.append(Req(m, target.path, data=form, content_type=ctype))
        reqs.append(Req(m, target.path, data="--x\r\nContent-Disposition: form-data; name="
                        "\"token\"\r\n\r\nabc\r\n--x--", content_type=(
                            "multipart/form-data; boundary=x")))
    return reqs


def bogus_authorization(world: World) -> list[str]:
    kid = world.kids.get("ES256", "")
    return [
        "Basic", "Basic ", "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic !!!not-base64!!!", "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
        "Basic é", "Basic " + base64.b64encode(b":").decode(),
        "Basic " + base64.b64encode(f"{world.rp.client_id}:wrong".encode()).decode(),
        "Basic " + base64.b64encode(b"%zz:%").decode(),
        "Basic " + base64.b64encode(b"a" * 60_000 + b":b").decode(),
        "Basic " + base64.b64encode(f"{world.rp.client_id}\x00:x".encode()).decode(),
        "Bearer", "Bearer ", "Bearer garbage", "Bearer a.b.c", "Bearer ...", "bearer x y",
        "Bearer " + "t" * 20_000, "Bearer é",
        "Bearer " + alg_none(at_claims(), typ="at+jwt", kid=kid),
        "Bearer " + signed(world.foreign_key, at_claims(), typ="at+jwt", kid=kid),
        "Bearer " + signed(world.foreign_key, at_claims(), typ="at+jwt"),
        "Bearer " + world.id_token, "Bearer " + world.access_token + "x",
        "Digest username=x", "Negotiate YII=", "x", " ", "Basic Og== extra",
    ]


def g_authorization(world: World, target: Target) -> list[Req]:
    params = {**_baseline(world), "client_id": None}
    params = {k: v for k, v in params.items() if v is not None}
    return [_in(m, target.path, params, headers={"Authorization": value})
            for m in target.methods for value in bogus_authorization(world)]


GARBAGE_COOKIES = ("garbage", "x" * 4000, "é", '"quoted"', "a\\b", "eyJhIjoxfQ.bad.sig",
                   ".eJyrVkrOz0nNSy_JzCtRslIqzkjNSVWqBQBSrwdh.Zz.bad", "\x7f", "%00", "''")


def g_cookies(world: World, target: Target) -> list[Req]:
    reqs = []
    for m in target.methods:
        for value in GARBAGE_COOKIES:
            reqs.append(Req(m, target.path, cookies={"idp_session": value}))
            reqs.append(Req(m, target.path, cookies={"idp_flow": value}))
        reqs.append(Req(m, target.path, cookies={"idp_session": "a", "idp_flow": "b",
                                                 "idp_session ": "c"}))
    return reqs


def g_unknown_client(world: World, target: Target) -> list[Req]:
    reqs = []
    for m in target.methods:
        for client_id in ("unknown", "x" * 65, "x" * 5000, " ", "\u202e", world.rp.client_id
                          + " ", world.rp.client_id.upper()):
            params = {**_baseline(world), "client_id": client_id, "client_secret": "s"}
            reqs.append(_in(m, target.path, params))
    return reqs


def g_headers(world: World, target: Target) -> list[Req]:
    odd = [{"Host": "evil.example"}, {"Host": "idp.test:99999"}, {"X-Forwarded-For": "garbage"},
           {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "gopher"},
           {"Origin": "https://evil.example"}, {"Accept": "application/json"},
           {"Accept": "*/*;q=garbage"}, {"If-None-Match": '"' + "x" * 5000 + '"'},
           {"If-Modified-Since": "not a date"}, {"Range": "bytes=9-1"},
           {"Content-Encoding": "gzip"}, {"Transfer-Encoding": "chunked"},
           {"Cookie": "\x00"}, {"Referer": "javascript:alert(1)"}]
    return [Req(m, target.path, headers=h, data=urlencode(_baseline(world)) if m != "GET"
                else None, content_type=None if m == "GET"
                else "application/x-www-form-urlencoded")
            for m in target.methods for h in odd]


GENERIC: dict[str, GenericCase] = {
    "wrong_methods": g_methods, "empty": g_empty, "duplicated": g_duplicated,
    "oversized": g_oversized, "encoding": g_encoding, "nul_bytes": g_nul,
    "content_types": g_content_types, "authorization_header": g_authorization,
    "cookies": g_cookies, "unknown_client": g_unknown_client, "odd_headers": g_headers,
}


@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("case", sorted(GENERIC))
def test_generic_garbage_on_every_endpoint(app, world, who, case, caplog):
    caplog.set_level(logging.ERROR, logger="idp")
    http = browser(app, who)
    sent = 0
    for target in targets(app):
        reqs = GENERIC[case](world, target)
        assert reqs, f"{case} sends nothing to {target.rule}"
        sent += run(world, http, who, reqs, f"{case} {target.endpoint}", caplog)
    assert sent > 0


# -- targeted cases: a valid request with one thing broken --------------------------------------
def mutations(value: str, method: str) -> list[Any]:
    """Ways to break one parameter; None removes it."""
    huge = "h" * (100_000 if method == "GET" else 60_000)
    return [None, "", f"{value}\x00", "\x00", huge, [value, value], [value, "other"],
            "é\u202e\ufeff", value + " ", f"{value}\r\nSet-Cookie: a=b", "%zz"]


def mutate(base: dict[str, str], method: str) -> Iterator[dict[str, Any]]:
    for name, value in base.items():
        for broken in mutations(value, method):
            params = {k: v for k, v in base.items() if k != name}
            if broken is not None:
                params[name] = broken
            yield params
    yield {**base, "unexpected": "x", "request": "eyJhbGciOiJub25lIn0.e30."}


def authorize_base(world: World, rp: Rp | None = None) -> dict[str, str]:
    _, challenge = pkce()
    params = auth_params(rp or world.rp, challenge, scope="openid profile email",
                         prompt=None, max_age="3600", acr_values="urn:healthidp:acr:aal1",
                         login_hint="drsmith", response_mode="query")
    return params


REDIRECT_TRICKS = (
    "javascript:alert(1)", "data:text/html,<script>alert(1)</script>", "//evil.example/cb",
    "https://evil.example/cb", "https://rp.example/cb#frag", "https://rp.example/cb#",
    "https://rp.example@evil.example/cb", "https://evil.example@rp.example/cb",
    "https://rp.example/cb/../../evil", "https://rp.example/cb?next=https://evil.example",
    "https://rp.example/cb%2F..%2Fevil", "https://RP.EXAMPLE/cb", "http://rp.example/cb",
    "https://rp.example:443/cb", "https://rp.example./cb", " https://rp.example/cb",
    "https://rp.example/cb ", "https://rp.example/cb\x00", "https://rp.example/cb\t",
    "https://rp.example/cb\r\nLocation: https://evil.example", "\\\\evil.example/cb",
    "https:/\\evil.example", "https://rp.example\\@evil.example/cb", "", "https://",
    "https://rp.example/CB", "https://rp.example/cb/", "https://rp.example/cb?",
    "https://rp.example/cb%00", "https://rp.example/c%62", "HTTPS://rp.example/cb",
    "https://rp.example:99999/cb", "https://[::1/cb", "vbscript:x", "file:///etc/passwd",
)
LOOPBACK_TRICKS = (
    "http://127.0.0.1:8080/cb", "http://127.0.0.1:8080/other", "http://localhost:8080/cb",
    "https://127.0.0.1:8080/cb", "http://127.0.0.1:99999/cb", "http://127.0.0.1:abc/cb",
    "http://[::1]:8080/cb", "http://127.0.0.1.evil.example/cb", "http://127.0.0.1@evil.example/cb",
    "http://evil.example@127.0.0.1:5000/cb", "http://127.0.0.1:5000/cb#x",
    "http://127.0.0.1:5000/cb?x=1", "http://127.0.0.2:5000/cb", "http://0x7f.1:5000/cb",
    "http://127.1:5000/cb", "http://[::ffff:127.0.0.1]:5000/cb", "http://127.0.0.1:-1/cb",
    "http://127.0.0.1:0/cb", "http://127.0.0.1:/cb",
)
ODD_VALUES = {
    "max_age": ("-1", "1e3", "99999999999999999999", "abc", "0x10", " 5", "5 ", "١٢", "²",
                "𝟗", "", "0", "1.5", "+5", "9" * 9, "9" * 10, "0" * 50, "${7*7}"),
    "prompt": ("none login", "garbage", "none", "login", "consent", "select_account", "",
               " ", "none none", "x" * 10_000, "login consent", "NONE", "none\x00"),
    "code_challenge": ("", "a", "x" * 42, "x" * 129, "x" * 10_000, "!" * 43, "é" * 43,
                       "a" * 43 + "\x00", "+" * 43, "=" * 43),
    "code_challenge_method": ("plain", "S512", "", "s256", "S256 S256", "none"),
    "response_type": ("token", "id_token", "code id_token", "", "code code", "none",
                      "code token", "CODE"),
    "response_mode": ("fragment", "form_post", "query.jwt", "", "web_message"),
    "scope": ("", "profile", "openid " + "x" * 5000, "openid\x00", "openid openid",
              "openid unknown", "openid offline_access admin", "OPENID", "openid\tprofile",
              "openid " + " ".join(f"s{i}" for i in range(2000))),
    "acr_values": ("", "bogus", "urn:healthidp:acr:aal2", "urn:healthidp:acr:aal2-phr x",
                   "x" * 10_000),
    "request": ("eyJhbGciOiJub25lIn0.e30.", "garbage", ""),
    "request_uri": ("https://evil.example/r", "urn:x", ""),
    "registration": ("{}", "{", ""),
    "claims": ('{"id_token":{"acr":{"essential":true}}}', "{garbage", "[]"),
    "login_hint": ("x" * 10_000, "a\x00b", "1234567893", "<script>"),
    "nonce": ("x" * 100_000, "a\x00b", ""),
    "state": ("s" * 100_000, "a\r\nb", "<script>alert(1)</script>", "a\x00b"),
    "id_token_hint": ("garbage", "a.b.c"),
    "ui_locales": ("x" * 10_000, "\x00"),
    "display": ("popup", "garbage"),
}


def s_authorize(world: World) -> list[Req]:
    reqs = []
    # redirect_uri tricks, for a confidential and a loopback public client
    for uri in REDIRECT_TRICKS:
        reqs.append(Req("GET", "/authorize", query={**authorize_base(world), "redirect_uri": uri}))
        reqs.append(Req("GET", "/authorize", query={**authorize_base(world), "redirect_uri": uri,
                                                    "response_type": "token"}))
        reqs.append(Req("GET", "/authorize", query={**authorize_base(world), "redirect_uri": uri,
                                                    "client_id": "unknown"}))
    for uri in LOOPBACK_TRICKS:
        reqs.append(Req("GET", "/authorize", query={**authorize_base(world, world.public),
                                                    "redirect_uri": uri}))
        reqs.append(Req("GET", "/authorize", query={**authorize_base(world, world.public),
                                                    "redirect_uri": uri, "prompt": "none"}))
    reqs.append(Req("GET", "/authorize", query={**authorize_base(world), "redirect_uri": None}))
    # absurd values, one parameter at a time, also with prompt=none (errors go to the client)
    for name, values in ODD_VALUES.items():
        for value in values:
            for extra in ({}, {"prompt": "none"}):
                query = {**authorize_base(world), **extra, name: value}
                reqs.append(Req("GET", "/authorize", query=query))
    for params in mutate(authorize_base(world), "GET"):
        reqs.append(Req("GET", "/authorize", query=params))
    for params in mutate(authorize_base(world, world.third), "GET"):
        reqs.append(Req("GET", "/authorize", query=params))
    # the consent form (third-party client): decisions with and without CSRF, tampered query
    third = authorize_base(world, world.third)
    for decision in ("allow", "deny", "garbage", "", None):
        form = {} if decision is None else {"decision": decision}
        reqs.append(Req("POST", "/authorize", query=third, data=form, csrf=True))
        reqs.append(Req("POST", "/authorize", query=third, data=form))
        for uri in ("https://evil.example/cb", "javascript:alert(1)", THIRD_REDIRECT + "#x"):
            reqs.append(Req("POST", "/authorize", query={**third, "redirect_uri": uri},
                            data=form, csrf=True))
    reqs.append(Req("POST", "/authorize", data={**third, "decision": "allow"}, csrf=True))
    reqs.append(Req("POST", "/authorize", query=third, data={"decision": ["allow", "deny"]},
                    csrf=True))
    reqs.append(Req("POST", "/authorize", query=third, data=json.dumps({"decision": "allow"}),
                    content_type="application/json"))
    return reqs


def s_token(world: World) -> list[Req]:
    rp, auth = world.rp, basic(world.rp)
    reqs = []
    # one parameter broken at a time, each on a fresh, valid code
    code, verifier = world.code()
    base = {"grant_type": "authorization_code", "code": code, "redirect_uri": rp.redirect_uri,
            "code_verifier": verifier}
    for params in mutate(base, "POST"):
        code, verifier = world.code()
        fresh = {k: (code if v == base["code"] else verifier if v == base["code_verifier"]
                     else v) for k, v in params.items()}
        reqs.append(Req("POST", "/token", data=fresh, headers=auth))
    # a used code, a code of another client, the wrong verifier
    reqs.append(Req("POST", "/token", data=base, headers=auth))
    code, verifier = world.code()
    reqs.append(Req("POST", "/token", data={**base, "code": code}, headers=basic(world.third)))
    code, _ = world.code()
    reqs.append(Req("POST", "/token", data={**base, "code": code, "code_verifier": "v" * 43},
                    headers=auth))
    for grant in ("", "password", "implicit", "urn:ietf:params:oauth:grant-type:jwt-bearer",
                  "urn:ietf:params:oauth:grant-type:device_code", "x" * 5000, "a\x00"):
        reqs.append(Req("POST", "/token", data={**base, "grant_type": grant}, headers=auth))
    # refresh grant
    refresh = {"grant_type": "refresh_token", "refresh_token": "garbage"}
    for value in ("garbage", "", "r" * 60_000, "a\x00b", ["a", "b"]):
        reqs.append(Req("POST", "/token", data={**refresh, "refresh_token": value}, headers=auth))
    for scope in ("openid admin", "", "openid\x00", "x" * 10_000, "offline_access"):
        reqs.append(Req("POST", "/token", data={**refresh, "scope": scope}, headers=auth))
    reqs.append(Req("POST", "/token", data={**refresh, "refresh_token": world.refresh_token},
                    headers=basic(world.third)))
    # client_credentials
    cc = {"grant_type": "client_credentials", "scope": "system/Patient.rs"}
    for scope in ("garbage", "", "openid profile", "x" * 10_000, "a\x00"):
        reqs.append(Req("POST", "/token", data={**cc, "scope": scope}, headers=basic(world.cc)))
    reqs.append(Req("POST", "/token", data=cc, headers=auth))            # grant not allowed
    reqs.append(Req("POST", "/token", data={**cc, "client_id": world.public.client_id}))
    # client authentication
    for auth_data in (
        {"client_id": rp.client_id, "client_secret": "wrong"},
        {"client_id": rp.client_id},
        {"client_id": "unknown", "client_secret": "x"},
        {"client_id": "a\x00", "client_secret": "x"},
        {"client_id": "x" * 5000},
        {"client_id": [rp.client_id, world.third.client_id], "client_secret": "x"},
        {"client_id": world.public.client_id, "client_secret": "x"},
        {"client_id": world.cc.client_id, "client_secret": world.cc.client_secret},
    ):
        reqs.append(Req("POST", "/token", data={**base, **auth_data}))
        reqs.append(Req("POST", "/token", data={**base, **auth_data}, headers=auth))
    reqs += client_assertions(world, "/token", base)
    return reqs


def client_assertions(world: World, path: str, base: dict) -> list[Req]:
    now = int(time.time())
    es_kid = world.kids.get("ES256", "")
    values = [
        "garbage", "a.b.c", "", "x" * 60_000, "...", "a\x00.b.c",
        alg_none({"iss": world.jwt_client_id, "sub": world.jwt_client_id,
                  "aud": f"{TEST_ISSUER}/token", "exp": now + 60, "jti": "n"}),
        assertion(world, key=world.foreign_key),
        signed(world.foreign_key, {"sub": world.jwt_client_id}, kid=es_kid),
        assertion(world, exp=10**20), assertion(world, exp=-(10**20)),
        assertion(world, exp=str(now + 60)), assertion(world, exp=now - 3600),
        assertion(world, exp=float("1e300")), assertion(world, jti=None),
        assertion(world, jti={"a": 1}), assertion(world, jti=["a"]), assertion(world, jti=7),
        assertion(world, jti="j" * 20_000), assertion(world, jti="a\x00b"),
        assertion(world, aud="https://evil.example"), assertion(world, aud=[]),
        assertion(world, iss="someone-else"), assertion(world, iss=None),
        assertion(world, sub=["x"]), assertion(world, sub={"a": 1}), assertion(world, sub=None),
        assertion(world, sub="s" * 10_000), assertion(world, sub="a\x00b"),
        assertion(world, sub=world.rp.client_id, iss=world.rp.client_id),
        assertion(world, nbf=now + 3600), assertion(world, iat="yesterday"),
        assertion(world, iat=10**20), assertion(world, nbf=10**20),
        _b64json({"alg": "ES256"}) + "." + _b64(b"\xff\xfe") + "." + _b64(b"sig"),
        _b64json({"alg": "ES256"}) + "." + _b64json([1, 2]) + "." + _b64(b"sig"),
        _b64json(["x"]) + "." + _b64json({"sub": world.jwt_client_id}) + ".c2ln",
    ]
    reqs = []
    for value in values:
        data = {**base, "client_assertion_type": ASSERTION_TYPE, "client_assertion": value}
        reqs.append(Req("POST", path, data=data))
        reqs.append(Req("POST", path, data={**data, "client_id": world.jwt_client_id}))
    replay = assertion(world)
    data = {**base, "client_assertion_type": ASSERTION_TYPE, "client_assertion": replay}
    reqs += [Req("POST", path, data=data), Req("POST", path, data=data)]
    for kind in ("", "garbage", ASSERTION_TYPE + "x", [ASSERTION_TYPE, ASSERTION_TYPE]):
        reqs.append(Req("POST", path, data={**base, "client_assertion_type": kind,
                                            "client_assertion": assertion(world)}))
    return reqs


def s_revoke_introspect(world: World, path: str) -> list[Req]:
    auth = basic(world.rp)
    base = {"token": world.access_token, "token_type_hint": "access_token"}
    reqs = [Req("POST", path, data=p, headers=auth) for p in mutate(base, "POST")]
    for hint in ("refresh_token", "garbage", "", "x" * 5000):
        for token in (world.refresh_token, world.cc_token, world.id_token, "garbage"):
            reqs.append(Req("POST", path, data={"token": token, "token_type_hint": hint},
                            headers=auth))
    others = ({"client_id": world.public.client_id}, {"client_id": "unknown"},
              {"client_id": world.third.client_id, "client_secret": world.third.client_secret})
    for other in others:
        reqs.append(Req("POST", path, data={**base, **other}))
    for token in (alg_none(at_claims(), typ="at+jwt", kid=world.kids.get("RS256", "")),
                  signed(world.foreign_key, at_claims(), typ="at+jwt",
                         kid=world.kids.get("ES256", ""))):
        reqs.append(Req("POST", path, data={"token": token}, headers=auth))
    reqs += client_assertions(world, path, base)
    # last: revoke the real tokens, then ask again
    reqs.append(Req("POST", path, data={"token": world.access_token}, headers=auth))
    reqs.append(Req("POST", path, data={"token": world.access_token},
                    headers=basic(world.third)))
    return reqs


def s_revoke(world: World) -> list[Req]:
    return s_revoke_introspect(world, "/revoke")


def s_introspect(world: World) -> list[Req]:
    return s_revoke_introspect(world, "/introspect")


def s_userinfo(world: World) -> list[Req]:
    reqs = []
    for value in bogus_authorization(world):
        for method in ("GET", "POST"):
            reqs.append(Req(method, "/userinfo", headers={"Authorization": value}))
    good = {"Authorization": f"Bearer {world.access_token}"}
    reqs += [
        Req("GET", "/userinfo", headers={"Authorization": f"Bearer {world.cc_token}"}),
        Req("POST", "/userinfo", headers=good, data={"access_token": world.access_token}),
        Req("POST", "/userinfo", headers=good, data={"access_token": "garbage"}),
        Req("GET", "/userinfo", query={"access_token": world.access_token}),
        Req("POST", "/userinfo", data=json.dumps({"access_token": world.access_token}),
            content_type="application/json"),
        Req("GET", "/userinfo", headers={"Authorization": f"Bearer  {world.access_token}"}),
        Req("GET", "/userinfo", headers={"Authorization": f"Bearer {world.access_token} x"}),
    ]
    for params in mutate({"access_token": world.access_token}, "POST"):
        reqs.append(Req("POST", "/userinfo", data=params))
    reqs.append(Req("GET", "/userinfo", headers=good))
    return reqs


def s_logout(world: World) -> list[Req]:
    kid = world.kids.get("RS256", "")
    base = {"id_token_hint": world.id_token, "post_logout_redirect_uri": LOGOUT_REDIRECT,
            "state": "st", "client_id": world.rp.client_id}
    reqs = []
    for method in ("GET", "POST"):
        for hint in ("garbage", "a.b.c", "x" * 60_000, "a\x00b",
                     alg_none({"iss": TEST_ISSUER, "aud": [world.rp.client_id]}, kid=kid),
                     signed(world.foreign_key, {"iss": TEST_ISSUER, "aud": world.rp.client_id},
                            kid=world.kids.get("ES256", "")),
                     world.access_token, world.cc_token, world.id_token + "x"):
            reqs.append(_in(method, "/logout", {**base, "id_token_hint": hint}))
        for uri in REDIRECT_TRICKS + (LOGOUT_REDIRECT + "?x=1", LOGOUT_REDIRECT + "#f"):
            reqs.append(_in(method, "/logout", {**base, "post_logout_redirect_uri": uri}))
            reqs.append(_in(method, "/logout", {"post_logout_redirect_uri": uri}))
            reqs.append(_in(method, "/logout", {"post_logout_redirect_uri": uri,
                                                "client_id": world.rp.client_id}))
        for client_id in ("unknown", world.third.client_id, "a\x00", "x" * 5000):
            reqs.append(_in(method, "/logout", {**base, "client_id": client_id}))
            reqs.append(_in(method, "/logout", {"client_id": client_id,
                                                "post_logout_redirect_uri": LOGOUT_REDIRECT}))
        reqs.append(_in(method, "/logout", {**base, "confirm": "yes"}))
    reqs.append(Req("POST", "/logout", data={"confirm": "yes"}))
    reqs.append(Req("POST", "/logout", data={"confirm": "yes"}, csrf=True))
    for params in mutate(base, "GET"):
        reqs.append(Req("GET", "/logout", query=params))
    return reqs


NEXT_TRICKS = ("https://evil.example", "//evil.example", "/\\evil.example", "\\\\evil.example",
               "javascript:alert(1)", "/%2F%2Fevil.example", "/\t/evil.example", "/\r\n/x",
               "http:/evil.example", "///evil.example", "/account\x00", "x" * 5000,
               "evil.example", "/" + "a" * 5000, "\u2215\u2215evil.example", "%2F%2Fevil",
               " /account", "/@evil.example", "data:text/html,x")


def s_login(world: World) -> list[Req]:
    # Successful sign-ins first: the failures below lock the account (5 in a row).
    reqs = [Req("POST", "/login", data={"username": "drsmith", "password": PASSWORD},
                headers={"User-Agent": ua}, csrf=True)
            for ua in ("ua\x00" + "u" * 1000, "é" * 400, "")]
    for next_url in NEXT_TRICKS:
        reqs.append(Req("GET", "/login", query={"next": next_url}))
        reqs.append(Req("POST", "/login", data={"username": "drsmith", "password": PASSWORD,
                                                "next": next_url}, csrf=True))
    for hint in ("x" * 100_000, "a\x00b", "é" * 300, "<script>"):
        reqs.append(Req("GET", "/login", query={"login_hint": hint}))
    base = {"username": "drsmith", "password": "wrong-password", "next": "/account"}
    for params in mutate(base, "POST"):
        reqs.append(Req("POST", "/login", data=params, csrf=True))
    for username in ("1234567893\n", "١٢٣٤٥٦٧٨٩٣", "DRSMITH", " drsmith ", "x" * 255,
                     "drsmith\x00", "\x00", "%00", "' OR 1=1 --"):
        reqs.append(Req("POST", "/login", data={**base, "username": username}, csrf=True))
    reqs.append(Req("POST", "/login", data={**base, "password": "p" * 1025}, csrf=True))
    reqs.append(Req("POST", "/login", data={"username": "drsmith", "password": PASSWORD}))
    reqs.append(Req("POST", "/login", data={**base, "csrf_token": "garbage"}))
    return reqs


def s_account(world: World) -> list[Req]:
    reqs = []
    for consent_id in ("0", "1", "2147483648", "9223372036854775808", "9" * 40):
        path = f"/account/consents/{consent_id}/revoke"
        reqs += [Req("POST", path, csrf=True), Req("POST", path), Req("GET", path)]
    reqs += [Req("POST", "/account/consents/-1/revoke", csrf=True),
             Req("POST", "/account/consents/x/revoke", csrf=True)]
    return reqs


def s_static(world: World) -> list[Req]:
    return [Req("GET", p) for p in (
        "/static/../config.py", "/static/%2e%2e/config.py", "/static/..%2fconfig.py",
        "/static/%2e%2e%2f%2e%2e%2fetc/passwd", "/static/x%00", "/static/" + "a" * 5000,
        "/static/..\\config.py", "/static//etc/passwd", "/static/%ff")]


def s_discovery(world: World) -> list[Req]:
    reqs = []
    for path in ("/.well-known/openid-configuration", "/jwks.json"):
        reqs += [Req("GET", path, headers={"If-None-Match": "garbage"}),
                 Req("GET", path, headers={"If-None-Match": "*"}),
                 Req("GET", path, headers={"If-Modified-Since": "Thu, 01 Jan 1970 00:00:00"}),
                 Req("GET", path, headers={"Range": "bytes=0-0,5-1"})]
    return reqs


def s_register(world: World) -> list[Req]:
    """RFC 7591/7592: bogus credentials, malformed bodies with a valid initial access token,
    tricky redirect URIs; each must be a JSON error (or a 201), never a 500."""
    from idp.admin.service import issue_initial_token
    from idp.extensions import db

    with world.app.app_context():
        token = issue_initial_token(actor="test", lifetime=3600, uses=10_000).token
        db.session.commit()
    auth = {"Authorization": f"Bearer {token}"}
    good = {"client_name": "x", "redirect_uris": ["https://rp.example/cb"]}

    def body(value: Any) -> Req:
        raw = value if isinstance(value, (str, bytes)) else json.dumps(value)
        return Req("POST", "/register", data=raw, content_type="application/json",
                   headers=auth)

    reqs = [Req("POST", "/register", data=json.dumps(good), content_type="application/json",
                headers={"Authorization": value}) for value in bogus_authorization(world)]
    for raw in ("", "{", "[]", "null", "1", '"x"', "{}", "\x00", "x" * 60_000, b"\xff\xfe"):
        reqs.append(body(raw))
    for field_name in ("redirect_uris", "post_logout_redirect_uris", "grant_types",
                       "response_types", "client_name", "scope", "backchannel_logout_uri",
                       "token_endpoint_auth_method", "jwks", "jwks_uri"):
        for value in (None, "", 1, [], [1], {}, ["x" * 5000], "x\x00", True):
            reqs.append(body({**good, field_name: value}))
    for uri in (*REDIRECT_TRICKS, *LOOPBACK_TRICKS):
        reqs.append(body({**good, "redirect_uris": [uri]}))
        reqs.append(body({**good, "backchannel_logout_uri": uri}))
    reqs.append(Req("POST", "/register", data=urlencode(good), headers=auth,
                    content_type="application/x-www-form-urlencoded"))
    for method in ("GET", "PUT", "DELETE"):
        for value in bogus_authorization(world)[:12]:
            reqs.append(Req(method, f"/register/{world.rp.client_id}", data=json.dumps(good),
                            content_type="application/json", headers={"Authorization": value}))
        reqs.append(Req(method, "/register/" + "x" * 5000, headers=auth))
    return reqs


# Targeted cases, by the endpoint (view name) they aim at.
SPECIFIC: dict[str, tuple[str, Callable[[World], list[Req]]]] = {
    "authorize": ("oidc.authorize", s_authorize),
    "token": ("oidc.token", s_token),
    "revoke": ("oidc.revoke", s_revoke),
    "introspect": ("oidc.introspect", s_introspect),
    "userinfo": ("oidc.userinfo", s_userinfo),
    "logout": ("oidc.logout", s_logout),
    "login": ("accounts.login", s_login),
    "account": ("accounts.revoke_consent", s_account),
    "static": ("static", s_static),
    "discovery": ("oidc.jwks", s_discovery),
    "register": ("registration.register", s_register),
}


@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("case", sorted(SPECIFIC))
def test_targeted_garbage(app, world, who, case, caplog):
    caplog.set_level(logging.ERROR, logger="idp")
    http = browser(app, who)
    reqs = SPECIFIC[case][1](world)
    assert len(reqs) > 5
    run(world, http, who, reqs, case, caplog)


def test_every_endpoint_is_covered(app, world):
    """Every rule gets the generic cases (targets() fails on a rule it cannot fill), and every
    protocol endpoint in the map has targeted cases too; targeted cases name live rules."""
    rules = {rule.rule for rule in app.url_map.iter_rules()}
    covered = targets(app)
    assert {t.rule for t in covered} == rules
    for target in covered:
        for name, case in GENERIC.items():
            assert case(world, target), f"generic case {name} skips {target.rule}"
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    targeted = {endpoint for endpoint, _ in SPECIFIC.values()}
    assert targeted <= endpoints, f"targeted cases for endpoints gone: {targeted - endpoints}"
    protocol = {rule.endpoint for rule in app.url_map.iter_rules()
                if rule.rule in (*PROTOCOL, "/authorize", "/logout", "/login")}
    missing = protocol - targeted
    assert not missing, f"protocol endpoints without targeted malformed-input cases: {missing}"


def test_checks_catch_what_they_should(app, world, caplog):
    """The checks themselves: a 500, a traceback, a leaked secret, a non-JSON protocol refusal
    and an open redirect are each caught."""
    from werkzeug.wrappers import Response

    req = Req("GET", "/authorize")
    bad = [Response("boom", status=500),
           Response('Traceback (most recent call last):\n  File "x.py"', status=400),
           Response(f"secret {world.rp.client_secret}", status=400),
           Response("", status=302, headers={"Location": "https://evil.example/cb?code=x"}),
           Response("", status=302, headers={"Location": "//evil.example"}),
           Response("", status=302, headers={"Location": REDIRECT + "?code=x&extra=1"}),
           Response("", status=302, headers={"Location": "http://127.0.0.1:9/other"})]
    for response in bad:
        with pytest.raises(AssertionError):
            check(world, req, response, "self-test", caplog)
    with pytest.raises(AssertionError):
        check(world, Req("POST", "/token"), Response("<html>", status=400), "self-test", caplog)
    with pytest.raises(AssertionError):
        check(world, Req("GET", "/userinfo", headers={"Authorization": "Bearer x"}),
              Response("{}", status=401, mimetype="application/json",
                       headers={"WWW-Authenticate": "Bearer"}), "self-test", caplog)
    good = Response("", status=302, headers={"Location": REDIRECT + "?code=x&state=s&iss=i"})
    check(world, req, good, "self-test", caplog)
    check(world, req, Response("", status=302, headers={
        "Location": "http://127.0.0.1:4711/cb?code=x"}), "self-test", caplog)
