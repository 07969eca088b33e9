"""JWT confusion (RFC 8725 §3.11): each token kind presented where another kind is expected is
refused, at every place that takes a JWT: /logout (id_token_hint), /userinfo, /introspect (in
Flask and in the fast lane), /revoke, /token (private_key_jwt), /register (software
statements) and the EHR's API. The tokens are real: issued by a sign-in and code exchange, by
the back-channel logout code, by client_credentials. Each refusal has a control showing the
right kind of token is accepted at the same place, so a refusal for another reason (a wrong
key, a missing record) cannot pass for the rule."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import secrets
import time
from pathlib import Path

import pytest
from joserfc import jwt as jose
from joserfc.jwk import KeySet, RSAKey
from sqlalchemy import func, select

from idp.audit.models import AuditEvent
from idp.context import keystore, settings
from idp.extensions import db
from idp.keys import jwt
from idp.oidc import backchannel
from idp.oidc.models import AccessTokenRecord
from tests.helpers import basic, exchange, get_code, login, make_client, make_user
from tests.rp_helpers import RoutedIdp, make_rp

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
PUBLISHER = "https://vendor.example"


@dataclasses.dataclass
class Issued:
    user: object
    rp: object
    access_token: str
    id_token: str
    refresh_token: str
    logout_token: str


@pytest.fixture
def issued(ctx, client) -> Issued:
    """A signed-in browser (`client`) and the tokens a code exchange gave its relying party,
    plus the logout token the IdP would post to that party for this session."""
    user = make_user()
    rp = make_client(post_logout_redirect_uris=["https://rp.example/bye"])
    assert login(client).status_code == 302
    code, verifier, _ = get_code(client, rp, scope="openid profile email offline_access")
    body = exchange(client, rp, code, verifier).get_json()
    sid = _claims(body["id_token"])["sid"]
    logout = backchannel.logout_token(rp.client_id, sid, user.subject)
    return Issued(user, rp, body["access_token"], body["id_token"], body["refresh_token"],
                  logout)


def _claims(token: str) -> dict:
    return jose.decode(token, keystore().verification_keys()).claims


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _retyped(token: str, typ: str | None) -> str:
    """The same claims signed by our own key under another `typ`: what a confused verifier
    would take for the other kind."""
    return jwt.sign(_claims(token), "RS256", typ=typ)


def _forged_algs(token: str) -> list[str]:
    """`alg: none` and HS256 keyed with our public key (PEM and JWK), same header and claims."""
    decoded = jose.decode(token, keystore().verification_keys())
    header, claims = dict(decoded.header), decoded.claims
    public = keystore().signing_key("RS256").key
    payload = _b64(json.dumps(claims).encode())
    forged = [f"{_b64(json.dumps({**header, 'alg': 'none'}).encode())}.{payload}."]
    for secret in (public.as_pem(private=False),
                   json.dumps(public.as_dict(private=False)).encode()):
        signing_input = f"{_b64(json.dumps({**header, 'alg': 'HS256'}).encode())}.{payload}"
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        forged.append(f"{signing_input}.{_b64(mac)}")
    return forged


def _signed_in(client) -> bool:
    return client.get("/account").status_code == 200


def _events(name: str) -> int:
    db.session.rollback()
    return db.session.execute(select(func.count()).select_from(AuditEvent)
                              .where(AuditEvent.event == name)).scalar_one()


# -- /logout: only an ID token is an id_token_hint ---------------------------------------------
def _hint(client, token: str, **extra):
    return client.get("/logout", query_string={"id_token_hint": token, **extra})


def test_an_access_token_as_id_token_hint_signs_nobody_out(client, issued):
    """The reported attack: any site holding the user's access token could sign them out
    without a question. Now the hint is refused with a page and the session lives on."""
    for response in (_hint(client, issued.access_token),
                     client.post("/logout", data={"id_token_hint": issued.access_token})):
        assert response.status_code == 400, response.text
        assert "not an ID token issued here" in response.text
        assert "Location" not in response.headers
        assert _signed_in(client)
    redirecting = _hint(client, issued.access_token,
                        post_logout_redirect_uri="https://rp.example/bye", state="s")
    assert redirecting.status_code == 400 and "Location" not in redirecting.headers
    assert _signed_in(client) and _events("logout") == 0
    # The access token still works: nothing of the session was revoked.
    assert client.get("/userinfo", headers=_bearer(issued.access_token)).status_code == 200
    # Control: the ID token of the same exchange is a hint, and signs out without a question.
    done = _hint(client, issued.id_token, post_logout_redirect_uri="https://rp.example/bye")
    assert done.status_code == 302 and done.headers["Location"] == "https://rp.example/bye"
    assert not _signed_in(client) and _events("logout") == 1


def test_other_tokens_as_id_token_hint_are_refused(client, issued):
    ours = settings().issuer
    id_claims = _claims(issued.id_token)
    stranger = RSAKey.generate_key(2048, parameters={"kid": "stranger"}, private=True)
    candidates = {
        "logout token": issued.logout_token,
        "refresh token": issued.refresh_token,
        "access token retyped application/at+jwt": _retyped(issued.access_token,
                                                            "application/at+jwt"),
        "ID token claims typed at+jwt": _retyped(issued.id_token, "at+jwt"),
        "ID token claims typed logout+jwt": _retyped(issued.id_token, "logout+jwt"),
        "ID token carrying events": jwt.sign({**id_claims, "events": {jwt.LOGOUT_EVENT: {}}},
                                             "RS256", typ="JWT"),
        "ID token for another issuer": jwt.sign({**id_claims, "iss": "https://other.example"},
                                                "RS256", typ="JWT"),
        "ID token for an unregistered client": jwt.sign(
            {**id_claims, "aud": ["unregistered"], "azp": "unregistered"}, "RS256", typ="JWT"),
        "ID token signed by another key": jose.encode(
            {"alg": "RS256", "kid": keystore().signing_key("RS256").kid, "typ": "JWT"},
            id_claims, stranger),
        "client assertion": jose.encode({"alg": "RS256", "kid": "stranger"}, {
            "iss": issued.rp.client_id, "sub": issued.rp.client_id, "aud": f"{ours}/token",
            "exp": int(time.time()) + 60, "jti": "j"}, stranger),
        **{f"forged alg {i}": t for i, t in enumerate(_forged_algs(issued.id_token))},
    }
    for name, token in candidates.items():
        response = _hint(client, token)
        assert response.status_code == 400, name
        assert _signed_in(client), name
    assert _events("logout") == 0
    # Control: the ID token's claims re-signed without a typ are still a hint (the user's own
    # session: signed out without a question).
    done = _hint(client, _retyped(issued.id_token, None))
    assert done.status_code == 200 and "signed out" in done.text
    assert not _signed_in(client)


# -- /userinfo: only an access token is a bearer token -------------------------------------------
def test_only_an_access_token_is_a_bearer_token_at_userinfo(client, issued):
    key = RSAKey.generate_key(2048, private=True)
    assertion = jose.encode({"alg": "RS256"}, {
        "iss": issued.rp.client_id, "sub": issued.rp.client_id,
        "aud": f"{settings().issuer}/token", "exp": int(time.time()) + 60, "jti": "j"}, key)
    candidates = {"ID token": issued.id_token, "logout token": issued.logout_token,
                  "client assertion": assertion,
                  "access token retyped JWT": _retyped(issued.access_token, "JWT"),
                  "access token untyped": _retyped(issued.access_token, None),
                  "access token retyped logout+jwt": _retyped(issued.access_token,
                                                              "logout+jwt"),
                  **{f"forged alg {i}": t for i, t in
                     enumerate(_forged_algs(issued.access_token))}}
    for name, token in candidates.items():
        for response in (client.get("/userinfo", headers=_bearer(token)),
                         client.post("/userinfo", data={"access_token": token})):
            assert response.status_code == 401, name
            assert 'error="invalid_token"' in response.headers["WWW-Authenticate"], name
    # Control: the access token, and its claims re-signed as at+jwt, are accepted.
    assert client.get("/userinfo", headers=_bearer(issued.access_token)).status_code == 200
    again = _retyped(issued.access_token, "at+jwt")
    assert client.get("/userinfo", headers=_bearer(again)).status_code == 200


# -- /introspect and /revoke -------------------------------------------------------------------
def _not_access_tokens(issued: Issued) -> dict[str, str]:
    """Tokens that are not access tokens; the retyped ones carry a live access token's jti,
    so only the kind check stands between them and that token's record."""
    return {"ID token": issued.id_token, "logout token": issued.logout_token,
            "access token retyped JWT": _retyped(issued.access_token, "JWT"),
            "access token untyped": _retyped(issued.access_token, None),
            "access token retyped logout+jwt": _retyped(issued.access_token, "logout+jwt"),
            **{f"forged alg {i}": t for i, t in enumerate(_forged_algs(issued.access_token))}}


