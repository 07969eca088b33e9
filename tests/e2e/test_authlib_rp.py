"""Authlib's own OAuth 2.0 client (requests integration) against the IdP under gunicorn:
client_secret_basic, client_secret_post and private_key_jwt, PKCE S256, ID token verified with
joserfc against the published JWKS, userinfo, refresh token rotation and reuse detection, and
single-use client assertions; the default configuration (openid profile email) refreshing
twice and logging out with the refreshed ID token."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT, private_key_jwt_sign
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from idp.context import policy
from idp.extensions import db
from idp.oidc.clients import create_client
from tests.e2e.conftest import Person, Server, browser_sign_in, free_port, seed_client
from tests.e2e.refresh_checks import check_refreshed, logout, refused
from tests.helpers import Rp

pytestmark = pytest.mark.e2e

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SCOPE = "openid profile email offline_access"
ASSERTION_LIFETIME = 300  # the IdP refuses longer than tokens.client_assertion_max_lifetime


class ShortPrivateKeyJWT(PrivateKeyJWT):
    """Authlib's private_key_jwt, with assertions living 5 minutes instead of Authlib's
    default hour (the IdP caps an assertion's lifetime, as RFC 7523 lets it)."""

    def sign(self, auth, token_endpoint: str) -> str:
        return private_key_jwt_sign(auth.client_secret, client_id=auth.client_id,
                                    token_endpoint=token_endpoint, claims=self.claims,
                                    header=self.headers, alg=self.alg,
                                    expires_in=ASSERTION_LIFETIME)


def _discover(server: Server) -> dict:
    response = requests.get(server.url("/.well-known/openid-configuration"), timeout=10)
    assert response.status_code == 200
    meta = response.json()
    assert meta["issuer"] == server.base
    return meta


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def _at_hash(access_token: str) -> str:
    half = hashlib.sha256(access_token.encode()).digest()[:16]
    return base64.urlsafe_b64encode(half).rstrip(b"=").decode()


def _verify_id_token(meta: dict, id_token: str, client_id: str, nonce: str,
                     access_token: str) -> dict:
    """What an RP must check (OIDC Core 3.1.3.7), with joserfc and the live JWKS."""
    keys = KeySet.import_key_set(requests.get(meta["jwks_uri"], timeout=10).json())
    token = jwt.decode(id_token, keys, algorithms=meta["id_token_signing_alg_values_supported"])
    assert token.header["kid"] and token.header["alg"] == "RS256"
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": meta["issuer"]},
        aud={"essential": True, "value": client_id},
        azp={"essential": True, "value": client_id},
        nonce={"essential": True, "value": nonce},
        sub={"essential": True}, exp={"essential": True}, iat={"essential": True},
        auth_time={"essential": True}, sid={"essential": True},
    ).validate(token.claims)
    assert token.claims["at_hash"] == _at_hash(access_token)
    return token.claims


def _authorize(server: Server, session: OAuth2Session, meta: dict, person: Person,
               rp: Rp) -> tuple[str, str, str]:
    """Authorization URL with PKCE S256 + nonce, the browser part; returns
    (callback URL, code_verifier, nonce)."""
    verifier = secrets.token_urlsafe(48)
    nonce = secrets.token_urlsafe(16)
    url, state = session.create_authorization_url(
        meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce)
    asked = _query(url)
    assert asked["code_challenge_method"] == "S256" and asked["code_challenge"]
    callback = browser_sign_in(server, url, person.username, person.password, rp.redirect_uri)
    got = _query(callback)
    assert got["state"] == state and got["iss"] == server.base  # RFC 9207
    return callback, verifier, nonce


def _redirect_uri() -> str:
    return f"http://127.0.0.1:{free_port()}/cb"


