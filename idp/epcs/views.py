"""EPCS pages: the signing ceremony (/epcs/ceremony/<id>) and the two-admin permission console
(/admin/epcs). Thin: parse, call idp.epcs.service, render."""

from __future__ import annotations

from collections.abc import Callable

from flask import (
    Blueprint,
    Response,
    abort,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)

from idp import clock
from idp.accounts import notices, reauth
from idp.accounts import service as accounts
from idp.accounts.models import User
from idp.accounts.views import login_failed_message
from idp.admin.access import ADMIN_ROLES, require_role
from idp.context import policy
from idp.core.i18n import gettext as _
from idp.core.i18n import lazy_gettext as _l
from idp.epcs import keys, service
from idp.epcs.forms import ActionForm, CeremonyForm, ProposeForm
from idp.epcs.models import EpcsCeremony, EpcsPermission
from idp.extensions import db, limiter
from idp.mfa import enrollment
from idp.mfa.factors import webauthn
from idp.oidc import client_cache
from idp.sessions import service as sessions
from idp.sessions.models import SsoSession
from idp.web.guards import signed_in

bp = Blueprint("epcs", __name__)
Page = Response | str | tuple[str, int]


# -- the ceremony --------------------------------------------------------------------------
def _ceremony_page(ceremony: EpcsCeremony, form: CeremonyForm, error: str | None = None,
                   status: int = 200) -> tuple[str, int]:
    client = client_cache.get(ceremony.client_id)
    return render_template("epcs/ceremony.html", ceremony=ceremony, form=form, error=error,
                           client_name=client.client_name if client else ceremony.client_id,
                           user=sessions.current().user,
                           statement=policy().epcs.statement), status


@bp.route("/epcs/ceremony/<ceremony_id>", methods=["GET", "POST"])
@limiter.limit(lambda: policy().lockout.per_ip_limit, methods=["POST"])
def ceremony(ceremony_id: str) -> Page:
    """Step 1 of the signing ceremony: the password again, with the prescription reference
    shown; step 2 is the hardware factor on the MFA challenge page."""
    sso = sessions.current()
    if sso is None:
        return redirect(url_for("accounts.login"))
    item = service.open_ceremony(ceremony_id[:64], sso)
    if item is None:
        return render_template("epcs/ended.html"), 410
    form = CeremonyForm()
    if not form.is_submitted():
        return _ceremony_page(item, form)
    if not form.validate():
        return _ceremony_page(item, form, _("Enter your password."), 400)
    user = sso.user
    if not reauth.password_again(user, form.password.data, purpose="epcs",
                                 binding_message=item.binding_message):
        return _ceremony_page(item, form, login_failed_message(), 401)
    service.begin_second_factor(item, user)
    db.session.commit()
    return redirect(url_for("mfa.challenge"))


# -- the permission console (admins) -------------------------------------------------------
MESSAGES = {"proposed": _l("Proposed. A different administrator must approve it."),
            "approved": _l("Approved: the EPCS permission is granted."),
            "revoked": _l("Revoked.")}


def _console(sso: SsoSession, error: str | None = None, status: int = 200,
             done: str | None = None) -> tuple[str, int]:
    return render_template("epcs/admin.html", rows=service.permissions(),
                           form=ProposeForm(), action=ActionForm(), me=sso.user_id,
                           error=error, done=done), status


@bp.get("/admin/epcs")
@require_role(ADMIN_ROLES)
def admin_epcs(sso: SsoSession) -> Page:
    done = MESSAGES.get(request.args.get("done", ""))
    return _console(sso, done=str(done) if done else None)


@bp.post("/admin/epcs/propose")
@require_role(ADMIN_ROLES)
def admin_epcs_propose(sso: SsoSession) -> Page:
    form = ProposeForm()
    if not form.validate_on_submit():
        return _console(sso, _("Enter the username or NPI of the prescriber."), 400)
    user = accounts.find_by_login(form.username.data.strip())
    if user is None:
        return _console(sso, _("No account has that username or NPI."), 404)
    try:
        service.propose(user, sso.user)
    except service.EpcsError as exc:
        db.session.rollback()
        return _console(sso, str(exc), 409)
    db.session.commit()
    return redirect(url_for("epcs.admin_epcs", done="proposed"))


def _permission(permission_id: int) -> EpcsPermission:
    item = db.session.get(EpcsPermission, permission_id)
    if item is None:
        abort(404)
    return item


