"""Login, the steps owed before any token (forced password change, daily acknowledgment) and
the account page."""

from __future__ import annotations

from typing import cast
from urllib.parse import parse_qs, urlsplit

from flask import Blueprint, Response, make_response, redirect, render_template, request, url_for

from idp.accounts import acknowledgment, notices, passwords, service
from idp.accounts.forms import AcknowledgmentForm, LoginForm, NewPasswordForm
from idp.audit import service as audit
from idp.context import policy
from idp.core import account_pages, login_options
from idp.core.i18n import gettext as _
from idp.core.i18n import lazy_gettext as _l
from idp.extensions import db, limiter
from idp.mfa import flow
from idp.oidc import authorize as consents
from idp.sessions.models import SsoSession
from idp.web.guards import signed_in

bp = Blueprint("accounts", __name__)
# The login page's other ways to sign in (idp.core.login_options: features fill it).
bp.add_app_template_global(login_options.options, "login_alternatives")
# Pages features add to the account page (idp.core.account_pages).
bp.add_app_template_global(account_pages.pages, "feature_account_pages")

TEMPORARY_EXPIRED = _l("Your temporary password has expired. Use \u201cForgot password\u201d "
                        "below or ask your IT helpdesk for a new one.")


def login_failed_message() -> str:
    rules = policy().lockout
    return _("The username, NPI or password is not right, or the account cannot sign in. "
             "After %(failures)s failed attempts an account is locked for %(minutes)s minutes.",
             failures=rules.max_failures, minutes=rules.lock_duration // 60)


def locked_message() -> str:
    """After the failure that locks, and for a locked account whatever the password: the same
    text for names without an account once they failed as often (no account oracle)."""
    minutes = policy().lockout.lock_duration // 60
    return _("Sign-in is not possible right now: too many attempts failed. Try again in up to "
             "%(minutes)s minutes, or use \u201cForgot password\u201d to set a new password now. "
             "The account holder has been sent an email about this.", minutes=minutes)


def unavailable_message() -> str:
    return _("Sign-in is not possible right now: the service that checks your password cannot "
             "be reached. Nothing was counted against your account. Try again in a few minutes; "
             "if it goes on, call your IT helpdesk.")


def safe_next(target: str | None) -> str:
    """Only same-site paths: never an absolute URL, scheme-relative or backslash trick."""
    if not target or len(target) > 4096:
        return url_for("accounts.account")
    parts = urlsplit(target)
    if (parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//")
            or "\\" in target or any(ord(c) < 32 for c in target)):
        return url_for("accounts.account")
    return target


def _idp_hint(next_url: str) -> str:
    """`idp_hint` of this request, or of the authorization request it came from."""
    hint = request.args.get("idp_hint") or \
        (parse_qs(urlsplit(next_url).query).get("idp_hint") or [""])[0]
    return hint[:64]


def _account_key() -> str:
    return "acct:" + (request.form.get("username") or "").strip().lower()[:254]


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(lambda: policy().lockout.per_ip_limit, methods=["POST"])
@limiter.limit(lambda: policy().lockout.per_account_limit, methods=["POST"],
               key_func=_account_key)
def login() -> Response | tuple[str, int] | str:
    form = LoginForm()
    next_url = safe_next(request.values.get("next"))
    if request.method == "GET":
        hint = request.args.get("login_hint", "")[:254]
        if hint:
            form.username.data = hint
        chosen = login_options.hinted(_idp_hint(next_url), next_url)
        if chosen is not None:  # idp_hint: straight to that way of signing in
            return cast(Response, redirect(chosen.url))
        return render_template("accounts/login.html", form=form, next_url=next_url)
    if not form.validate_on_submit():
        return render_template("accounts/login.html", form=form, next_url=next_url,
                               error=_("Enter your username or NPI and your password.")), 400
    result = service.authenticate(form.username.data, form.password.data)
    user = result.user
    if result.unavailable:
        account = result.account
        audit.record("login.unavailable", user_id=account.id if account else None,
                     reason=result.reason)
        db.session.commit()
        page = make_response(render_template("accounts/login.html", form=form,
                                             next_url=next_url, error=unavailable_message()),
                             503)
        page.headers["Retry-After"] = "30"
        return page
    if user is None:
        account = result.account
        audit.record("login.failure", user_id=account.id if account else None,
                     reason=result.reason)
        db.session.commit()
        if result.newly_locked and account is not None:
            notices.account_locked(account)
        message = TEMPORARY_EXPIRED if result.reason == "temporary_expired" else \
            locked_message() if result.locked else login_failed_message()
        return render_template("accounts/login.html", form=form, next_url=next_url,
                               error=message), 401
    attempt = flow.begin(user, next_url)
    if not policy().mfa.required and not flow.factors(user):
        flow.finish(attempt, user, None)
        db.session.commit()
        return redirect(next_url)
    audit.record("login.password_verified", user_id=user.id)
    db.session.commit()
    return redirect(url_for("mfa.challenge"))


@bp.route("/account/password/required", methods=["GET", "POST"])
@signed_in()
def required_password_change(sso: SsoSession) -> Response | tuple[str, int] | str:
    """A temporary or expired password must be replaced before anything else."""
    next_url = safe_next(request.values.get("next"))
    user = sso.user
    reason = passwords.change_required(user)
    if reason is None:
        return redirect(next_url)
    form = NewPasswordForm()
    errors: list[str] = []
    if request.method == "POST":
        if form.validate_on_submit():
            errors = passwords.problems(form.new_password.data, user)
            if not errors:
                passwords.set_password(user, form.new_password.data)
                audit.record("password.changed", user_id=user.id, reason=reason)
                db.session.commit()
                notices.password_changed(user)
                return redirect(next_url)
        else:
            errors = [e for field in form.errors.values() for e in field]
    status = 400 if errors else 200
    return render_template("accounts/password_required.html", form=form, reason=reason,
                           errors=errors, next_url=next_url, rules=policy().password.rules,
                           ), status


@bp.route("/account/acknowledge", methods=["GET", "POST"])
@signed_in()
def acknowledge(sso: SsoSession) -> Response | tuple[str, int] | str:
    next_url = safe_next(request.values.get("next"))
    form = AcknowledgmentForm()
    if request.method == "POST" and form.validate_on_submit():
        acknowledgment.accept(sso.user)
        db.session.commit()
        return redirect(next_url)
    status = 400 if request.method == "POST" else 200
    return render_template("accounts/acknowledge.html", form=form, next_url=next_url,
                           ack=policy().acknowledgment,
                           days_left=passwords.days_left(sso.user)), status


@bp.get("/account")
@signed_in()
def account(sso: SsoSession) -> Response | str:
    return render_template("accounts/account.html", user=sso.user, sso=sso,
                           consents=consents.active_consents(sso.user),
                           days_left=passwords.days_left(sso.user))


@bp.post("/account/consents/<int(max=2147483647):consent_id>/revoke")  # fits the id column
@signed_in()
def revoke_consent(sso: SsoSession, consent_id: int) -> Response:
    consents.revoke_consent(sso.user, consent_id)
    db.session.commit()
    return redirect(url_for("accounts.account"))


@bp.get("/")
def index() -> Response:
    return redirect(url_for("accounts.account"))