def test_authlib_client_secret_basic_full_flow(idp_server, person):
    meta = _discover(idp_server)
    rp = seed_client(redirect_uri=_redirect_uri(), name="Authlib RP")
    session = OAuth2Session(rp.client_id, rp.client_secret, scope=SCOPE,
                            redirect_uri=rp.redirect_uri, code_challenge_method="S256")
    callback, verifier, nonce = _authorize(idp_server, session, meta, person, rp)

    token = session.fetch_token(meta["token_endpoint"], authorization_response=callback,
                                code_verifier=verifier)
    assert token["token_type"].lower() == "bearer" and token["expires_in"] > 0
    assert set(token["scope"].split()) == set(SCOPE.split())
    claims = _verify_id_token(meta, token["id_token"], rp.client_id, nonce,
                              token["access_token"])
    assert claims["sub"] == person.subject
    # Password then authenticator app (mandatory MFA): AAL2, RFC 8176 pwd + otp + mfa.
    assert claims["acr"] == "urn:healthidp:acr:aal2"
    assert claims["amr"] == ["pwd", "otp", "mfa"]
    assert claims["auth_time"] <= claims["iat"] <= time.time() + 5

    # The access token is an RFC 9068 JWT signed with a published key, naming this IdP.
    keys = KeySet.import_key_set(requests.get(meta["jwks_uri"], timeout=10).json())
    access = jwt.decode(token["access_token"], keys, algorithms=["RS256", "ES256"])
    assert access.header["typ"].lower() in ("at+jwt", "application/at+jwt")
    assert access.claims["iss"] == idp_server.base and access.claims["sub"] == person.subject
    assert access.claims["client_id"] == rp.client_id and access.claims["sid"] == claims["sid"]

    userinfo = session.get(meta["userinfo_endpoint"], timeout=10)
    assert userinfo.status_code == 200, userinfo.text
    assert userinfo.json() == {
        "sub": person.subject, "name": "Ana Smith", "given_name": "Ana",
        "family_name": "Smith", "preferred_username": person.username,
        "email": person.email, "email_verified": True}

    # Rotation: the refresh returns a new refresh token; the old one is spent.
    first_refresh = token["refresh_token"]
    rotated = session.refresh_token(meta["token_endpoint"])
    assert rotated["refresh_token"] and rotated["refresh_token"] != first_refresh
    assert rotated["access_token"] != token["access_token"]
    assert session.get(meta["userinfo_endpoint"], timeout=10).json()["sub"] == person.subject

    # Reuse of the spent refresh token is refused and revokes the whole family (RFC 9700):
    # the refresh token that replaced it stops working too.
    reused = requests.post(meta["token_endpoint"], timeout=10, auth=(rp.client_id,
                           rp.client_secret), data={
        "grant_type": "refresh_token", "refresh_token": first_refresh})
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    after = requests.post(meta["token_endpoint"], timeout=10, auth=(rp.client_id,
                          rp.client_secret), data={
        "grant_type": "refresh_token", "refresh_token": rotated["refresh_token"]})
    assert after.status_code == 400 and after.json()["error"] == "invalid_grant"


