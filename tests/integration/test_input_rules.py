"""Small input rules: NPI and username shapes, URIs with user information, assertion lifetime."""

import secrets
import time

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from idp.accounts.service import AccountError, create_user, find_by_login
from idp.oidc.clients import ClientError, validate_uri
from tests.helpers import make_client


@pytest.mark.parametrize("npi", ["1234567893\n", "１２３４５６７８９３", "123456789",
                                 "12345678930"])
def test_npi_must_be_ten_ascii_digits(ctx, npi):
    with pytest.raises(AccountError):
        create_user(username="x.user", email="x@h.example", role="physician", npi=npi,
                    password="Sturdy-Cedar-Lantern-42!")
    assert find_by_login(npi) is None


@pytest.mark.parametrize("uri", ["https://user@rp.example/cb", "http://evil@127.0.0.1:5000/cb"])
def test_redirect_uris_with_user_information_are_refused(uri):
    with pytest.raises(ClientError):
        validate_uri(uri, "redirect-uri")


def test_client_assertion_living_too_long_is_refused(ctx, client):
    key = RSAKey.generate_key(2048, private=True)
    public = {**key.as_dict(private=False), "kid": "k1", "use": "sig", "alg": "RS256"}
    rp = make_client(auth_method="private_key_jwt", jwks={"keys": [public]},
                     grant_types=["client_credentials"], scope="system/Patient.rs",
                     redirect_uri="https://svc.example/cb")
    now = int(time.time())

    def assertion(lifetime: int) -> str:
        return jwt.encode({"alg": "RS256", "kid": "k1"}, {
            "iss": rp.client_id, "sub": rp.client_id, "aud": "http://idp.test/token",
            "jti": secrets.token_urlsafe(12), "iat": now, "exp": now + lifetime}, key)

    def token(lifetime: int):
        return client.post("/token", data={
            "grant_type": "client_credentials", "client_assertion": assertion(lifetime),
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"})

    assert token(120).status_code == 200
    refused = token(86400 * 365)
    assert refused.status_code == 401 and refused.get_json()["error"] == "invalid_client"



def test_a_used_assertion_is_remembered_for_the_policy_retention(ctx, client, monkeypatch):
    """tokens.toml client_assertion_jti_retention: a used jti is kept that long, or until the
    assertion's exp if that is later (its replay window)."""
    import dataclasses
    from datetime import timedelta

    from sqlalchemy import select

    from idp import clock
    from idp.context import policy, runtime
    from idp.extensions import db
    from idp.oidc.models import UsedAssertion

    fixed = clock.now().replace(microsecond=0)
    monkeypatch.setattr(clock, "now", lambda: fixed)
    key = RSAKey.generate_key(2048, private=True)
    public = {**key.as_dict(private=False), "kid": "k1", "use": "sig", "alg": "RS256"}
    rp = make_client(auth_method="private_key_jwt", jwks={"keys": [public]},
                     grant_types=["client_credentials"], scope="system/Patient.rs",
                     redirect_uri="https://svc.example/cb")
    assert policy().tokens.client_assertion_jti_retention == 300  # shipped
    retention = 450  # another value, so the test sees the policy's rather than a literal
    rt = runtime()
    tokens = dataclasses.replace(rt.policy.tokens, client_assertion_jti_retention=retention)
    monkeypatch.setattr(rt, "policy", dataclasses.replace(rt.policy, tokens=tokens))
    now = int(fixed.timestamp())
    for lifetime, kept_for in ((30, retention), (retention + 100, retention + 100)):
        jti = secrets.token_urlsafe(12)
        assertion = jwt.encode({"alg": "RS256", "kid": "k1"}, {
            "iss": rp.client_id, "sub": rp.client_id, "aud": "http://idp.test/token",
            "jti": jti, "iat": now, "exp": now + lifetime}, key)
        assert client.post("/token", data={
            "grant_type": "client_credentials", "client_assertion": assertion,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        }).status_code == 200
        db.session.expire_all()
        [used] = db.session.execute(select(UsedAssertion).where(
            UsedAssertion.expires_at > fixed + timedelta(seconds=kept_for - 1),
            UsedAssertion.expires_at < fixed + timedelta(seconds=kept_for + 1))).scalars()
        assert clock.aware(used.expires_at) == fixed + timedelta(seconds=kept_for)


def test_used_assertion_jtis_are_forgotten_after_their_retention(ctx, client, monkeypatch):
    """The replay store of client assertions does not grow for ever: rows past their retention
    go (one assertion in PURGE_EVERY purges; here every one), rows within it stay."""
    from datetime import timedelta

    from sqlalchemy import func, select

    from idp import clock
    from idp.context import policy
    from idp.extensions import db
    from idp.oidc import server
    from idp.oidc.models import UsedAssertion

    fixed = clock.now().replace(microsecond=0)
    monkeypatch.setattr(clock, "now", lambda: fixed)
    monkeypatch.setattr(server, "PURGE_EVERY", 1)
    key = RSAKey.generate_key(2048, private=True)
    public = {**key.as_dict(private=False), "kid": "k1", "use": "sig", "alg": "RS256"}
    rp = make_client(auth_method="private_key_jwt", jwks={"keys": [public]},
                     grant_types=["client_credentials"], scope="system/Patient.rs",
                     redirect_uri="https://svc.example/cb")

    def token() -> int:
        now = int(clock.now().timestamp())
        assertion = jwt.encode({"alg": "RS256", "kid": "k1"}, {
            "iss": rp.client_id, "sub": rp.client_id, "aud": "http://idp.test/token",
            "jti": secrets.token_urlsafe(12), "iat": now, "exp": now + 30}, key)
        return client.post("/token", data={
            "grant_type": "client_credentials", "client_assertion": assertion,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        }).status_code

    def remembered() -> int:
        db.session.expire_all()
        return db.session.scalar(select(func.count()).select_from(UsedAssertion))

    assert token() == 200 and token() == 200
    assert remembered() == 2  # within their retention: a replay must still be caught
    later = fixed + timedelta(seconds=policy().tokens.client_assertion_jti_retention + 1)
    monkeypatch.setattr(clock, "now", lambda: later)
    assert token() == 200
    assert remembered() == 1  # the two old ones went; the new one stays
