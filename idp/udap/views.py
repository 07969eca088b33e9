"""UDAP endpoints: /.well-known/udap (FAST Security IG §2). Registration is the existing
/register (idp.admin.registration dispatches UDAP requests here through idp.oidc.registry);
the console pages for communities and UDAP clients live in idp.udap.console."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from idp.udap import service

bp = Blueprint("udap", __name__)


@bp.get("/.well-known/udap")
def metadata() -> Response:
    """IG §2.2: the server's UDAP metadata with signed_metadata. Not cached for long: the
    signed part carries an iat and a jti."""
    response = jsonify(service.metadata())
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Cache-Control"] = "public, max-age=60"
    return response
