"""The EHR's local access-token checks (RFC 9068): each check refuses the token that breaks it."""

from __future__ import annotations

import time

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, OctKey, RSAKey

from clients.ehr.tokens import AccessTokenVerifier, KeysUnavailable, TokenError

ISSUER = "http://idp.test"
AUDIENCE = "http://ehr.test"


class FakeIdp:
    """Serves discovery and the JWKS; counts JWKS fetches."""

    def __init__(self) -> None:
        self.keys = [RSAKey.generate_key(2048, parameters={"kid": "k1"}, private=True)]
        self.jwks_fetches = 0
        self.down = False

    def get(self, url: str, timeout: float) -> object:
        if self.down:
            import requests

            raise requests.ConnectionError("down")
        if url.endswith("/.well-known/openid-configuration"):
            return _Response({"issuer": ISSUER, "jwks_uri": f"{ISSUER}/jwks.json"})
        self.jwks_fetches += 1
        return _Response(KeySet(self.keys).as_dict(private=False))

    def token(self, key: object = None, typ: str | None = "at+jwt", alg: str = "RS256",
              **changes: object) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "client_id": "portal",
                  "iat": now, "exp": now + 600, "jti": "j1", "scope": "ehr.labs.read"}
        claims.update(changes)
        claims = {k: v for k, v in claims.items() if v is not None}
        key = key or self.keys[0]
        header = {"alg": alg, "kid": getattr(key, "kid", None) or "k1"}
        if typ is not None:  # None: no typ at all
            header["typ"] = typ
        return jwt.encode(header, claims, key, algorithms=[alg])


class _Response:
    def __init__(self, body: dict) -> None:
        self.body = body

    def raise_for_status(self) -> None:
        return None

    def json(self) -> dict:
        return self.body


@pytest.fixture
def idp() -> FakeIdp:
    return FakeIdp()


@pytest.fixture
def verifier(idp: FakeIdp) -> AccessTokenVerifier:
    return AccessTokenVerifier(ISSUER, AUDIENCE, http_get=idp.get)


def test_a_good_token_is_accepted(idp, verifier):
    claims = verifier.verify(idp.token())
    assert claims["sub"] == "user-1" and claims["scope"] == "ehr.labs.read"
    assert verifier.verify(idp.token(aud=["other", AUDIENCE]))["client_id"] == "portal"
    assert verifier.verify(idp.token(typ="application/at+jwt"))


@pytest.mark.parametrize("changes", [
    {"aud": "http://other.test"},
    {"aud": None},
    {"iss": "http://evil.test"},
    {"exp": int(time.time()) - 120},
    {"exp": None},
    {"iat": int(time.time()) + 3600},
    {"client_id": None},
    {"sub": None},
    {"jti": None},
])
def test_claims_that_break_a_rule_are_refused(idp, verifier, changes):
    with pytest.raises(TokenError):
        verifier.verify(idp.token(**changes))


@pytest.mark.parametrize("typ", ["JWT", "jwt", None, "logout+jwt", "application/logout+jwt",
                                 "secevent+jwt", "at+jwt+x"])
def test_only_an_access_token_typ_is_an_access_token(idp, verifier, typ):
    """An ID token (typ JWT), a logout token (logout+jwt) or an untyped token carrying every
    access-token claim is refused for its typ alone."""
    with pytest.raises(TokenError, match="typ"):
        verifier.verify(idp.token(typ=typ))


def test_a_logout_token_is_not_an_access_token(idp, verifier):
    token = idp.token(typ="logout+jwt", events={
        "http://schemas.openid.net/event/backchannel-logout": {}}, sid="s1")
    with pytest.raises(TokenError, match="typ"):
        verifier.verify(token)


def test_foreign_keys_and_symmetric_algorithms_are_refused(idp, verifier):
    stranger = RSAKey.generate_key(2048, parameters={"kid": "k1"}, private=True)
    with pytest.raises(TokenError):
        verifier.verify(idp.token(key=stranger))
    secret = OctKey.generate_key(256, parameters={"kid": "k1"})
    with pytest.raises(TokenError):
        verifier.verify(idp.token(key=secret, alg="HS256"))
    for bad in ("", "abc", "a.b.c", "x" * 9000):
        with pytest.raises(TokenError):
            verifier.verify(bad)


def test_an_unsigned_token_alg_none_is_refused(idp, verifier):
    import base64
    import json

    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    good = jwt.decode(idp.token(), KeySet(idp.keys)).claims
    for header in ({"alg": "none", "typ": "at+jwt"}, {"alg": "none", "typ": "at+jwt",
                                                       "kid": "k1"}):
        with pytest.raises(TokenError):
            verifier.verify(f"{part(header)}.{part(good)}.")


def test_unknown_kid_refetches_the_key_set_once(idp, verifier):
    verifier.verify(idp.token())
    assert idp.jwks_fetches == 1
    rotated = RSAKey.generate_key(2048, parameters={"kid": "k2"}, private=True)
    idp.keys.append(rotated)
    import clients.ehr.tokens as tokens

    verifier._fetched_at -= tokens.MIN_REFETCH + 1  # past the refetch rate limit
    assert verifier.verify(idp.token(key=rotated))["sub"] == "user-1"
    assert idp.jwks_fetches == 2
    unknown = RSAKey.generate_key(2048, parameters={"kid": "k3"}, private=True)
    with pytest.raises(TokenError):
        verifier.verify(idp.token(key=unknown))
    assert idp.jwks_fetches == 2  # rate-limited: no refetch storm from forged kids


def test_keys_unavailable_is_not_a_token_error(idp, verifier):
    idp.down = True
    with pytest.raises(KeysUnavailable):
        verifier.verify(idp.token())
