"""SCIM errors (RFC 7644 §3.12): a status, a scimType where the RFC defines one, a detail
written for the person configuring the connector."""

from __future__ import annotations

import json
from typing import Any

from flask import Response
from pydantic import ValidationError
from scim2_models import Error

from idp.scim.schema import ERROR, MEDIA_TYPE


class ScimError(Exception):
    def __init__(self, status: int, detail: str, scim_type: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.scim_type = scim_type
        self.headers = headers or {}

    @classmethod
    def invalid_value(cls, detail: str) -> ScimError:
        return cls(400, detail, "invalidValue")

    @classmethod
    def from_validation(cls, exc: ValidationError) -> ScimError:
        """The first problem pydantic (scim2-models) found, as SCIM words it."""
        first = exc.errors()[0]
        error = Error.from_validation_error(first)
        return cls(int(error.status or 400), str(error.detail or "invalid request")[:500],
                   error.scim_type or "invalidValue")

    def response(self) -> Response:
        body: dict[str, Any] = {"schemas": [ERROR], "status": str(self.status),
                                "detail": self.detail}
        if self.scim_type:
            body["scimType"] = self.scim_type
        return Response(json.dumps(body), status=self.status, mimetype=MEDIA_TYPE,
                        headers=self.headers)