def test_introspection_sees_only_access_tokens(client, issued):
    resource = make_client(name="Resource server", introspect_any=True)
    for who in (issued.rp, resource):
        for name, token in _not_access_tokens(issued).items():
            for hint in ({}, {"token_type_hint": "access_token"}):
                body = client.post("/introspect", headers=basic(who),
                                   data={"token": token, **hint}).get_json()
                assert body == {"active": False}, name
        real = client.post("/introspect", headers=basic(who),
                           data={"token": issued.access_token}).get_json()
        assert real["active"] is True  # control


def test_the_fast_lane_introspects_only_access_tokens(app, client, issued):
    lane = app.extensions["idp_fast_lane"]
    lane.learned.clear()
    lane.served = 0
    first = client.post("/introspect", headers=basic(issued.rp),
                        data={"token": issued.access_token})
    assert first.get_json()["active"] is True and lane.served == 0  # Flask teaches the lane
    second = client.post("/introspect", headers=basic(issued.rp),
                         data={"token": issued.access_token})
    assert second.get_json()["active"] is True and lane.served == 1  # control: the lane answers
    for name, token in _not_access_tokens(issued).items():
        body = client.post("/introspect", headers=basic(issued.rp),
                           data={"token": token}).get_json()
        assert body == {"active": False}, name
    assert lane.served == 1  # none of them was answered as active in front of Flask


