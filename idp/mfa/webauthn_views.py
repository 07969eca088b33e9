"""WebAuthn routes on the mfa blueprint: enrollment, the second step of a sign-in (and
step-up), and passkey sign-in. JSON in and out for the ceremonies; the browser half is
static/js/webauthn.js. Every POST carries the CSRF token (X-CSRFToken header)."""

from __future__ import annotations

import re

from flask import Response, abort, jsonify, redirect, render_template, request, session, url_for

from idp import clock
from idp.accounts import lockout, notices, verifiers
from idp.accounts.models import User
from idp.accounts.views import login_failed_message, safe_next
from idp.audit import service as audit
from idp.context import policy
from idp.core.i18n import gettext as _
from idp.core.i18n import lazy_gettext as _l
from idp.extensions import db, limiter
from idp.mfa import enrollment, flow
from idp.mfa.blueprint import bp
from idp.mfa.factors import webauthn as service
from idp.mfa.factors.registry import registry

PASSKEY_KEY = "passkey"
EXPIRED_SIGN_IN = _l("Your sign-in has expired. Sign in again.")
NOT_ALLOWED = _l("Security keys and biometrics are not available for your account.")
B64URL = re.compile(r"[A-Za-z0-9_-]+")


def _body() -> dict:
    data = request.get_json(silent=True)
    return data if isinstance(data, dict) else {}


def _error(message: str, status: int = 400, redirect_to: str | None = None
           ) -> tuple[Response, int]:
    payload = {"error": str(message)}  # a lazy (translated) message as its text
    if redirect_to:
        payload["redirect"] = redirect_to
    return jsonify(payload), status


def _credential() -> dict | None:
    """The credential JSON of the request, when its id is plain base64url."""
    credential = _body().get("credential")
    if not isinstance(credential, dict):
        return None
    cid = credential.get("id")
    if not isinstance(cid, str) or not B64URL.fullmatch(cid):
        return None
    return credential


# -- enrollment ----------------------------------------------------------------------------
def _enroller() -> object | None:
    """The user adding a credential: a sign-in still owing its first factor, or a recent
    SSO session. A sign-in that has factors already must pass one first (enrolling a new one
    must not stand in for the second step)."""
    found = flow.current()
    if found is not None and found[0].purpose == "login" and not flow.needs_enrollment(
            found[1]):
        return None
    who = enrollment.enrolling()
    return who[0] if who is not None else None


def _reauth_url() -> str:
    return url_for("accounts.login", next=url_for("mfa.enroll_webauthn"), reauth=1)


@bp.get("/enroll/webauthn")
def enroll_webauthn() -> Response | str:
    user = _enroller()
    if user is None:
        found = flow.current()
        if found is not None and found[0].purpose == "login":
            return redirect(url_for("mfa.challenge"))  # the second step comes first
        return redirect(url_for("accounts.login", next=request.full_path, reauth=1))
    if service.KIND not in policy().mfa.allowed(user.role):
        abort(403)
    next_url = request.args.get("next")
    return render_template(
        "mfa/enroll_webauthn.html", options_url=url_for("mfa.enroll_webauthn_options"),
        verify_url=url_for("mfa.enroll_webauthn_verify",
                           next=safe_next(next_url) if next_url else None))


@bp.post("/enroll/webauthn/options")
@limiter.limit(lambda: policy().mfa.limits.webauthn)
def enroll_webauthn_options() -> Response | tuple[Response, int]:
    user = _enroller()
    if user is None:
        return _error(_("Sign in again to change how you verify your sign-in."), 401,
                      _reauth_url())
    if service.KIND not in policy().mfa.allowed(user.role):
        return _error(NOT_ALLOWED, 403)
    options = service.registration_options(user, enrollment.attempt_for(user))
    db.session.commit()
    return jsonify(options)


@bp.post("/enroll/webauthn", endpoint="enroll_webauthn_verify")
@limiter.limit(lambda: policy().mfa.limits.webauthn)
def enroll_webauthn_verify() -> Response | tuple[Response, int]:
    user = _enroller()
    if user is None:
        return _error(_("Sign in again to change how you verify your sign-in."), 401,
                      _reauth_url())
    if service.KIND not in policy().mfa.allowed(user.role):
        return _error(NOT_ALLOWED, 403)
    attempt = enrollment.attempt_for(user)
    label = _body().get("label")
    try:
        factor = registry().get(service.KIND).enroll(
            user, attempt=attempt, credential=_credential(),
            label=label if isinstance(label, str) else None)
    except service.WebAuthnError as exc:
        audit.record("mfa.enroll_failure", user_id=user.id, factor=service.KIND)
        db.session.commit()
        return _error(exc.message, 409 if exc.message == service.KNOWN else 400)
    if not service.save(factor):
        db.session.commit()
        return _error(service.KNOWN, 409)
    done = enrollment.enrolled(user, factor)
    return jsonify(redirect=safe_next(done.headers.get("Location")))


