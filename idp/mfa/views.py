"""Second-factor pages: challenge (with resend and "use another way"), enrollment during
sign-in, recovery codes."""

from __future__ import annotations

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from idp import clock
from idp.accounts import lockout, notices
from idp.accounts.views import login_failed_message, safe_next
from idp.audit import service as audit
from idp.context import policy
from idp.core import crypto
from idp.extensions import db, limiter
from idp.mfa import codes, flow, recovery, totp
from idp.mfa.models import Factor

bp = Blueprint("mfa", __name__, url_prefix="/mfa")

CODE_FAILED = "That code is not right or has expired. Try again or send a new code."
TOTP_FAILED = "That code is not right. Enter the newest code your authenticator app shows."


def _attempt_or_login() -> tuple | Response:
    found = flow.current()
    if found is None:
        return redirect(url_for("accounts.login"))
    return found


def _choose(user: object, attempt: object) -> tuple[Factor | None, list[Factor]]:
    usable = flow.factors(user, min_acr=attempt.target_acr)
    wanted = request.values.get("factor", type=int)
    chosen = next((f for f in usable if f.id == wanted), usable[0] if usable else None)
    return chosen, usable


@bp.route("/challenge", methods=["GET", "POST"])
@limiter.limit("30 per minute", methods=["POST"])
def challenge() -> Response | tuple[str, int] | str:
    found = _attempt_or_login()
    if isinstance(found, Response):
        return found
    attempt, user, next_url = found
    if flow.needs_enrollment(user) and attempt.purpose == "login":
        return redirect(url_for("mfa.enroll"))
    factor, usable = _choose(user, attempt)
    if factor is None:
        flow.abandon()
        return redirect(next_url)
    message, error, down = None, None, False
    if request.method == "GET" and factor.kind in ("sms", "email") and not _code_sent(
            attempt, factor):
        result = codes.send(factor, attempt)
        db.session.commit()
        message, error = (result.message, None) if result.sent else (None, result.message)
        down = result.undelivered
    if request.method == "POST":
        if request.form.get("action") == "resend" and factor.kind in ("sms", "email"):
            result = codes.send(factor, attempt)
            db.session.commit()
            message, error = (result.message, None) if result.sent else (None, result.message)
            down = result.undelivered
        else:
            return _verify(attempt, user, factor, next_url, usable)
    return _page(attempt, user, factor, usable, message=message, error=error,
                 undelivered=down)


def _code_sent(attempt: object, factor: Factor) -> bool:
    from sqlalchemy import select

    from idp.mfa.models import OneTimeCode

    return db.session.execute(select(OneTimeCode.id).where(
        OneTimeCode.attempt_id == attempt.id, OneTimeCode.factor_id == factor.id).limit(1)
    ).first() is not None


def _page(attempt: object, user: object, factor: Factor, usable: list[Factor],
          message: str | None = None, error: str | None = None, status: int = 200,
          undelivered: bool = False) -> tuple[str, int]:
    return render_template("mfa/challenge.html", factor=factor, factors=usable, user=user,
                           message=message, error=error, mask=codes.mask,
                           spec=policy().mfa.factors[factor.kind],
                           stepup=attempt.purpose in ("stepup", "epcs"),
                           epcs=_epcs_ceremony(attempt),
                           undelivered=undelivered), status


def _epcs_ceremony(attempt: object) -> object | None:
    if attempt.purpose != "epcs":
        return None
    from idp.epcs.service import ceremony_for_attempt

    return ceremony_for_attempt(attempt.id)


def _verify(attempt: object, user: object, factor: Factor, next_url: str,
            usable: list[Factor]) -> Response | tuple[str, int]:
    code = request.form.get("code", "")[:64]
    if factor.kind == "totp":
        ok = totp.verify(factor, code)
    elif factor.kind in ("sms", "email"):
        ok = codes.verify(factor, attempt, code)
    else:
        abort(400)
    if not ok:
        db.session.commit()
        return _failed(attempt, user, factor, usable)
    audit.record("mfa.verified", user_id=user.id, factor=factor.kind)
    flow.finish(attempt, user, factor)
    db.session.commit()
    return redirect(next_url)


def _failed(attempt: object, user: object, factor: Factor, usable: list[Factor]
            ) -> Response | tuple[str, int]:
    """A wrong second factor counts toward the account lockout like a wrong password."""
    failure = lockout.register_failure(user)
    audit.record("mfa.failure", user_id=user.id, factor=factor.kind)
    db.session.commit()
    if failure is None or failure.newly_locked:
        if failure is not None:
            notices.account_locked(user)
        flow.abandon()
        return render_template("accounts/login.html", form=_login_form(),
                               next_url=url_for("accounts.account"),
                               error=login_failed_message()), 401
    message = TOTP_FAILED if factor.kind == "totp" else CODE_FAILED
    return _page(attempt, user, factor, usable, error=message, status=400)


