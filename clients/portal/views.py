"""The portal's pages: a sign-in button, or the role-based dashboard."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, redirect, render_template, url_for

from clients import rp
from clients.portal import apps, dashboard

bp = Blueprint("pages", __name__)


@bp.get("/")
def index() -> Response | str:
    signed_out = rp.returned_from_logout()
    user = rp.current_user()
    if user is None:
        return render_template("index.html", signed_out=signed_out)
    token = rp.access_token()
    if token is None:  # expired: sign in again (no prompt while the IdP session lasts)
        return redirect(url_for("rp.login"))
    roles = user.get("roles") or []
    panels = dashboard.load(current_app.config["EHR_API"], token, roles)
    labels = [str(dashboard.ROLE_LABELS.get(r, r)) for r in roles]
    tiles = apps.load(rp.rp_settings().issuer, token)
    return render_template("index.html", user=user, role_labels=labels, panels=panels,
                           tiles=tiles,
                           ehr_url=current_app.config["EHR_API"],
                           minutes_left=rp.session_minutes_left())