# -- second step of a sign-in, and step-up -------------------------------------------------
def _expired() -> tuple[Response, int]:
    return _error(EXPIRED_SIGN_IN, 401, url_for("accounts.login"))


@bp.post("/webauthn/options")
@limiter.limit(lambda: policy().mfa.limits.webauthn)
def webauthn_options() -> Response | tuple[Response, int]:
    found = flow.current()
    if found is None:
        return _expired()
    attempt, user, _next = found
    try:
        options = service.authentication_options(attempt, flow.usable(attempt, user))
    except service.WebAuthnError as exc:
        return _error(exc.message, 409)
    db.session.commit()
    return jsonify(options)


@bp.post("/webauthn/verify")
@limiter.limit(lambda: policy().mfa.limits.webauthn)
def webauthn_verify() -> Response | tuple[Response, int]:
    found = flow.current()
    if found is None:
        return _expired()
    attempt, user, next_url = found
    usable = flow.usable(attempt, user)
    try:
        factor = service.verify_authentication(user, attempt, _credential(), usable)
    except service.WebAuthnError as exc:
        if not exc.counts:
            db.session.commit()
            return _error(exc.message)
        return _failed(user, exc.message, "mfa.failure")
    if not lockout.register_success(user):  # locked meanwhile by failures elsewhere
        audit.record("mfa.failure", user_id=user.id, factor=service.KIND, reason="locked")
        db.session.commit()
        flow.abandon()
        return _error(login_failed_message(), 401, url_for("accounts.login"))
    audit.record("mfa.verified", user_id=user.id, factor=service.KIND)
    flow.finish(attempt, user, factor)
    db.session.commit()
    return jsonify(redirect=next_url)


def _failed(user: User, message: str, event: str) -> tuple[Response, int]:
    """A refused assertion counts toward the account lockout like a wrong password."""
    failure = lockout.register_failure(user)
    if event == "mfa.failure":
        audit.record(event, user_id=user.id, factor=service.KIND)
    else:
        audit.record(event, user_id=user.id, reason="passkey")
    db.session.commit()
    if failure is None or failure.newly_locked:
        if failure is not None:
            notices.account_locked(user)
        flow.abandon()
        return _error(login_failed_message(), 401, url_for("accounts.login"))
    return _error(message)


# -- passkey sign-in (no username, no password) --------------------------------------------
@bp.post("/passkey/options")
@limiter.limit(lambda: policy().lockout.per_ip_limit)
def passkey_options() -> Response:
    wanted = _body().get("next")
    options, challenge = service.passkey_options()
    session[PASSKEY_KEY] = {"challenge": challenge, "at": clock.timestamp(),
                            "next": safe_next(wanted if isinstance(wanted, str) else None)}
    return jsonify(options)


@bp.post("/passkey/verify")
@limiter.limit(lambda: policy().lockout.per_ip_limit)
def passkey_verify() -> Response | tuple[Response, int]:
    held = session.pop(PASSKEY_KEY, None)
    if not isinstance(held, dict) or not isinstance(held.get("challenge"), str) or \
            not service.passkey_challenge_fresh(held.get("at")):
        return _error(service.EXPIRED)
    credential = _credential()
    factor = service.find_factor(service.credential_id_of(credential))
    if factor is None:
        audit.record("login.failure", reason="unknown_passkey")
        db.session.commit()
        return _error(service.FAILED)
    user = db.session.get(User, factor.user_id)
    refused = ("disabled" if user is None or user.disabled else
               "locked" if lockout.is_locked(user) else
               "not_allowed" if all(f.id != factor.id for f in flow.factors(user)) else
               "refused_elsewhere" if not verifiers.allows(user) else None)
    if refused:
        audit.record("login.failure", user_id=factor.user_id, reason=refused)
        db.session.commit()
        return _error(login_failed_message(), 401)
    try:
        service.check_passkey_user(user, credential)
        attempt = service.passkey_attempt(user, held["challenge"])
        service.check_assertion(factor, credential,
                                service.decode(held["challenge"]))
    except service.WebAuthnError as exc:
        if not exc.counts:
            db.session.commit()
            return _error(exc.message)
        return _failed(user, exc.message, "login.failure")
    if not lockout.register_success(user):
        audit.record("login.failure", user_id=user.id, reason="locked")
        db.session.commit()
        return _error(login_failed_message(), 401)
    audit.record("mfa.verified", user_id=user.id, factor=service.KIND, passkey=True)
    flow.finish(attempt, user, factor)
    db.session.commit()
    return jsonify(redirect=held.get("next") or url_for("accounts.account"))
