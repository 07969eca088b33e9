"""The device authorization grant's endpoints: POST /device_authorization (a protocol
endpoint for the device) and /device, where a signed-in person enters the code the device
shows and allows or denies it."""

from __future__ import annotations

from flask import Blueprint, Response, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from idp.audit import service as audit
from idp.context import policy
from idp.core.i18n import gettext as _
from idp.extensions import csrf, db, limiter
from idp.oidc import client_cache, device
from idp.oidc.auth_context import AuthContext
from idp.oidc.interaction.respond import consent_page_scopes
from idp.oidc.server import server
from idp.sessions import service as sessions

bp = Blueprint("device", __name__)

Page = BaseResponse | tuple[str, int] | str


@bp.post("/device_authorization")
@csrf.exempt
def authorization() -> Response:
    return server.create_endpoint_response("device_authorization")


def _page(template: str, status: int = 200, **values: object) -> tuple[str, int]:
    return render_template(f"oidc/{template}.html", **values), status


@bp.route("/device", methods=["GET", "POST"])
@limiter.limit(lambda: policy().device.user_code_limit, methods=["POST"])
def verify() -> Page:
    """Enter the code (GET, prefilled from verification_uri_complete), see what the device
    asks for (POST user_code), then allow or deny it (POST decision)."""
    sso = sessions.current()
    if sso is None:
        return redirect(url_for("accounts.login", next=request.full_path))
    if request.method == "GET":
        return _page("device", user_code=request.args.get("user_code", "")[:32])
    typed = request.form.get("user_code", "")
    item = device.pending_by_user_code(typed)
    if item is None:
        audit.record("device.code_refused", user_id=sso.user_id, ip=request.remote_addr)
        db.session.commit()
        return _page("device", 400, user_code="",
                     error=_("That code is not right, or it has expired. Check the code "
                             "your device shows and try again."))
    client = client_cache.get(item.client_id)
    if client is None or client.disabled:
        return _page("device", 400, user_code="", error=_("That device's application is no "
                                                          "longer allowed to sign in."))
    decision = request.form.get("decision")
    if decision not in ("allow", "deny"):
        return _page("device_confirm", client=client, user=sso.user,
                     user_code=device.normalize(typed),
                     scopes=consent_page_scopes(item.scope))
    allow = decision == "allow"
    if not device.decide(item, sso.user, AuthContext.of_session(sso), allow):
        return _page("device", 400, user_code="", error=_("That code was already used."))
    audit.record("device.allowed" if allow else "device.denied", user_id=sso.user_id,
                 client_id=item.client_id, ip=request.remote_addr, scope=item.scope)
    db.session.commit()
    return _page("device_done", allowed=allow, client=client)