def _login_form() -> object:
    from idp.accounts.forms import LoginForm

    return LoginForm()


@bp.route("/recovery", methods=["GET", "POST"])
@limiter.limit("10 per minute", methods=["POST"])
def use_recovery() -> Response | tuple[str, int] | str:
    found = _attempt_or_login()
    if isinstance(found, Response):
        return found
    attempt, user, next_url = found
    if request.method == "POST":
        if recovery.use(user, request.form.get("code", "")[:64]):
            factor = Factor(kind="recovery", label="Recovery code", user_id=user.id)
            audit.record("mfa.recovery_code_used", user_id=user.id,
                         left=recovery.remaining(user))
            flow.finish(attempt, user, factor)
            db.session.commit()
            notices.recovery_code_used(user)
            return redirect(url_for("mfa.enroll", next=next_url, after="recovery"))
        db.session.commit()
        failure = lockout.register_failure(user)
        audit.record("mfa.failure", user_id=user.id, factor="recovery")
        db.session.commit()
        if failure is None or failure.newly_locked:
            flow.abandon()
            return redirect(url_for("accounts.login"))
        return render_template("mfa/recovery.html", error=CODE_FAILED), 400
    return render_template("mfa/recovery.html")


# -- enrollment ----------------------------------------------------------------------------
def _enrolling() -> tuple[object, str] | None:
    """Who is enrolling: a sign-in waiting for its first factor, or a signed-in user whose
    authentication is recent (factor changes need a sign-in within the re-auth window)."""
    found = flow.current()
    if found is not None and found[0].purpose == "login":
        # Only a user with no factor yet may enroll between password and second factor;
        # anyone else must pass their existing factor first (else the password alone would
        # be enough to register an attacker's authenticator).
        if flow.needs_enrollment(found[1]):
            return found[1], found[2]
        return None
    from idp.sessions import service as sessions

    sso = sessions.current()
    if sso is None:
        return None
    age = (clock.now() - sso.auth_time).total_seconds()
    if age > policy().mfa.reauth_window:
        return None
    return sso.user, safe_next(request.args.get("next"))


def _reauth() -> Response:
    return redirect(url_for("accounts.login", next=request.full_path, reauth=1))


@bp.get("/enroll")
def enroll() -> Response | str:
    who = _enrolling()
    if who is None:
        return _reauth()
    user, _ = who
    choices = []
    for kind in policy().mfa.allowed(user.role):
        url = _enroll_url(kind, request.args.get("next"))
        if url:
            choices.append((policy().mfa.factors[kind], url))
    return render_template("mfa/enroll.html", choices=choices, after=request.args.get("after"))


def _enroll_url(kind: str, next_url: str | None) -> str | None:
    if kind in ("sms", "email"):
        return url_for("mfa.enroll_code", kind=kind, next=next_url)
    endpoint = f"mfa.enroll_{kind}"
    return url_for(endpoint, next=next_url) if endpoint in current_app.view_functions else None


@bp.route("/enroll/totp", methods=["GET", "POST"])
def enroll_totp() -> Response | tuple[str, int] | str:
    who = _enrolling()
    if who is None:
        return _reauth()
    user, _ = who
    if "totp" not in policy().mfa.allowed(user.role):
        abort(403)
    pending = session.get("totp_pending")
    if request.method == "GET" or not pending:
        secret = totp.new_secret()
        session["totp_pending"] = crypto.encrypt(secret)
        uri = totp.provisioning_uri(user, secret)
        return render_template("mfa/enroll_totp.html", secret=secret, qr=totp.qr_svg(uri))
    secret = crypto.decrypt(pending)
    step = totp.matching_step(secret, request.form.get("code", "")[:16])
    if step is None:
        uri = totp.provisioning_uri(user, secret)
        return render_template("mfa/enroll_totp.html", secret=secret, qr=totp.qr_svg(uri),
                               error="That code does not match. Check the time on your phone "
                                     "and enter the newest code."), 400
    label = (request.form.get("label") or "Authenticator app").strip()[:100]
    factor = Factor(user_id=user.id, kind="totp", label=label, created_at=clock.now(),
                    confirmed_at=clock.now(), secret_encrypted=pending, last_totp_step=step)
    session.pop("totp_pending", None)
    return _enrolled(user, factor)