@require_role(ADMIN_ROLES)
def _decide(sso: SsoSession, permission_id: int,
            act: Callable[[EpcsPermission, User], object], done: str, refused: int,
            keep_refusal: bool) -> Page:
    """Approve or revoke one permission as the signed-in admin. A refusal answers `refused`;
    `keep_refusal` commits its audit event (a refused approval is evidence) instead of
    rolling back."""
    if not ActionForm().validate_on_submit():
        return _console(sso, _("This form has expired; reload the page."), 400)
    item = _permission(permission_id)
    try:
        act(item, sso.user)
    except service.EpcsError as exc:
        if keep_refusal:
            db.session.commit()
        else:
            db.session.rollback()
        return _console(sso, str(exc), refused)
    db.session.commit()
    return redirect(url_for("epcs.admin_epcs", done=done))


@bp.post("/admin/epcs/<int(max=2147483647):permission_id>/approve")
def admin_epcs_approve(permission_id: int) -> Page:
    return _decide(permission_id, service.approve, "approved", 403, keep_refusal=True)


@bp.post("/admin/epcs/<int(max=2147483647):permission_id>/revoke")
def admin_epcs_revoke(permission_id: int) -> Page:
    return _decide(permission_id, service.revoke, "revoked", 409, keep_refusal=False)


# -- EPCS keys (1311.115(b)): enrolment with attestation, apart from everyday passkeys -------
def _key_owner() -> User | None:
    """A signed-in prescriber whose sign-in is recent (mfa.toml reauth_window), allowed
    security keys by role."""
    sso = sessions.current()
    if sso is None or (clock.now() - sso.auth_time).total_seconds() > \
            policy().mfa.reauth_window:
        return None
    role = policy().roles.get(sso.user.role)
    if role is None or not role.clinical or \
            webauthn.KIND not in policy().mfa.allowed(sso.user.role):
        return None
    return sso.user


def _key_error(message: object, status: int) -> tuple[Response, int]:
    payload = {"error": str(message)}
    if status == 401:
        payload["redirect"] = url_for("accounts.login", next=url_for("epcs.keys_page"),
                                      reauth=1)
    return jsonify(payload), status


NOT_A_PRESCRIBER = _l("Only prescribers can enroll a security key for controlled-substance "
                      "prescriptions. Sign in again if your sign-in is older than a few minutes.")


@bp.get("/epcs/keys")
@signed_in(recent=True)
def keys_page(sso: SsoSession) -> Page:
    user = sso.user
    role = policy().roles.get(user.role)
    allowed = role is not None and role.clinical and \
        webauthn.KIND in policy().mfa.allowed(user.role)
    held = keys.keys_of(user.id)
    return render_template(
        "epcs/keys.html", allowed=allowed, held=held,
        counting={k.factor_id for k in held if keys.qualifies(k)},
        added=request.args.get("added") == "1",
        options_url=url_for("epcs.keys_options"), verify_url=url_for("epcs.keys_enroll"))


@bp.post("/epcs/keys/options")
@limiter.limit(lambda: policy().mfa.limits.webauthn)
def keys_options() -> Response | tuple[Response, int]:
    user = _key_owner()
    if user is None:
        return _key_error(NOT_A_PRESCRIBER, 401)
    options = keys.options(user, enrollment.attempt_for(user))
    db.session.commit()
    return jsonify(options)


@bp.post("/epcs/keys")
@limiter.limit(lambda: policy().mfa.limits.webauthn)
def keys_enroll() -> Response | tuple[Response, int]:
    user = _key_owner()
    if user is None:
        return _key_error(NOT_A_PRESCRIBER, 401)
    body = request.get_json(silent=True)
    body = body if isinstance(body, dict) else {}
    label = body.get("label")
    try:
        factor = keys.enroll(user, enrollment.attempt_for(user), body.get("credential"),
                             label if isinstance(label, str) else None)
    except keys.EpcsKeyRefused as exc:
        db.session.commit()  # the refusal's audit event
        return _key_error(exc.message, 400)
    except webauthn.WebAuthnError as exc:
        db.session.commit()
        return _key_error(exc.message, 409 if exc.message == webauthn.KNOWN else 400)
    db.session.commit()
    notices.factor_changed(user, _("%(label)s was added as a security key for signing "
                                   "controlled-substance prescriptions", label=factor.label))
    return jsonify(redirect=url_for("epcs.keys_page", added=1))
