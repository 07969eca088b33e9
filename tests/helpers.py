"""Test helpers: accounts, clients and the browser side of the code flow, over the test client."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit

from idp.accounts.service import create_user
from idp.extensions import db
from idp.oidc.clients import create_client
from tests.log_scan import register as register_secret

PASSWORD = "Sturdy-Cedar-Lantern-42!"
REDIRECT = "https://rp.example/cb"


# username -> TOTP seed of the authenticator app make_user() enrolled for it
TOTP_SECRETS: dict[str, str] = {}


def make_user(username: str = "drsmith", npi: str | None = "1234567893", role: str = "physician",
              password: str = PASSWORD, acknowledged: bool = True, totp: bool = True,
              **extra) -> object:
    """An account; `acknowledged` records the daily acknowledgment for yesterday through the
    day after tomorrow, so tests that move time by hours are not sent to it; `totp` enrolls an
    authenticator app whose seed login() uses for the second step."""
    register_secret("password", password)
    user = create_user(username=username, email=f"{username}@hospital.example", role=role,
                       npi=npi, password=password, given_name=extra.pop("given_name", "Ana"),
                       family_name=extra.pop("family_name", "Smith"), **extra)
    user.email_verified = True
    if acknowledged:
        acknowledge_days(user, range(-1, 3))
    if totp:
        enroll_totp(user)
    db.session.commit()
    return user


def enroll_totp(user) -> str:
    import pyotp

    from idp import clock
    from idp.core import crypto
    from idp.mfa.models import Factor

    secret = pyotp.random_base32()
    db.session.add(Factor(user_id=user.id, kind="totp", label="Test app", created_at=clock.now(),
                          confirmed_at=clock.now(), secret_encrypted=crypto.encrypt(secret)))
    TOTP_SECRETS[user.username] = secret
    register_secret("TOTP seed", secret)
    return secret


def totp_now(username: str) -> str:
    import pyotp

    from idp import clock

    return pyotp.TOTP(TOTP_SECRETS[username]).at(clock.now())


def forget_totp_use(username: str) -> None:
    """Let the next login in the same 30 s step use the same code (test set-up only: the IdP
    refuses a replayed step, which test_mfa checks)."""
    from sqlalchemy import update

    from idp.accounts.models import User
    from idp.mfa.models import Factor

    user_id = db.session.query(User.id).filter_by(username=username).scalar()
    db.session.execute(update(Factor).where(Factor.user_id == user_id).values(
        last_totp_step=None))
    db.session.commit()


def acknowledge_days(user, offsets) -> None:
    from datetime import date, timedelta

    from idp import clock
    from idp.accounts.acknowledgment import today
    from idp.accounts.models import Acknowledgment
    from idp.context import policy

    base = date.fromisoformat(today())
    for offset in offsets:
        db.session.add(Acknowledgment(user_id=user.id, day=(base + timedelta(days=offset))
                                      .isoformat(), version=policy().acknowledgment.version,
                                      accepted_at=clock.now()))


@dataclass
class Rp:
    client_id: str
    client_secret: str | None
    redirect_uri: str


def make_client(scope: str = "openid profile email offline_access roles npi",
                redirect_uri: str = REDIRECT, first_party: bool = True, **kwargs) -> Rp:
    new = create_client(name=kwargs.pop("name", "Test RP"), redirect_uris=[redirect_uri],
                        scope=scope, first_party=first_party,
                        grant_types=kwargs.pop("grant_types", ["authorization_code",
                                                               "refresh_token"]), **kwargs)
    db.session.commit()
    register_secret("client secret", new.client_secret)
    return Rp(new.client.client_id, new.client_secret, redirect_uri)


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    register_secret("PKCE code verifier", verifier)
    challenge = base64.urlsafe_b64encode(
        hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html)
    assert match, "page has no csrf_token"
    return match.group(1)


def login(http, username: str = "drsmith", password: str = PASSWORD, next_url: str = "/account",
          mfa: bool = True):
    """Password step, then (when `mfa`) the authenticator-app step; returns the last response:
    a 302 to next_url on success, the failing page otherwise."""
    page = http.get("/login")
    response = http.post("/login", data={"username": username, "password": password,
                                         "csrf_token": csrf_from(page.text), "next": next_url})
    if not mfa or response.status_code != 302 or \
            not response.headers["Location"].startswith("/mfa/challenge"):
        _register_cookies(http)
        return response
    done = pass_totp(http, username)
    _register_cookies(http)
    return done


def signed_in_browser(app, username: str = "drsmith", password: str = PASSWORD):
    """A new browser (test client) signed in as an existing account, both factors passed;
    the `signed_in` fixture (tests/integration/conftest.py) is drsmith's `client`."""
    http = app.test_client()
    response = login(http, username, password)
    assert response.status_code == 302, response.text[:300]
    return http


