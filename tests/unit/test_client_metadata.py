"""oidc.clients.validate_metadata: every rule a client's registration must meet, for the CLI,
the admin console and RFC 7591 registration alike (the core's scopes, no feature installed)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask

from idp.config import POLICY_DIR
from idp.context import Runtime
from idp.oidc import registry
from idp.oidc.clients import ClientError, validate_metadata
from idp.policy import load_policy

CB = "https://rp.example/cb"
JWKS = {"keys": [{"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                  "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}


@pytest.fixture(autouse=True)
def app_context() -> Iterator[None]:
    app = Flask(__name__)
    app.extensions["idp"] = Runtime(None, load_policy(POLICY_DIR), None, None, "")
    registry.install(app)
    with app.app_context():
        yield


def test_defaults_for_a_confidential_and_a_public_client():
    meta = validate_metadata(name="RP", redirect_uris=[CB])
    assert (meta.method, meta.grant_types, meta.scopes) == (
        "client_secret_basic", ["authorization_code", "refresh_token"],
        ["openid", "profile", "email"])
    native = validate_metadata(name="App", redirect_uris=["com.example.app:/cb"], public=True)
    assert native.method == "none" and native.redirect_uris == ["com.example.app:/cb"]
    assert validate_metadata(name="RP", redirect_uris=[CB], jwks=JWKS).method == \
        "private_key_jwt"


@pytest.mark.parametrize(("fields", "field"), [
    ({"name": ""}, "name:"),
    ({"name": "x" * 201}, "name:"),
    ({"name": "R\x07P"}, "name: control"),
    ({"redirect_uris": ["https://rp.example/cb\n"]}, "redirect-uri: control"),
    ({"scope": "openid\tprofile"}, "scope: control"),
    ({"grant_types": ["password"]}, "grant-type:"),
    ({"grant_types": ["implicit"]}, "grant-type:"),
    ({"auth_method": "tls_client_auth"}, "auth-method:"),
    ({"auth_method": "none"}, "auth-method: public"),
    ({"public": True, "auth_method": "client_secret_basic"}, "auth-method: public"),
    ({"public": True, "grant_types": ["client_credentials"]}, "grant-type: a public"),
    ({"redirect_uris": []}, "redirect-uri: at least one"),
    ({"redirect_uris": ["http://rp.example/cb"]}, "redirect-uri:"),
    ({"redirect_uris": ["https://rp.example/cb#x"]}, "redirect-uri:"),
    ({"post_logout_redirect_uris": ["http://rp.example/bye"]}, "post-logout-redirect-uri:"),
    ({"scope": "openid admin:everything"}, "scope: unknown admin:everything"),
    ({"auth_method": "private_key_jwt", "jwks": {"keys": [{"kty": "nope"}]}}, "jwks: not"),
    ({"auth_method": "private_key_jwt", "jwks": {"keys": []}}, "jwks:"),
    ({"id_token_alg": "none"}, "id-token-alg:"),
    ({"id_token_alg": "HS256"}, "id-token-alg:"),
])
def test_each_rule_refuses_with_the_field_named(fields, field):
    values = {"name": "RP", "redirect_uris": [CB], **fields}
    with pytest.raises(ClientError) as refused:
        validate_metadata(**values)
    assert str(refused.value).startswith(field), str(refused.value)


def test_client_credentials_alone_needs_no_redirect_uri():
    meta = validate_metadata(name="Backend", redirect_uris=[], grant_types=["client_credentials"])
    assert meta.grant_types == ["client_credentials"] and meta.redirect_uris == []