def _enrolled(user: object, factor: Factor) -> Response:
    """Save a confirmed factor, tell the user, then show recovery codes if they have none."""
    db.session.add(factor)
    db.session.flush()
    audit.record("mfa.enrolled", user_id=user.id, factor=factor.kind, label=factor.label)
    fresh = recovery.remaining(user) == 0
    codes_shown = recovery.generate(user) if fresh else None
    found = flow.current()
    if found is not None and found[0].purpose == "login":
        flow.finish(found[0], user, factor)
        next_url = found[2]
    else:
        next_url = safe_next(request.args.get("next"))
    db.session.commit()
    notices.factor_changed(user, f"{factor.label} was added as a way to verify your sign-in")
    if codes_shown:
        session["recovery_codes_once"] = codes_shown
        return redirect(url_for("mfa.show_recovery_codes", next=next_url))
    return redirect(next_url)


@bp.get("/recovery-codes")
def show_recovery_codes() -> Response | str:
    shown = session.pop("recovery_codes_once", None)
    next_url = request.args.get("next")
    if not shown:
        return redirect(safe_next(next_url))
    return render_template("mfa/recovery_codes.html", codes=shown, next_url=safe_next(next_url))


@bp.route("/enroll/<kind>", methods=["GET", "POST"])
def enroll_code(kind: str) -> Response | tuple[str, int] | str:
    """SMS or email: send a code to the destination, confirm it, keep the factor."""
    if kind not in ("sms", "email"):
        abort(404)
    who = _enrolling()
    if who is None:
        return _reauth()
    user, _ = who
    if kind not in policy().mfa.allowed(user.role):
        abort(403)
    pending_id = session.get("code_factor_pending")
    pending = db.session.get(Factor, pending_id) if isinstance(pending_id, int) else None
    if pending is not None and (pending.user_id != user.id or pending.kind != kind
                                or pending.confirmed_at is not None):
        pending = None
    step = request.form.get("step")
    if request.method == "GET" or step == "destination" or pending is None:
        if request.method == "POST" and step == "destination":
            return _start_code_enrollment(user, kind)
        return render_template("mfa/enroll_code.html", kind=kind, email=user.email, step="ask")
    attempt = _enrollment_attempt(user)
    if not codes.verify(pending, attempt, request.form.get("code", "")[:16]):
        db.session.commit()
        return render_template("mfa/enroll_code.html", kind=kind, step="confirm",
                               destination=codes.mask(pending.destination or ""),
                               error=CODE_FAILED), 400
    pending.confirmed_at = clock.now()
    session.pop("code_factor_pending", None)
    return _enrolled(user, pending)


def _enrollment_attempt(user: object) -> object:
    """Codes are bound to an attempt; enrollment from settings uses a short-lived one."""
    found = flow.current()
    if found is not None:
        return found[0]
    held = session.get("enroll_attempt")
    from idp.mfa.models import LoginAttempt

    attempt = db.session.get(LoginAttempt, held) if isinstance(held, str) else None
    if attempt is None or attempt.user_id != user.id or attempt.expires_at <= clock.now():
        import secrets
        from datetime import timedelta

        attempt = LoginAttempt(id=secrets.token_urlsafe(24), user_id=user.id, purpose="enroll",
                               amr=[], created_at=clock.now(),
                               expires_at=clock.now() + timedelta(minutes=15))
        db.session.add(attempt)
        session["enroll_attempt"] = attempt.id
    return attempt


def _start_code_enrollment(user: object, kind: str) -> Response | tuple[str, int] | str:
    if kind == "sms":
        try:
            destination = codes.normalise_phone(request.form.get("phone", ""))
        except codes.PhoneError as exc:
            return render_template("mfa/enroll_code.html", kind=kind, step="ask",
                                   error=str(exc)), 400
    else:
        destination = user.email
    factor = Factor(user_id=user.id, kind=kind, created_at=clock.now(), destination=destination,
                    label="Text message" if kind == "sms" else "Email code")
    db.session.add(factor)
    db.session.flush()
    session["code_factor_pending"] = factor.id
    result = codes.send(factor, _enrollment_attempt(user))
    db.session.commit()
    status = 200 if result.sent else 400
    return render_template("mfa/enroll_code.html", kind=kind, step="confirm",
                           destination=codes.mask(destination),
                           message=result.message if result.sent else None,
                           error=None if result.sent else result.message), status


from idp.mfa import manage_views, webauthn_views  # noqa: E402,F401  (routes on this blueprint)
