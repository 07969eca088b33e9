"""Login and the account page."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, Response, redirect, render_template, request, url_for

from idp.accounts import service
from idp.accounts.forms import LoginForm
from idp.audit import service as audit
from idp.context import policy
from idp.extensions import db
from idp.oidc import authorize as consents
from idp.sessions import service as sessions

bp = Blueprint("accounts", __name__)

LOGIN_FAILED = "The username, NPI or password is not right, or the account cannot sign in."


def safe_next(target: str | None) -> str:
    """Only same-site paths: never an absolute URL, scheme-relative or backslash trick."""
    if not target or len(target) > 4096:
        return url_for("accounts.account")
    parts = urlsplit(target)
    if (parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//")
            or "\\" in target or any(ord(c) < 32 for c in target)):
        return url_for("accounts.account")
    return target


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | tuple[str, int] | str:
    form = LoginForm()
    next_url = safe_next(request.values.get("next"))
    if request.method == "GET":
        hint = request.args.get("login_hint", "")[:254]
        if hint:
            form.username.data = hint
        return render_template("accounts/login.html", form=form, next_url=next_url)
    if not form.validate_on_submit():
        return render_template("accounts/login.html", form=form, next_url=next_url,
                               error="Enter your username or NPI and your password."), 400
    result = service.authenticate(form.username.data, form.password.data)
    user = result.user
    if user is None:
        audit.record("login.failure", user_id=result.account.id if result.account else None,
                     ip=request.remote_addr)
        db.session.commit()
        return render_template("accounts/login.html", form=form, next_url=next_url,
                               error=LOGIN_FAILED), 401
    sessions.start(user, acr=policy().assurance.password_acr, amr=["pwd"])
    audit.record("login.success", user_id=user.id, ip=request.remote_addr, amr=["pwd"])
    db.session.commit()
    return redirect(next_url)


@bp.get("/account")
def account() -> Response | str:
    sso = sessions.current()
    if sso is None:
        return redirect(url_for("accounts.login", next=url_for("accounts.account")))
    return render_template("accounts/account.html", user=sso.user, sso=sso,
                           consents=consents.active_consents(sso.user))


@bp.post("/account/consents/<int:consent_id>/revoke")
def revoke_consent(consent_id: int) -> Response:
    sso = sessions.current()
    if sso is None:
        return redirect(url_for("accounts.login"))
    consents.revoke_consent(sso.user, consent_id)
    db.session.commit()
    return redirect(url_for("accounts.account"))


@bp.get("/")
def index() -> Response:
    return redirect(url_for("accounts.account"))
