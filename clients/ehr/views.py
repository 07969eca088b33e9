"""The EHR's own pages: sign in through the IdP, then the patient list."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, g, redirect, render_template, url_for

from clients import rp
from clients.ehr import data
from clients.ehr.api import denial, verifier
from clients.ehr.scopes import RULES
from clients.ehr.tokens import KeysUnavailable, TokenError, token_scopes
from clients.i18n import UNREACHABLE_CHECK
from clients.i18n import gettext as _

bp = Blueprint("pages", __name__)


@bp.get("/")
def index() -> Response | str | tuple[str, int]:
    signed_out = rp.returned_from_logout()
    user = rp.current_user()
    if user is None:
        if not signed_out and not g.get("rp_session_ended", False):
            silent = rp.silent_login()  # SSO without a click when the IdP knows the user
            if silent is not None:
                return silent
        return render_template("index.html", signed_out=signed_out)
    token = rp.access_token()
    if token is None:  # expired: sign in again (no prompt while the IdP session lasts)
        return redirect(url_for("rp.login"))
    try:  # the same checks the API makes
        claims = verifier().verify(token)
        reason = denial(claims, RULES["patients"])
    except TokenError:
        return redirect(url_for("rp.login"))
    except KeysUnavailable:
        return render_template("error.html", message=UNREACHABLE_CHECK()), 503
    patients = [] if reason else data.patients()
    if reason:  # the API's words are for developers; the page says it in the user's language
        scope = RULES["patients"].scope
        reason = _("your sign-in does not include the %(scope)s permission", scope=scope) \
            if scope not in token_scopes(claims) else _("your role does not allow this")
    return render_template("index.html", user=user, patients=patients, denied=reason,
                           smart_app=current_app.extensions["ehr.smart_app"])
