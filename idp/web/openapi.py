"""GET /openapi.json: the OpenAPI description of the JSON endpoints (idp/web/openapi.json),
with this issuer as its server. The suite runs schemathesis against it
(tests/integration/test_openapi.py)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from flask import Blueprint, Response

from idp.context import settings

bp = Blueprint("openapi", __name__)
SPEC = Path(__file__).with_name("openapi.json")


@cache
def _spec_text(issuer: str) -> str:
    spec = json.loads(SPEC.read_text())
    spec["servers"] = [{"url": issuer}]
    return json.dumps(spec, separators=(",", ":"))


def description() -> dict:
    return json.loads(_spec_text(settings().issuer))


@bp.get("/openapi.json")
def openapi() -> Response:
    response = Response(_spec_text(settings().issuer), mimetype="application/json")
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response
