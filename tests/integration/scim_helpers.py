"""Shared by the SCIM tests: a token, requests with it, a valid NPI, a user body."""

from __future__ import annotations

import json
from typing import Any

from idp.accounts.npi import npi_with_check_digit
from idp.extensions import db
from idp.scim import tokens
from tests.log_scan import register as register_secret

SCIM = "application/scim+json"
CORE = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
CLINICIAN = "urn:healthidp:scim:schemas:extension:clinician:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
NPI = npi_with_check_digit("123456789")
NPI2 = npi_with_check_digit("987654321")


def make_token(name: str = "entra") -> str:
    made = tokens.create(name, None, actor="test")
    db.session.commit()
    register_secret("scim token", made.token)
    return made.token


class Scim:
    """The test client with a bearer token and SCIM's media type."""

    def __init__(self, client: Any, token: str) -> None:
        self.client, self.token = client, token

    def __call__(self, method: str, path: str, body: Any = None, *, raw: str | None = None,
                 headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        return self.client.open(f"/scim/v2{path}", method=method, data=data,
                                headers={"Authorization": f"Bearer {self.token}",
                                         "Content-Type": SCIM, **(headers or {})}, **kwargs)


def user_body(user_name: str = "alice@hospital.example", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schemas": [CORE, ENTERPRISE], "userName": user_name, "externalId": f"ext-{user_name}",
        "name": {"givenName": "Alice", "familyName": "Jones"}, "active": True,
        "emails": [{"type": "work", "value": user_name if "@" in user_name
                    else f"{user_name}@hospital.example", "primary": True}],
        ENTERPRISE: {"employeeNumber": "E100", "department": "Cardiology"},
    }
    body.update(extra)
    return body


def license_(state: str = "CA", number: str = "A12345", expires: str = "2031-06-30") -> dict:
    return {"state": state, "number": number, "expires": expires}