def same_device(source, target) -> None:
    """Give the test client `target` the device cookie (idp_device) of `source`: another
    window of the same browser, for tests of rules other than "new device"."""
    cookie = source.get_cookie("idp_device")
    assert cookie is not None, "the source browser has not signed in"
    target.set_cookie("idp_device", cookie.value)


def _register_cookies(http) -> None:
    for name, kind in (("idp_session", "session cookie"), ("__Host-idp_session", "session cookie"),
                       ("idp_device", "device cookie"), ("__Host-idp_device", "device cookie")):
        cookie = http.get_cookie(name) if hasattr(http, "get_cookie") else None
        if cookie is not None:
            register_secret(kind, cookie.value)


def pass_totp(http, username: str):
    from idp.accounts.service import find_by_login
    from idp.mfa.models import Factor

    with http.application.app_context():  # tests may drive the client outside one
        account = find_by_login(username)
        name = account.username if account else username
        code = totp_now(name)
        register_secret("TOTP code", code)
        factor_id = db.session.query(Factor.id).filter_by(
            user_id=account.id if account else -1, kind="totp").order_by(Factor.id).scalar()
    challenge = http.get("/mfa/challenge")
    done = http.post("/mfa/challenge", data={"code": code, "factor": factor_id or "",
                                             "csrf_token": csrf_from(challenge.text)})
    with http.application.app_context():
        forget_totp_use(name)
    return done


def auth_params(rp: Rp, challenge: str | None, **extra) -> dict:
    params = {"response_type": "code", "client_id": rp.client_id, "redirect_uri": rp.redirect_uri,
              "scope": extra.pop("scope", "openid profile email offline_access"),
              "state": "st-" + secrets.token_hex(4), "nonce": "n-" + secrets.token_hex(4)}
    if challenge:
        params.update(code_challenge=challenge, code_challenge_method="S256")
    params.update(extra)
    return {k: v for k, v in params.items() if v is not None}


def authorize(http, rp: Rp, challenge: str | None = None, **extra):
    params = auth_params(rp, challenge, **extra)
    return http.get("/authorize?" + urlencode(params)), params


def query(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def get_code(http, rp: Rp, **extra) -> tuple[str, str, dict]:
    """Signed-in browser: run /authorize and return (code, verifier, params)."""
    verifier, challenge = pkce()
    response, params = authorize(http, rp, challenge, **extra)
    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    assert location.startswith(rp.redirect_uri), location
    got = query(location)
    assert got.get("state") == params["state"]
    register_secret("authorization code", got.get("code"))
    return got["code"], verifier, params


def exchange(http, rp: Rp, code: str, verifier: str | None, **extra):
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": rp.redirect_uri}
    if verifier:
        data["code_verifier"] = verifier
    data.update(extra)
    auth = (rp.client_id, rp.client_secret) if rp.client_secret else None
    if auth is None:
        data["client_id"] = rp.client_id
    headers = {}
    if auth:
        raw = f"{auth[0]}:{auth[1]}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
    response = http.post("/token", data=data, headers=headers)
    register_tokens(response)
    return response


def register_tokens(response) -> None:
    """Register the tokens of a token-endpoint answer with the log scan."""
    body = response.get_json(silent=True) if hasattr(response, "get_json") else None
    if isinstance(body, dict):
        for field in ("access_token", "refresh_token", "id_token"):
            register_secret(field.replace("_", " "), body.get(field))


def basic(rp: Rp) -> dict[str, str]:
    raw = f"{rp.client_id}:{rp.client_secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def wait_ready(proc: object, readyz: Callable[[], object], output: Callable[[], str],
               name: str, timeout: float) -> None:
    """Poll a started server's /readyz (`readyz()` makes the request) until it answers 200
    with status ready; fail with the server's output if it exits or the time runs out."""
    import time

    import pytest
    import requests

    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{name} exited with {proc.returncode} before it was ready:\n"
                        f"{output()}", pytrace=False)
        try:
            response = readyz()
            if response.status_code == 200 and response.json().get("status") == "ready":
                return
            last = f"{response.status_code} {response.text[:200]}"
        except (requests.RequestException, ValueError) as exc:
            last = type(exc).__name__
        time.sleep(0.1)
    pytest.fail(f"{name} was not ready within {timeout}s (last: {last}):\n{output()}",
                pytrace=False)
