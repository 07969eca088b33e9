"""Enrollment pages of the authenticator app (/mfa/enroll/totp) and of the code factors
(/mfa/enroll/sms, /mfa/enroll/email); WebAuthn's are in webauthn_views."""

from __future__ import annotations

from flask import Response, abort, render_template, request, session

from idp.accounts.models import User
from idp.context import policy
from idp.core import crypto
from idp.core.i18n import gettext as _
from idp.extensions import db
from idp.mfa import enrollment
from idp.mfa.blueprint import bp
from idp.mfa.factors import otp_code, totp
from idp.mfa.factors.registry import registry
from idp.mfa.models import Factor

Page = Response | tuple[str, int] | str
TOTP_KEY = "totp_pending"
CODE_KEY = "code_factor_pending"


@bp.route("/enroll/totp", methods=["GET", "POST"])
def enroll_totp() -> Page:
    who = enrollment.enrolling()
    if who is None:
        return enrollment.reauth()
    user, _attempt = who
    kind = registry().get(totp.KIND)
    if kind is None or totp.KIND not in policy().mfa.allowed(user.role):
        abort(403)
    pending = session.get(TOTP_KEY)
    if request.method == "GET" or not pending:
        secret = totp.new_secret()
        session[TOTP_KEY] = crypto.encrypt(secret)
        uri = totp.provisioning_uri(user, secret)
        return render_template("mfa/enroll_totp.html", secret=secret, qr=totp.qr_svg(uri))
    secret = crypto.decrypt(pending)
    step = totp.matching_step(secret, request.form.get("code", "")[:16])
    if step is None:
        uri = totp.provisioning_uri(user, secret)
        return render_template("mfa/enroll_totp.html", secret=secret, qr=totp.qr_svg(uri),
                               error=_("That code does not match. Check the time on your phone "
                                       "and enter the newest code.")), 400
    factor = kind.enroll(user, secret_encrypted=pending, step=step,
                         label=request.form.get("label") or _("Authenticator app"))
    session.pop(TOTP_KEY, None)
    return enrollment.enrolled(user, factor)


@bp.route("/enroll/<kind>", methods=["GET", "POST"])
def enroll_code(kind: str) -> Page:
    """SMS or email: send a code to the destination, confirm it, keep the factor."""
    factor_type = registry().get(kind)
    if not isinstance(factor_type, otp_code.OtpCodeFactor):
        abort(404)
    who = enrollment.enrolling()
    if who is None:
        return enrollment.reauth()
    user, _attempt = who
    if kind not in policy().mfa.allowed(user.role):
        abort(403)
    pending = _pending(user, kind)
    step = request.form.get("step")
    if request.method == "GET" or step == "destination" or pending is None:
        if request.method == "POST" and step == "destination":
            return _start(user, factor_type)
        return render_template("mfa/enroll_code.html", kind=kind, email=user.email, step="ask")
    attempt = enrollment.attempt_for(user)
    if not otp_code.verify(pending, attempt, request.form.get("code", "")[:16]):
        db.session.commit()
        return render_template("mfa/enroll_code.html", kind=kind, step="confirm",
                               destination=otp_code.mask(pending.destination or ""),
                               error=factor_type.failed_message), 400
    factor = factor_type.enroll(user, pending=pending)
    session.pop(CODE_KEY, None)
    return enrollment.enrolled(user, factor)


def _pending(user: User, kind: str) -> Factor | None:
    """The unconfirmed factor of this kind whose code this browser's enrolment sent, if any."""
    pending_id = session.get(CODE_KEY)
    pending = db.session.get(Factor, pending_id) if isinstance(pending_id, int) else None
    if pending is None or pending.user_id != user.id or pending.kind != kind \
            or pending.confirmed_at is not None:
        return None
    return pending


def _start(user: User, factor_type: otp_code.OtpCodeFactor) -> Page:
    """Send a code to the destination entered. The same destination again keeps the factor
    (and the code already sent there stays good); a new one while the cool-down runs sends
    nothing and says so."""
    kind = factor_type.kind
    try:
        destination = factor_type.destination(user, request.form)
    except otp_code.PhoneError as exc:
        return render_template("mfa/enroll_code.html", kind=kind, step="ask",
                               error=str(exc)), 400
    attempt = enrollment.attempt_for(user)
    factor = _pending(user, kind)
    if factor is None or factor.destination != destination:
        refused = otp_code.refusal(attempt, kind)
        if refused is not None:
            db.session.commit()
            return render_template("mfa/enroll_code.html", kind=kind, step="ask",
                                   error=refused.message), 400
        factor = factor_type.pending(user, destination)
        session[CODE_KEY] = factor.id
    result = otp_code.send(factor, attempt)
    db.session.commit()
    if result.sent or (not result.undelivered and otp_code.sent_already(attempt, factor)):
        # Sent now, or sent here moments ago (the cool-down's message says so): enter it.
        return render_template("mfa/enroll_code.html", kind=kind, step="confirm",
                               destination=otp_code.mask(destination), message=result.message)
    return render_template("mfa/enroll_code.html", kind=kind, step="ask",
                           error=result.message, undelivered=result.undelivered), 400
