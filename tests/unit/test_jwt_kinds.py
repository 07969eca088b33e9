"""idp/keys/jwt.py: each JWT kind is accepted as itself and refused as every other kind, even
when one key set holds every signer's keys; each rule refuses the token that breaks it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from joserfc import jwt as jose
from joserfc.jwk import KeySet, RSAKey

from idp.context import keystore, settings
from idp.keys import jwt
from idp.keys.jwt import Kind

CLIENT = "client-123"
PUBLISHER = "https://vendor.example"
OTHER_CLIENT = "client-456"
UPSTREAM = "https://login.hospital.example/tenant"  # an upstream OpenID Provider (federation)


@pytest.fixture(scope="module")
def client_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "client-key"}, private=True)


@pytest.fixture
def every_key(ctx, client_key) -> KeySet:
    """Our public keys and the client's/publisher's: a client that registered our JWKS."""
    ours = [k.key for k in keystore().published()]
    return KeySet([*ours, client_key])


def _now() -> int:
    return int(time.time())


def id_token(typ: str | None = jwt.ID_TOKEN_TYP, **changes) -> str:
    claims = {"iss": settings().issuer, "sub": "user-1", "aud": [CLIENT], "azp": CLIENT,
              "iat": _now(), "exp": _now() + 600, "nonce": "n1", "sid": "sid-1", **changes}
    return jwt.sign({k: v for k, v in claims.items() if v is not None}, "RS256", typ=typ)


def access_token(typ: str | None = jwt.ACCESS_TOKEN_TYP, **changes) -> str:
    claims = {"iss": settings().issuer, "sub": "user-1", "aud": settings().issuer,
              "client_id": CLIENT, "iat": _now(), "exp": _now() + 600, "jti": "j1",
              "scope": "openid", **changes}
    return jwt.sign({k: v for k, v in claims.items() if v is not None}, "ES256", typ=typ)


def logout_token(typ: str | None = jwt.LOGOUT_TOKEN_TYP, **changes) -> str:
    claims = {"iss": settings().issuer, "aud": CLIENT, "iat": _now(), "exp": _now() + 120,
              "jti": "l1", "sid": "sid-1", "sub": "user-1",
              "events": {jwt.LOGOUT_EVENT: {}}, **changes}
    return jwt.sign({k: v for k, v in claims.items() if v is not None}, "RS256", typ=typ)


def assertion(key: RSAKey, typ: str | None = None, **changes) -> str:
    claims = {"iss": CLIENT, "sub": CLIENT, "aud": f"{settings().issuer}/token",
              "iat": _now(), "exp": _now() + 120, "jti": f"a-{time.perf_counter_ns()}",
              **changes}
    header = {"alg": "RS256", "kid": key.kid, **({"typ": typ} if typ else {})}
    return jose.encode(header, {k: v for k, v in claims.items() if v is not None}, key)


def statement(key: RSAKey, **changes) -> str:
    claims = {"iss": PUBLISHER, "iat": _now(), "exp": _now() + 3600,
              "software_id": "vendor-app", "redirect_uris": ["https://vendor.example/cb"],
              **changes}
    return jose.encode({"alg": "RS256", "kid": key.kid},
                       {k: v for k, v in claims.items() if v is not None}, key)


def request_object(key: RSAKey, typ: str | None = jwt.REQUEST_OBJECT_TYP, **changes) -> str:
    claims = {"iss": CLIENT, "client_id": CLIENT, "aud": settings().issuer, "iat": _now(),
              "exp": _now() + 120, "response_type": "code", "scope": "openid", **changes}
    header = {"alg": "RS256", "kid": key.kid, **({"typ": typ} if typ else {})}
    return jose.encode(header, {k: v for k, v in claims.items() if v is not None}, key)


def upstream_id_token(key: RSAKey, **changes) -> str:
    claims = {"iss": UPSTREAM, "sub": "upstream-user", "aud": CLIENT, "iat": _now(),
              "exp": _now() + 300, "nonce": "n1", **changes}
    return jose.encode({"alg": "RS256", "kid": key.kid, "typ": "JWT"},
                       {k: v for k, v in claims.items() if v is not None}, key)


def upstream_logout_token(key: RSAKey, **changes) -> str:
    claims = {"iss": UPSTREAM, "aud": CLIENT, "iat": _now(), "exp": _now() + 120, "jti": "u1",
              "sid": "up-sid", "events": {jwt.LOGOUT_EVENT: {}}, **changes}
    return jose.encode({"alg": "RS256", "kid": key.kid, "typ": "logout+jwt"},
                       {k: v for k, v in claims.items() if v is not None}, key)


UDAP_URI = "https://udap-app.example/fhir-client"  # a UDAP client's certificate SAN URI


def udap_token(key: RSAKey, aud: str | None, **changes) -> str:
    """A UDAP software statement or client assertion: iss == sub == the SAN URI, x5c header
    (its path is validated by idp.udap before verify() sees the key: any chain will do here)."""
    claims = {"iss": UDAP_URI, "sub": UDAP_URI, "aud": aud, "iat": _now(),
              "exp": _now() + 120, "jti": f"u-{time.perf_counter_ns()}", **changes}
    return jose.encode({"alg": "RS256", "kid": key.kid, "x5c": ["MIIB"]},
                       {k: v for k, v in claims.items() if v is not None}, key)


def dpop_proof(key: RSAKey, typ: str = jwt.DPOP_TYP, **changes) -> str:
    claims = {"jti": f"d-{time.perf_counter_ns()}", "htm": "POST",
              "htu": f"{settings().issuer}/token", "iat": _now(), **changes}
    header = {"alg": "RS256", "typ": typ, "kid": key.kid, "jwk": key.as_dict(private=False)}
    return jose.encode(header, {k: v for k, v in claims.items() if v is not None}, key)


def check(token: str, kind: Kind, keys: KeySet | None = None, **options) -> jwt.Verified:
    """verify() with the arguments each kind needs (overridable)."""
    base = {
        Kind.ID_TOKEN_HINT: {"is_client": lambda c: c == CLIENT},
        Kind.ACCESS_TOKEN: {},
        Kind.LOGOUT_TOKEN: {"audiences": [CLIENT]},
        Kind.CLIENT_ASSERTION: {"client_id": CLIENT, "max_lifetime": 600,
                                "audiences": [settings().issuer,
                                              f"{settings().issuer}/token"]},
        Kind.SOFTWARE_STATEMENT: {"issuer": PUBLISHER},
        Kind.REQUEST_OBJECT: {"client_id": CLIENT, "max_lifetime": 600,
                              "audiences": [settings().issuer]},
        Kind.DPOP_PROOF: {},
        Kind.UPSTREAM_ID_TOKEN: {"issuer": UPSTREAM, "client_id": CLIENT},
        Kind.UPSTREAM_LOGOUT_TOKEN: {"issuer": UPSTREAM, "client_id": CLIENT},
        Kind.UDAP_SOFTWARE_STATEMENT: {"issuer": UDAP_URI, "max_lifetime": 300,
                                       "audiences": [f"{settings().issuer}/register"]},
        Kind.UDAP_CLIENT_ASSERTION: {"client_id": UDAP_URI, "max_lifetime": 300,
                                     "audiences": [f"{settings().issuer}/token"]},
        Kind.UDAP_SIGNED_METADATA: {"issuer": UDAP_URI, "max_lifetime": 3600},
    }[kind]
    if keys is not None:
        base = {**base, "keys": keys}
    return jwt.verify(token, kind, **{**base, **options})


def genuine(kind: Kind, key: RSAKey) -> str:
    return {Kind.ID_TOKEN_HINT: id_token, Kind.ACCESS_TOKEN: access_token,
            Kind.LOGOUT_TOKEN: logout_token,
            Kind.CLIENT_ASSERTION: lambda: assertion(key),
            Kind.SOFTWARE_STATEMENT: lambda: statement(key),
            Kind.REQUEST_OBJECT: lambda: request_object(key),
            Kind.DPOP_PROOF: lambda: dpop_proof(key),
            Kind.UPSTREAM_ID_TOKEN: lambda: upstream_id_token(key),
            Kind.UPSTREAM_LOGOUT_TOKEN: lambda: upstream_logout_token(key),
            Kind.UDAP_SOFTWARE_STATEMENT: lambda: udap_token(
                key, f"{settings().issuer}/register"),
            Kind.UDAP_CLIENT_ASSERTION: lambda: udap_token(key, f"{settings().issuer}/token"),
            Kind.UDAP_SIGNED_METADATA: lambda: udap_token(
                key, None, jti=None, authorization_endpoint=f"{UDAP_URI}/authorize",
                token_endpoint=f"{UDAP_URI}/token"),
            }[kind]()


@pytest.mark.parametrize("made_as", list(Kind), ids=lambda k: k.name)
def test_each_kind_is_accepted_only_as_itself(every_key, client_key, made_as):
    token = genuine(made_as, client_key)
    for expected in Kind:
        if expected is made_as:
            assert check(token, expected, every_key).claims  # the control: it is valid
        else:
            with pytest.raises(jwt.InvalidJWT):
                check(token, expected, every_key)


def test_our_kinds_default_to_our_keys_only(ctx, client_key):
    assert check(id_token(), Kind.ID_TOKEN_HINT).claims["sub"] == "user-1"
    forged = jose.encode({"alg": "RS256", "kid": "client-key", "typ": "at+jwt"},
                         {"iss": settings().issuer, "exp": _now() + 60, "jti": "x"}, client_key)
    with pytest.raises(jwt.InvalidJWT, match="signature"):
        check(forged, Kind.ACCESS_TOKEN)
    with pytest.raises(TypeError):
        jwt.verify(assertion(client_key), Kind.CLIENT_ASSERTION, client_id=CLIENT,
                   audiences=["x"], max_lifetime=60)  # no keys: a programming error


# -- typ -------------------------------------------------------------------------------------
@pytest.mark.parametrize("typ", ["at+jwt", "application/at+jwt", "AT+JWT"])
def test_access_token_typ_spellings_are_accepted(ctx, typ):
    assert check(access_token(typ=typ), Kind.ACCESS_TOKEN).claims["jti"] == "j1"


@pytest.mark.parametrize("typ", [None, "JWT", "logout+jwt", "at+jwt+x", "jwt", "secevent+jwt"])
def test_an_access_token_needs_its_own_typ(ctx, typ):
    with pytest.raises(jwt.InvalidJWT, match="not an access token"):
        check(access_token(typ=typ), Kind.ACCESS_TOKEN)


@pytest.mark.parametrize("typ", ["at+jwt", "application/at+jwt", "logout+jwt", "secevent+jwt"])
def test_an_id_token_hint_refuses_other_typs(ctx, typ):
    token = jwt.sign({"iss": settings().issuer, "sub": "u", "aud": CLIENT}, "RS256", typ=typ)
    with pytest.raises(jwt.InvalidJWT, match="not an ID token"):
        check(token, Kind.ID_TOKEN_HINT)
    untyped = jwt.sign({"iss": settings().issuer, "sub": "u", "aud": CLIENT}, "RS256")
    assert check(untyped, Kind.ID_TOKEN_HINT).claims["aud"] == CLIENT  # typ absent: accepted


def test_a_non_string_typ_is_refused(every_key, client_key):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    claims = {"iss": CLIENT, "sub": CLIENT, "aud": f"{settings().issuer}/token",
              "exp": _now() + 60, "jti": "t"}
    head = {"alg": "RS256", "kid": "client-key", "typ": ["JWT"]}
    signing_input = f"{_b64(json.dumps(head).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = client_key.private_key.sign(signing_input.encode(), padding.PKCS1v15(),
                                            hashes.SHA256())
    with pytest.raises(jwt.InvalidJWT):
        check(f"{signing_input}.{_b64(signature)}", Kind.CLIENT_ASSERTION, every_key)


@pytest.mark.parametrize("typ", [None, "JWT", "client-authentication+jwt",
                                 "application/client-authentication+jwt"])
def test_client_assertion_typs(every_key, client_key, typ):
    assert check(assertion(client_key, typ=typ), Kind.CLIENT_ASSERTION, every_key)


@pytest.mark.parametrize("typ", ["at+jwt", "logout+jwt", "application/logout+jwt"])
def test_a_client_assertion_typed_as_our_tokens_is_refused(every_key, client_key, typ):
    with pytest.raises(jwt.InvalidJWT, match="not a client assertion"):
        check(assertion(client_key, typ=typ), Kind.CLIENT_ASSERTION, every_key)


# -- events, nonce, issuer ---------------------------------------------------------------------
def test_a_token_carrying_events_is_only_a_logout_token(every_key, client_key):
    with pytest.raises(jwt.InvalidJWT, match="not an ID token"):
        check(id_token(events={jwt.LOGOUT_EVENT: {}}), Kind.ID_TOKEN_HINT)
    with pytest.raises(jwt.InvalidJWT, match="not an access token"):
        check(access_token(events={jwt.LOGOUT_EVENT: {}}), Kind.ACCESS_TOKEN)
    with pytest.raises(jwt.InvalidJWT, match="not a client assertion"):
        check(assertion(client_key, events={"x": {}}), Kind.CLIENT_ASSERTION, every_key)
    with pytest.raises(jwt.InvalidJWT, match="not a software statement"):
        check(statement(client_key, events={"x": {}}), Kind.SOFTWARE_STATEMENT, every_key)


@pytest.mark.parametrize("changes", [{"nonce": "n"}, {"events": None}, {"events": {"x": {}}},
                                     {"events": {jwt.LOGOUT_EVENT: "yes"}},
                                     {"sub": None, "sid": None}, {"exp": _now() - 10},
                                     {"iat": None}, {"jti": None}, {"aud": OTHER_CLIENT}])
def test_logout_token_rules(ctx, changes):
    with pytest.raises(jwt.InvalidJWT):
        check(logout_token(**changes), Kind.LOGOUT_TOKEN)


def test_a_logout_token_needs_its_typ(ctx):
    with pytest.raises(jwt.InvalidJWT, match="not a logout token"):
        check(logout_token(typ="JWT"), Kind.LOGOUT_TOKEN)


def test_our_kinds_need_our_issuer(ctx):
    for token, kind in ((id_token(iss="https://other.example"), Kind.ID_TOKEN_HINT),
                        (access_token(iss="https://other.example"), Kind.ACCESS_TOKEN),
                        (logout_token(iss="https://other.example"), Kind.LOGOUT_TOKEN)):
        with pytest.raises(jwt.InvalidJWT, match="wrong issuer"):
            check(token, kind)


def test_a_client_assertion_never_comes_from_our_issuer(every_key, client_key):
    ours = settings().issuer
    token = assertion(client_key, iss=ours, sub=ours)
    with pytest.raises(jwt.InvalidJWT, match="not a client assertion"):
        check(token, Kind.CLIENT_ASSERTION, every_key, client_id=ours)


def test_our_own_signed_token_is_never_a_software_statement(ctx):
    """Even if an operator listed our issuer and keys as a trusted publisher."""
    ours = jwt.sign({"iss": settings().issuer, "iat": _now(), "software_id": "x"}, "RS256",
                    typ=jwt.ID_TOKEN_TYP)
    with pytest.raises(jwt.InvalidJWT, match="not a software statement"):
        check(ours, Kind.SOFTWARE_STATEMENT, keystore().verification_keys(),
              issuer=settings().issuer)


# -- each kind's own claims ------------------------------------------------------------------
@pytest.mark.parametrize("changes", [{"aud": None}, {"aud": []}, {"aud": [1]},
                                     {"aud": ["unregistered"], "azp": None},
                                     {"azp": "unregistered"}, {"azp": 7},
                                     {"aud": [CLIENT, OTHER_CLIENT], "azp": None},
                                     {"sub": None}, {"sub": ""}])
def test_an_id_token_hint_names_a_registered_client_and_a_subject(ctx, changes):
    with pytest.raises(jwt.InvalidJWT, match="ID token"):
        check(id_token(**changes), Kind.ID_TOKEN_HINT)


def test_an_id_token_hint_may_have_expired(ctx):
    assert check(id_token(exp=_now() - 86400), Kind.ID_TOKEN_HINT).claims["sid"] == "sid-1"
    assert check(id_token(aud=CLIENT, azp=None), Kind.ID_TOKEN_HINT)


@pytest.mark.parametrize("changes", [{"exp": None}, {"exp": _now() - 1}, {"exp": "soon"},
                                     {"exp": True}, {"exp": float(_now() + 60)}])
def test_an_access_token_needs_an_integer_future_exp(ctx, changes):
    with pytest.raises(jwt.InvalidJWT, match="expired"):
        check(access_token(**changes), Kind.ACCESS_TOKEN)


@pytest.mark.parametrize("changes", [
    {"iss": OTHER_CLIENT}, {"sub": OTHER_CLIENT}, {"iss": None}, {"aud": "https://evil.example"},
    {"aud": None}, {"exp": None}, {"exp": _now() - 3600}, {"exp": _now() + 3600},
    {"exp": 10**20}, {"jti": None}, {"jti": 7}, {"nbf": _now() + 3600},
])
def test_client_assertion_rules(every_key, client_key, changes):
    with pytest.raises(jwt.InvalidJWT):
        check(assertion(client_key, **changes), Kind.CLIENT_ASSERTION, every_key)


def test_a_software_statement_is_its_publishers(every_key, client_key):
    assert check(statement(client_key), Kind.SOFTWARE_STATEMENT, every_key)
    for changes in ({"iss": "https://other.example"}, {"exp": _now() - 3600},
                    {"nbf": _now() + 3600}):
        with pytest.raises(jwt.InvalidJWT):
            check(statement(client_key, **changes), Kind.SOFTWARE_STATEMENT, every_key)


# -- algorithms and shape ----------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hs256(secret: bytes, header: dict, claims: dict) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.name)
def test_alg_none_and_hs256_with_a_public_key_are_refused(every_key, client_key, kind):
    big_header = jose.JWSRegistry()
    big_header.max_header_length = 2048  # a DPoP proof's header holds its RSA key
    real = jose.decode(genuine(kind, client_key), every_key, registry=big_header)
    header = dict(real.header)
    public = keystore().signing_key("RS256").key
    secrets_ = (public.as_pem(private=False), json.dumps(public.as_dict(private=False)).encode(),
                client_key.as_pem(private=False))
    forged = [_hs256(s, {**header, "alg": "HS256"}, real.claims) for s in secrets_]
    forged.append(f"{_b64(json.dumps({**header, 'alg': 'none'}).encode())}."
                  f"{_b64(json.dumps(real.claims).encode())}.")
    for token in forged:
        with pytest.raises(jwt.InvalidJWT, match="signature or format"):
            check(token, kind, every_key)


@pytest.mark.parametrize("bad", [None, 7, "", "a.b", "a.b.c.d.e", "x" * 20_000, "a.b.c"])
def test_malformed_input_is_one_safe_error(every_key, bad):
    for kind in Kind:
        with pytest.raises(jwt.InvalidJWT) as caught:
            check(bad, kind, every_key)
        assert "x" * 20 not in str(caught.value)


def test_length_caps(every_key, client_key):
    padded = statement(client_key, padding="p" * 10_000)
    assert len(padded) > jwt.MAX_LENGTH
    assert check(padded, Kind.SOFTWARE_STATEMENT, every_key)
    with pytest.raises(jwt.InvalidJWT, match="malformed"):
        check(assertion(client_key, padding="p" * 10_000), Kind.CLIENT_ASSERTION, every_key)
    with pytest.raises(jwt.InvalidJWT, match="malformed"):
        check(statement(client_key, padding="p" * 20_000), Kind.SOFTWARE_STATEMENT, every_key)


def test_sign_names_the_typ_and_the_active_key(ctx):
    token = jwt.sign({"iss": settings().issuer}, "ES256", typ=jwt.ACCESS_TOKEN_TYP)
    head = jose.decode(token, keystore().verification_keys()).header
    assert head == {"alg": "ES256", "kid": keystore().signing_key("ES256").kid, "typ": "at+jwt"}


def test_no_other_idp_module_signs_or_decodes_jwts():
    """Every JWT the IdP signs or verifies goes through idp/keys/jwt.py: a module added later
    that imports a JWS/JWT codec directly fails here (JWK handling stays free)."""
    import re
    from pathlib import Path

    import idp

    codec = re.compile(r"^\s*(from\s+joserfc(\.(jwt|jws|jwe|_rfc75\d\d))?\s+import\s+.*\b(jwt|jws|"
                       r"jwe|decode|encode|deserialize_compact|serialize_compact|extract_compact)"
                       r"\b|import\s+joserfc\.(jwt|jws|jwe)\b|(from|import)\s+authlib\.jose\b|"
                       r"(from|import)\s+jwt\b)", re.MULTILINE)
    root = Path(idp.__file__).parent
    offenders = [str(path.relative_to(root)) for path in sorted(root.rglob("*.py"))
                 if path != root / "keys" / "jwt.py" and codec.search(path.read_text())]
    assert offenders == []


@pytest.mark.parametrize("changes,reason", [
    ({"iss": "https://other.example"}, "issuer"),
    ({"aud": OTHER_CLIENT}, "audience"),
    ({"aud": [CLIENT, OTHER_CLIENT]}, "azp"),
    ({"aud": [CLIENT, OTHER_CLIENT], "azp": OTHER_CLIENT}, "azp"),
    ({"exp": None}, "exp"),
    ({"iat": None}, "iat"),
    ({"exp": 1000}, "expired"),
    ({"sub": None}, "sub"),
])
def test_upstream_id_token_rules(every_key, client_key, changes, reason):
    """OIDC Core 3.1.3.7 for a token an upstream provider issued to us (idp.federation)."""
    with pytest.raises(jwt.InvalidJWT, match=reason):
        check(upstream_id_token(client_key, **changes), Kind.UPSTREAM_ID_TOKEN, every_key)
    several = upstream_id_token(client_key, aud=[CLIENT, OTHER_CLIENT], azp=CLIENT)
    assert check(several, Kind.UPSTREAM_ID_TOKEN, every_key).claims["azp"] == CLIENT


@pytest.mark.parametrize("changes", [{"events": None}, {"nonce": "n"}, {"jti": None},
                                     {"exp": None}, {"sid": None}, {"aud": OTHER_CLIENT}])
def test_upstream_logout_token_rules(every_key, client_key, changes):
    with pytest.raises(jwt.InvalidJWT):
        check(upstream_logout_token(client_key, **changes), Kind.UPSTREAM_LOGOUT_TOKEN,
              every_key)
