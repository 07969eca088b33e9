"""UDAP endpoints: /.well-known/udap (FAST Security IG §2) and the console page of
communities, UDAP clients and their B2B activity. Registration is the existing /register
(idp.admin.registration dispatches UDAP requests here through idp.oidc.registry)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, render_template

from idp.admin.access import ADMIN_ROLES, require_admin
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


@bp.get("/admin/udap")
def admin_page() -> Response | str:
    """Trust communities, UDAP-registered clients with their certificate subject, and the
    latest hl7-b2b token requests (read-only; communities are added with the CLI)."""
    sso = require_admin(ADMIN_ROLES)
    if isinstance(sso, Response):
        return sso
    return render_template("udap/admin.html", communities=service.describe_communities(),
                           clients=service.clients(), activity=service.b2b_activity(),
                           cli_command="idp udap communities add")