def test_revocation_takes_only_access_and_refresh_tokens(client, issued):
    jti = _claims(issued.access_token)["jti"]
    for name, token in _not_access_tokens(issued).items():
        response = client.post("/revoke", headers=basic(issued.rp), data={"token": token})
        assert response.status_code == 200, name  # RFC 7009: an unknown token is no error
    db.session.rollback()
    assert db.session.get(AccessTokenRecord, jti).revoked_at is None
    assert _events("token.revoked") == 0
    assert client.get("/userinfo", headers=_bearer(issued.access_token)).status_code == 200
    # Control: the access token itself is revoked.
    client.post("/revoke", headers=basic(issued.rp), data={"token": issued.access_token})
    db.session.rollback()
    assert db.session.get(AccessTokenRecord, jti).revoked_at is not None
    assert _events("token.revoked") == 1


# -- /token: client assertions -------------------------------------------------------------------
def _token_with(client, assertion: str):
    return client.post("/token", data={
        "grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion})


def _assertion_claims(client_id: str, **changes) -> dict:
    now = int(time.time())
    return {"iss": client_id, "sub": client_id, "aud": f"{settings().issuer}/token",
            "iat": now, "exp": now + 120, "jti": secrets.token_urlsafe(12), **changes}


@pytest.fixture
def trusts_our_keys(issued, client):
    """A private_key_jwt client that registered the IdP's own public JWKS as its keys: every
    token the IdP signs verifies against it, so only the kind check can refuse them."""
    return make_client(name="Confused service", auth_method="private_key_jwt",
                       jwks=client.get("/jwks.json").get_json(), first_party=False,
                       grant_types=["client_credentials"], scope="ehr.patients.read",
                       redirect_uri="https://svc.example/cb")


def test_our_tokens_are_not_client_assertions(client, issued, trusts_our_keys):
    svc = trusts_our_keys.client_id
    # Control: an assertion signed with the IdP's key (the client's registered key) passes.
    control = _token_with(client, jwt.sign(_assertion_claims(svc), "RS256"))
    assert control.status_code == 200, control.text
    own_access_token = control.get_json()["access_token"]  # sub == this client's id
    logout_for_svc = backchannel.logout_token(svc, _claims(issued.id_token)["sid"],
                                              issued.user.subject)
    candidates = {
        "ID token": issued.id_token, "access token": issued.access_token,
        "refresh token": issued.refresh_token, "logout token": issued.logout_token,
        "logout token for this client": logout_for_svc,
        "this client's own access token": own_access_token,
        # Assertion-shaped claims (iss == sub == client_id, aud our token endpoint) under
        # the IdP's own token types, or with a logout event: refused by the kind alone.
        "assertion typed logout+jwt": jwt.sign(_assertion_claims(svc), "RS256",
                                               typ="logout+jwt"),
        "assertion typed at+jwt": jwt.sign(_assertion_claims(svc), "ES256", typ="at+jwt"),
        "assertion carrying a logout event": jwt.sign(
            _assertion_claims(svc, events={jwt.LOGOUT_EVENT: {}}), "RS256"),
        "assertion typed application/logout+jwt": jwt.sign(
            _assertion_claims(svc), "RS256", typ="application/logout+jwt"),
    }
    issued_before = _events("token.issued")
    for name, token in candidates.items():
        response = _token_with(client, token)
        assert response.status_code == 401, name
        assert response.get_json()["error"] == "invalid_client", name
    assert _events("token.issued") == issued_before


def test_a_software_statement_is_not_a_client_assertion(client, issued):
    publisher = RSAKey.generate_key(2048, parameters={"kid": "vendor-1"}, private=True)
    vendor = make_client(name="Vendor app", auth_method="private_key_jwt",
                         jwks=KeySet([publisher]).as_dict(private=False), first_party=False,
                         grant_types=["client_credentials"], scope="ehr.patients.read",
                         redirect_uri="https://vendor.example/cb")
    now = int(time.time())
    statement = jose.encode({"alg": "RS256", "kid": "vendor-1"}, {
        "iss": PUBLISHER, "sub": vendor.client_id, "aud": f"{settings().issuer}/token",
        "iat": now, "exp": now + 120, "jti": "s1", "software_id": "vendor-app",
        "redirect_uris": ["https://vendor.example/cb"]}, publisher)
    response = _token_with(client, statement)
    assert response.status_code == 401 and response.get_json()["error"] == "invalid_client"
    # Control: the client's own assertion with the same key passes.
    own = jose.encode({"alg": "RS256", "kid": "vendor-1"},
                      _assertion_claims(vendor.client_id), publisher)
    assert _token_with(client, own).status_code == 200


def test_a_client_assertion_is_not_a_bearer_token(client, issued, trusts_our_keys):
    assertion = jwt.sign(_assertion_claims(trusts_our_keys.client_id), "RS256")
    response = client.get("/userinfo", headers=_bearer(assertion))
    assert response.status_code == 401
    body = client.post("/introspect", headers=basic(issued.rp),
                       data={"token": assertion}).get_json()
    assert body == {"active": False}
    assert _hint(client, assertion).status_code == 400 and _signed_in(client)


# -- /register: software statements ------------------------------------------------------------
def test_our_tokens_are_not_software_statements(ctx, client, issued, tmp_path: Path,
                                                monkeypatch):
    """Even when the operator lists our own issuer and JWKS as a trusted publisher."""
    from idp.admin import service

    path = tmp_path / "publishers.json"
    path.write_text(json.dumps({settings().issuer: keystore().public_jwks()}))
    runtime = ctx.extensions["idp"]
    monkeypatch.setattr(runtime, "settings", dataclasses.replace(
        runtime.settings, software_statement_issuers=path))
    for name, token in {"ID token": issued.id_token, "access token": issued.access_token,
                        "logout token": issued.logout_token,
                        "untyped, our issuer": jwt.sign({"iss": settings().issuer,
                                                         "software_id": "x"}, "RS256")}.items():
        initial = service.issue_initial_token(actor="test", lifetime=3600, uses=1)
        db.session.commit()
        response = client.post("/register", headers={"Authorization": f"Bearer {initial.token}"},
                               json={"client_name": "Plain", "scope": "openid profile",
                                     "redirect_uris": ["https://plain.example/cb"],
                                     "grant_types": ["authorization_code"],
                                     "software_statement": token})
        assert response.status_code == 400, name
        assert response.get_json()["error"] == "invalid_software_statement", name


# -- the EHR's API -------------------------------------------------------------------------------
def test_the_ehr_api_takes_only_access_tokens(ctx, app, client, tmp_path):
    make_user()
    rp = make_client(scope="openid profile roles ehr.patients.read")
    assert login(client).status_code == 302
    code, verifier, _ = get_code(client, rp, scope="openid profile roles ehr.patients.read")
    body = exchange(client, rp, code, verifier).get_json()
    audience = _claims(body["access_token"])["aud"]
    ehr = make_rp("ehr", tmp_path / "ehr", RoutedIdp(app), EHR_AUDIENCE=audience).test_client()
    # Control: the access token reads the EHR's patient list.
    assert ehr.get("/api/patients", headers=_bearer(body["access_token"])).status_code == 200
    sid = _claims(body["id_token"])["sid"]
    candidates = {
        "ID token": body["id_token"],
        "logout token": backchannel.logout_token(rp.client_id, sid, "someone"),
        # the access token's claims (aud: the EHR) under an ID token's typ, or none
        "access token retyped JWT": _retyped(body["access_token"], "JWT"),
        "access token untyped": _retyped(body["access_token"], None),
        "access token retyped logout+jwt": _retyped(body["access_token"], "logout+jwt"),
        **{f"forged alg {i}": t for i, t in enumerate(_forged_algs(body["access_token"]))},
    }
    for name, token in candidates.items():
        response = ehr.get("/api/patients", headers=_bearer(token))
        assert response.status_code == 401, name
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"], name
    refused = ehr.get("/api/patients", headers=_bearer(body["id_token"]))
    assert "typ" in refused.get_json()["error_description"]
