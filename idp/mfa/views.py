"""Second-factor pages: the challenge (with resend and "use another way"), recovery codes,
and the enroll choices. Every factor is reached through the registry (idp.mfa.factors)."""

from __future__ import annotations

import functools
from collections.abc import Callable

from flask import Response, abort, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response as AnyResponse

from idp.accounts import lockout, notices
from idp.accounts.forms import LoginForm
from idp.accounts.models import User
from idp.accounts.views import locked_message, safe_next
from idp.audit import service as audit
from idp.context import policy
from idp.extensions import db, limiter
from idp.mfa import enrollment, flow
from idp.mfa.blueprint import bp
from idp.mfa.factors import recovery
from idp.mfa.factors.base import CODE_FAILED, FactorType, Notice
from idp.mfa.factors.otp_code import mask, sent_already
from idp.mfa.factors.registry import registry
from idp.mfa.models import Factor, LoginAttempt
from idp.oidc.views import authorize_after_sign_in

Page = AnyResponse | tuple[str, int] | str


def _in_sign_in(view: Callable[[LoginAttempt, User, str], Page]) -> Callable[[], Page]:
    """Run the view as `view(attempt, user, next_url)` for the sign-in under way in this
    browser (idp.mfa.flow); without one, back to the login page."""

    @functools.wraps(view)
    def guarded() -> Page:
        found = flow.current()
        if found is None:
            return redirect(url_for("accounts.login"))
        return view(*found)

    return guarded


def _choose(user: User, attempt: LoginAttempt) -> tuple[Factor | None, list[Factor]]:
    usable = flow.usable(attempt, user)
    wanted = request.values.get("factor", type=int)
    chosen = next((f for f in usable if f.id == wanted), usable[0] if usable else None)
    return chosen, usable


@bp.route("/challenge", methods=["GET", "POST"])
@limiter.limit(lambda: policy().mfa.limits.challenge, methods=["POST"])
@_in_sign_in
def challenge(attempt: LoginAttempt, user: User, next_url: str) -> Page:
    if flow.needs_enrollment(user) and attempt.purpose == "login":
        return redirect(url_for("mfa.enroll"))
    factor, usable = _choose(user, attempt)
    if factor is None:
        flow.abandon()
        return redirect(next_url)
    kind = registry().get(factor.kind)
    resend = request.method == "POST" and request.form.get("action") == "resend" and \
        kind.resendable
    if request.method == "POST" and not resend:
        return _verify(attempt, user, factor, kind, next_url, usable)
    notice = kind.challenge(attempt, user, factor, resend=resend)
    return _page(attempt, user, factor, usable, notice or Notice())


def _page(attempt: LoginAttempt, user: User, factor: Factor, usable: list[Factor],
          notice: Notice, status: int = 200) -> tuple[str, int]:
    kind = registry().get(factor.kind)
    purpose = flow.purpose_of(attempt)
    return render_template(
        "mfa/challenge.html", factor=factor, factors=usable, user=user, kind=kind,
        description=kind.describe(), message=notice.message, error=notice.error,
        undelivered=notice.undelivered, mask=mask, stepup=purpose.signed_in,
        code_sent=kind is not None and kind.resendable and sent_already(attempt, factor),
        purpose_template=purpose.notice_template,
        **(purpose.notice(attempt) if purpose.notice else {})), status


def _verify(attempt: LoginAttempt, user: User, factor: Factor, kind: FactorType,
            next_url: str, usable: list[Factor]) -> Page:
    if not kind.verifies_form:
        abort(400)
    if not kind.verify(attempt, user, factor, request.form):
        db.session.commit()
        return _failed(attempt, user, factor, kind, usable)
    audit.record("mfa.verified", user_id=user.id, factor=factor.kind)
    done = flow.finish(attempt, user, factor)
    if done is None or attempt.purpose != "login":
        db.session.commit()
        return redirect(next_url)
    # A sign-in for an authorization request: answered here (the code to the client), not
    # by a redirect to /authorize that would only lead on. The sign-in is committed first;
    # its rows (the account, the new session) stay loaded for the authorization's checks.
    sa_session = db.session()
    keep, sa_session.expire_on_commit = sa_session.expire_on_commit, False
    try:
        db.session.commit()
    finally:
        sa_session.expire_on_commit = keep
    return authorize_after_sign_in(next_url) or redirect(next_url)


def _failed(attempt: LoginAttempt, user: User, factor: Factor, kind: FactorType,
            usable: list[Factor]) -> Page:
    """A wrong second factor counts toward the account lockout like a wrong password."""
    failure = lockout.register_failure(user)
    audit.record("mfa.failure", user_id=user.id, factor=factor.kind)
    db.session.commit()
    if failure is None or failure.newly_locked:
        if failure is not None:
            notices.account_locked(user)
        flow.abandon()
        return render_template("accounts/login.html", form=LoginForm(),
                               next_url=url_for("accounts.account"),
                               error=locked_message()), 401
    return _page(attempt, user, factor, usable, Notice(error=kind.failed_message), status=400)


@bp.route("/recovery", methods=["GET", "POST"])
@limiter.limit(lambda: policy().mfa.limits.recovery, methods=["POST"])
@_in_sign_in
def use_recovery(attempt: LoginAttempt, user: User, next_url: str) -> Page:
    kind = registry().get(recovery.KIND)
    if kind is None:
        abort(404)
    if request.method == "POST":
        if kind.verify(attempt, user, None, request.form):
            audit.record("mfa.recovery_code_used", user_id=user.id, left=recovery.remaining(user))
            flow.finish(attempt, user, None, kind=kind.kind)
            db.session.commit()
            notices.recovery_code_used(user)
            return redirect(url_for("mfa.enroll", next=next_url, after="recovery"))
        db.session.commit()
        failure = lockout.register_failure(user)
        audit.record("mfa.failure", user_id=user.id, factor=kind.kind)
        db.session.commit()
        if failure is None or failure.newly_locked:
            flow.abandon()
            return redirect(url_for("accounts.login"))
        return render_template("mfa/recovery.html", error=CODE_FAILED), 400
    return render_template("mfa/recovery.html")


# -- enrollment ----------------------------------------------------------------------------
@bp.get("/enroll")
def enroll() -> Response | str:
    who = enrollment.enrolling()
    if who is None:
        return enrollment.reauth()
    user, _ = who
    choices = []
    for kind in registry().allowed(user.role):
        url = kind.enroll_url(request.args.get("next"))
        if url:
            choices.append((kind.describe(), url))
    return render_template("mfa/enroll.html", choices=choices, after=request.args.get("after"))


@bp.get("/recovery-codes")
def show_recovery_codes() -> Response | str:
    shown = session.pop(enrollment.CODES_KEY, None)
    next_url = request.args.get("next")
    if not shown:
        return redirect(safe_next(next_url))
    return render_template("mfa/recovery_codes.html", codes=shown, next_url=safe_next(next_url))
