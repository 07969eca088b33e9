"""The relying parties (clients/portal, clients/ehr) under the Flask test client, wired to the
in-process IdP: the RPs fetch discovery and the JWKS from it through the IdP's test client, so
what they verify is signed by the IdP's real keys."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from clients import ehr, portal
from tests.conftest import TEST_ISSUER
from tests.receiver import free_port

RP_URL = "http://localhost"        # the test client's host: no canonical-host redirect
EHR_AUDIENCE = "http://ehr.test"


class RoutedResponse:
    def __init__(self, status: int, body: Any) -> None:
        self.status_code = status
        self.body = body

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            import requests

            raise requests.HTTPError(f"HTTP {self.status_code}")

    def json(self) -> Any:
        return self.body


class RoutedIdp:
    """requests.get for the RPs, answered by the IdP's test client; `down` simulates an
    outage; `fetches` counts requests."""

    def __init__(self, idp_app: Flask) -> None:
        self.idp = idp_app.test_client()
        self.down = False
        self.fetches = 0
        self.posted: list[dict] = []

    def get(self, url: str, timeout: float = 5) -> RoutedResponse:
        import requests

        if self.down:
            raise requests.ConnectionError("the IdP is down")
        assert url.startswith(TEST_ISSUER + "/"), url
        self.fetches += 1
        response = self.idp.get(url.removeprefix(TEST_ISSUER))
        return RoutedResponse(response.status_code, response.get_json())

    def post(self, url: str, data: dict, auth: tuple[str, str] | None = None,
             timeout: float = 5) -> RoutedResponse:
        """requests.post for an RP's pushed authorization request (client_secret_basic);
        `posted` keeps what was sent."""
        assert url.startswith(TEST_ISSUER + "/"), url
        self.posted.append(dict(data))
        response = self.idp.post(url.removeprefix(TEST_ISSUER), data=data, auth=auth)
        return RoutedResponse(response.status_code, response.get_json(silent=True))


def rp_env(name: str, state_dir: Path, **extra: str) -> dict[str, str]:
    prefix = name.upper()
    return {"IDP_ISSUER": TEST_ISSUER, f"{prefix}_URL": RP_URL,
            f"{prefix}_CLIENT_ID": f"{name}-test", f"{prefix}_CLIENT_SECRET": "rp-secret",
            f"{prefix}_SECRET_KEY": f"{name}-cookie-key-0123456789",
            f"{prefix}_STATE_DIR": str(state_dir), "EHR_AUDIENCE": EHR_AUDIENCE,
            "EHR_API": f"http://127.0.0.1:{free_port()}", **extra}


def make_rp(name: str, state_dir: Path, idp: RoutedIdp, **extra: str) -> Flask:
    factory = {"portal": portal.create_app, "ehr": ehr.create_app}[name]
    app = factory(rp_env(name, state_dir, **extra))
    app.config["TESTING"] = True
    app.extensions["rp.logout_tokens"]._get = idp.get
    if "ehr.verifier" in app.extensions:
        app.extensions["ehr.verifier"]._get = idp.get
    # Authlib's client reads the IdP's discovery document through the same route.
    client = app.extensions["rp.client"]
    client.server_metadata.update({**idp.get(f"{TEST_ISSUER}/.well-known/openid-configuration"
                                             ).json(), "_loaded_at": time.time()})
    return app


def sign_in(rp_client: FlaskClient, *, sub: str, sid: str | None, name: str = "Ana Smith",
            roles: tuple[str, ...] = ("physician",), access_token: str = "opaque-in-tests",
            signed_in_at: float | None = None) -> None:
    """Put a signed-in session in the RP's cookie, as its /callback would."""
    with rp_client.session_transaction() as session:
        session.clear()
        session["sid"] = sid
        session["signed_in_at"] = int(signed_in_at if signed_in_at is not None else time.time())
        session["user"] = {"sub": sub, "name": name, "username": "drsmith", "email": None,
                           "npi": "1234567893", "roles": list(roles), "facility": None,
                           "department": None}
        session["token"] = {"access_token": access_token, "expires_at": int(time.time()) + 600}
        session["id_token"] = None
