"""What every relying party's refresh-and-logout round must show (docs/refresh-tokens.md):
each refresh answers a new ID token of the same authentication (OIDC Core §12.2), and
RP-initiated logout with the refreshed ID token as id_token_hint ends the SSO session and
with it the session-bound refresh token."""

from __future__ import annotations

import base64
import hashlib

import requests
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.e2e.conftest import Server

SAME = ("iss", "sub", "aud", "azp", "auth_time", "acr", "amr", "sid")


def verified_claims(server: Server, id_token: str) -> dict:
    keys = KeySet.import_key_set(requests.get(server.url("/jwks.json"), timeout=10).json())
    return jwt.decode(id_token, keys, algorithms=["RS256", "ES256"]).claims


def at_hash(access_token: str) -> str:
    half = hashlib.sha256(access_token.encode()).digest()[:16]
    return base64.urlsafe_b64encode(half).rstrip(b"=").decode()


def check_refreshed(server: Server, original: dict, id_token: str,
                    access_token: str | None = None) -> dict:
    """The refreshed ID token, verified against the JWKS: the same authentication as
    `original` (the claims of the code exchange's ID token), a new iat, no nonce."""
    claims = verified_claims(server, id_token)
    for name in SAME:
        assert claims[name] == original[name], (name, claims.get(name), original.get(name))
    assert claims["iat"] >= original["iat"] and "nonce" not in claims
    if access_token is not None:
        assert claims["at_hash"] == at_hash(access_token)
    return claims


def logout(server: Server, browser: requests.Session, id_token: str, post_logout: str,
           state: str = "bye") -> None:
    """RP-initiated logout as the browser follows the RP's redirect: straight back to the
    registered post_logout_redirect_uri (the hint names this session: no confirmation)."""
    response = browser.get(server.url("/logout"), allow_redirects=False, timeout=10, params={
        "id_token_hint": id_token, "post_logout_redirect_uri": post_logout, "state": state})
    assert response.status_code == 302, response.text[:500]
    assert response.headers["Location"] == f"{post_logout}?state={state}"
    assert browser.get(server.url("/account"), allow_redirects=False,
                       timeout=10).status_code == 302  # signed out at the IdP


def refused(server: Server, client_id: str, client_secret: str, refresh_token: str) -> None:
    """The session-bound refresh token died with the session."""
    response = requests.post(server.url("/token"), auth=(client_id, client_secret), timeout=10,
                             data={"grant_type": "refresh_token", "refresh_token": refresh_token})
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant", \
        response.text