def test_authlib_client_secret_post(idp_server, person):
    meta = _discover(idp_server)
    assert "client_secret_post" in meta["token_endpoint_auth_methods_supported"]
    rp = seed_client(redirect_uri=_redirect_uri(), name="Post RP",
                     auth_method="client_secret_post")
    session = OAuth2Session(rp.client_id, rp.client_secret, scope=SCOPE,
                            redirect_uri=rp.redirect_uri, code_challenge_method="S256",
                            token_endpoint_auth_method="client_secret_post")
    callback, verifier, nonce = _authorize(idp_server, session, meta, person, rp)

    # A client registered for client_secret_post may not switch to HTTP Basic.
    basic = requests.post(meta["token_endpoint"], timeout=10, auth=(rp.client_id,
                          rp.client_secret), data={
        "grant_type": "authorization_code", "code": _query(callback)["code"],
        "redirect_uri": rp.redirect_uri, "code_verifier": verifier})
    assert basic.status_code == 401 and basic.json()["error"] == "invalid_client"

    token = session.fetch_token(meta["token_endpoint"], authorization_response=callback,
                                code_verifier=verifier)
    claims = _verify_id_token(meta, token["id_token"], rp.client_id, nonce,
                              token["access_token"])
    assert claims["sub"] == person.subject
    rotated = session.refresh_token(meta["token_endpoint"])
    assert rotated["refresh_token"] != token["refresh_token"]
    assert session.get(meta["userinfo_endpoint"], timeout=10).json()["sub"] == person.subject

    # The authorization code is single use: a second exchange is refused, and the replay
    # revokes what the code had granted (RFC 6749 4.1.2), rotated refresh tokens included.
    replay = requests.post(meta["token_endpoint"], timeout=10, data={
        "grant_type": "authorization_code", "code": _query(callback)["code"],
        "redirect_uri": rp.redirect_uri, "code_verifier": verifier,
        "client_id": rp.client_id, "client_secret": rp.client_secret})
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    revoked = requests.post(meta["token_endpoint"], timeout=10, data={
        "grant_type": "refresh_token", "refresh_token": rotated["refresh_token"],
        "client_id": rp.client_id, "client_secret": rp.client_secret})
    assert revoked.status_code == 400 and revoked.json()["error"] == "invalid_grant"
    # Another worker may answer from its revocation cache for up to tokens.toml
    # revocation_cache_ms (the stated bound, README Performance); then never again.
    bound = time.monotonic() + policy().tokens.revocation_cache_ms / 1000 + 1
    while (gone := session.get(meta["userinfo_endpoint"], timeout=10)).status_code == 200:
        assert time.monotonic() < bound, f"revoked token still served: {gone.text}"
        time.sleep(0.05)
    assert gone.status_code == 401, gone.text


def _assertion(key: RSAKey, client_id: str, audience: str, jti: str | None = None) -> str:
    now = int(time.time())
    return jwt.encode({"alg": "RS256", "kid": key.kid},
                      {"iss": client_id, "sub": client_id, "aud": audience,
                       "jti": jti or secrets.token_urlsafe(16), "iat": now, "exp": now + 60},
                      key)


