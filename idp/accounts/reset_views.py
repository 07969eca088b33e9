"""Forgot password and the reset link's page. Thin: parse, call accounts.reset, render."""

from __future__ import annotations

from flask import Blueprint, Response, render_template, request
from flask_wtf import FlaskForm
from wtforms import StringField
from wtforms.validators import DataRequired, Length

from idp.accounts import notices, passwords, reset
from idp.accounts.forms import NewPasswordForm
from idp.context import policy
from idp.core.i18n import gettext as _
from idp.extensions import db, limiter
from idp.notify import outbox
from idp.oidc.home import home_name, home_url

bp = Blueprint("reset", __name__)


class ForgotForm(FlaskForm):
    identifier = StringField("Username, NPI or email address",
                             validators=[DataRequired(), Length(max=254)])


def _identifier_key() -> str:
    return "forgot:" + (request.form.get("identifier") or "").strip().lower()[:254]


@bp.after_request
def _no_store(response: Response) -> Response:
    # The reset URL carries the token: keep it out of caches (Referrer-Policy is no-referrer).
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


@bp.route("/password/forgot", methods=["GET", "POST"])
@limiter.limit(lambda: policy().lockout.per_ip_limit, methods=["POST"])
@limiter.limit(lambda: policy().lockout.forgot_password_limit, methods=["POST"],
               key_func=_identifier_key)
def forgot() -> tuple[str, int] | str:
    """The same answer whatever was entered: nobody, a disabled account, or a real one."""
    form = ForgotForm()
    hours = policy().password.reset_link_lifetime // 3600
    if request.method == "POST":
        if not form.validate_on_submit():
            return render_template("accounts/forgot.html", form=form, hours=hours,
                                   error=_("Enter your username, NPI or email address.")), 400
        links = reset.request_reset(form.identifier.data)
        mails = [outbox.enqueue(*reset.link_mail(link)).id for link in links]
        db.session.commit()
        outbox.deliver_after_response(mails)
        return render_template("accounts/forgot_sent.html", hours=hours,
                               delayed=outbox.mail_delayed())
    return render_template("accounts/forgot.html", form=form, hours=hours)


def _invalid() -> tuple[str, int]:
    return render_template("accounts/reset_invalid.html"), 400


@bp.route("/password/reset/<token>", methods=["GET", "POST"])
@limiter.limit(lambda: policy().lockout.per_ip_limit, methods=["POST"])
def reset_password(token: str) -> tuple[str, int] | str:
    found = reset.valid_link(token)
    if found is None:
        return _invalid()
    item, owner = found
    form = NewPasswordForm()
    errors: list[str] = []
    if request.method == "POST":
        form.validate()  # every problem at once: the form's and each failed password rule
        errors = [e for field in form.errors.values() for e in field]
        if form.new_password.data:
            errors += passwords.problems(form.new_password.data, owner)
        if not errors:
            user = reset.complete(item, form.new_password.data)
            if user is None:
                db.session.rollback()
                return _invalid()
            db.session.commit()
            notices.password_changed(user)
            return render_template("accounts/reset_done.html", home=home_url(),
                                   home_name=home_name())
    return render_template("accounts/reset.html", form=form, errors=errors, user=owner,
                           rules=policy().password.rules), 400 if errors else 200