def test_private_key_jwt_and_assertion_replay(idp_server, person, ctx):
    meta = _discover(idp_server)
    assert "private_key_jwt" in meta["token_endpoint_auth_methods_supported"]
    key = RSAKey.generate_key(2048, private=True, auto_kid=True)
    public = key.as_dict(private=False)
    assert "d" not in public
    new = create_client(name="JWT RP", redirect_uris=[_redirect_uri()],
                        scope="openid profile email offline_access", first_party=True,
                        auth_method="private_key_jwt", jwks={"keys": [public]})
    rp = Rp(new.client.client_id, None, new.client.redirect_uris[0])
    assert new.client_secret is None
    db.session.commit()

    token_endpoint = meta["token_endpoint"]
    session = OAuth2Session(rp.client_id, scope=SCOPE, redirect_uri=rp.redirect_uri,
                            code_challenge_method="S256")
    callback, verifier, nonce = _authorize(idp_server, session, meta, person, rp)
    code_request = {"grant_type": "authorization_code", "code": _query(callback)["code"],
                    "redirect_uri": rp.redirect_uri, "code_verifier": verifier,
                    "client_assertion_type": ASSERTION_TYPE}

    # A key the client did not register is refused.
    stranger = RSAKey.generate_key(2048, private=True, auto_kid=True)
    forged = requests.post(token_endpoint, timeout=10, data={
        **code_request, "client_assertion": _assertion(stranger, rp.client_id,
                                                       token_endpoint)})
    assert forged.status_code == 401 and forged.json()["error"] == "invalid_client", forged.text

    assertion = _assertion(key, rp.client_id, token_endpoint)
    ok = requests.post(token_endpoint, timeout=10,
                       data={**code_request, "client_assertion": assertion})
    assert ok.status_code == 200, ok.text
    token = ok.json()
    claims = _verify_id_token(meta, token["id_token"], rp.client_id, nonce,
                              token["access_token"])
    assert claims["sub"] == person.subject

    # The same assertion (same jti) again is a replay: 401 invalid_client, even for a
    # request that would otherwise succeed.
    replayed = requests.post(token_endpoint, timeout=10, data={
        "grant_type": "refresh_token", "refresh_token": token["refresh_token"],
        "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion})
    assert replayed.status_code == 401, (replayed.status_code, replayed.text)
    assert replayed.json()["error"] == "invalid_client"
    # A new assertion that merely reuses the jti is a replay too.
    same_jti = _assertion(key, rp.client_id, token_endpoint,
                          jti=jwt.decode(assertion, key).claims["jti"])
    reused = requests.post(token_endpoint, timeout=10, data={
        "grant_type": "refresh_token", "refresh_token": token["refresh_token"],
        "client_assertion_type": ASSERTION_TYPE, "client_assertion": same_jti})
    assert reused.status_code == 401 and reused.json()["error"] == "invalid_client"

    # Authlib's own PrivateKeyJWT client auth (fresh jti each time) refreshes fine: the
    # refresh token was not spent by the refused requests.
    authlib_session = OAuth2Session(rp.client_id, key, token=token,
                                    token_endpoint_auth_method=ShortPrivateKeyJWT(token_endpoint))
    rotated = authlib_session.refresh_token(token_endpoint)
    assert rotated["refresh_token"] and rotated["refresh_token"] != token["refresh_token"]
    userinfo = authlib_session.get(meta["userinfo_endpoint"], timeout=10)
    assert userinfo.status_code == 200 and userinfo.json()["sub"] == person.subject


def test_authlib_client_as_configured_by_default_refreshes_twice_and_logs_out(idp_server,
                                                                              person):
    """Scope `openid profile email`, registered for refresh_token: a session-bound refresh
    token; each of two refreshes answers a new ID token of the same authentication; logout
    with the newest as id_token_hint ends the session and the refresh token with it."""
    meta = _discover(idp_server)
    port = free_port()
    rp = seed_client(redirect_uri=f"http://127.0.0.1:{port}/cb", name="Authlib portal",
                     scope="openid profile email",
                     post_logout_redirect_uris=[f"http://127.0.0.1:{port}/bye"])
    session = OAuth2Session(rp.client_id, rp.client_secret, scope="openid profile email",
                            redirect_uri=rp.redirect_uri, code_challenge_method="S256")
    verifier, nonce = secrets.token_urlsafe(48), secrets.token_urlsafe(16)
    url, _ = session.create_authorization_url(meta["authorization_endpoint"],
                                              code_verifier=verifier, nonce=nonce)
    browser = requests.Session()
    callback = browser_sign_in(idp_server, url, person.username, person.password,
                               rp.redirect_uri, http=browser)
    token = session.fetch_token(meta["token_endpoint"], authorization_response=callback,
                                code_verifier=verifier)
    assert token["scope"] == "openid profile email" and token["refresh_token"]
    original = _verify_id_token(meta, token["id_token"], rp.client_id, nonce,
                                token["access_token"])
    for _ in range(2):
        before = session.token["refresh_token"]
        rotated = session.refresh_token(meta["token_endpoint"])
        assert rotated["refresh_token"] != before
        check_refreshed(idp_server, original, rotated["id_token"], rotated["access_token"])
        assert session.get(meta["userinfo_endpoint"], timeout=10).json()["sub"] == \
            person.subject
    logout(idp_server, browser, rotated["id_token"], f"http://127.0.0.1:{port}/bye")
    refused(idp_server, rp.client_id, rp.client_secret, rotated["refresh_token"])
