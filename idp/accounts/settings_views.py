"""Account settings pages. Thin: parse, call accounts.settings, commit, then email, render.
Every page needs a live SSO session (else /login?next=...) and the steps owed first."""

from __future__ import annotations

from flask import (
    Blueprint,
    Response,
    flash,
    get_flashed_messages,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response as BaseResponse
from wtforms import EmailField, PasswordField, StringField, TelField
from wtforms.validators import DataRequired, EqualTo, Length

from idp.accounts import compromise, notices, passwords
from idp.accounts import settings as service
from idp.accounts.models import User
from idp.accounts.views import safe_next
from idp.admin.service import recent_logins
from idp.context import policy
from idp.core.i18n import LANGUAGE_NAMES
from idp.core.i18n import gettext as _
from idp.core.i18n import lazy_gettext as _l
from idp.extensions import db, limiter
from idp.mfa import phone_change as phones
from idp.mfa.factors.otp_code import mask
from idp.mfa.models import LoginAttempt
from idp.notify import outbox
from idp.security import geoip
from idp.sessions.models import SsoSession
from idp.web.guards import signed_in

bp = Blueprint("settings", __name__, url_prefix="/account")

Page = Response | tuple[str, int] | str


class PasswordChangeForm(FlaskForm):
    current_password = PasswordField("Current password", validators=[Length(max=1024)])
    new_password = PasswordField("New password", validators=[DataRequired(), Length(max=1024)])
    confirm_password = PasswordField("Confirm new password", validators=[
        DataRequired(), EqualTo("new_password", message=_l("The two passwords do not match."))])


class EmailChangeForm(FlaskForm):
    new_email = EmailField("New email address", validators=[DataRequired(), Length(max=254)])
    current_password = PasswordField("Current password", validators=[Length(max=1024)])


class PhoneChangeForm(FlaskForm):
    phone = TelField("New mobile phone number", validators=[Length(max=40)])
    current_password = PasswordField("Current password", validators=[Length(max=1024)])


class PhoneCodeForm(FlaskForm):
    code = StringField("Code", validators=[Length(max=16)])


@bp.app_template_filter("masked_phone")
def masked_phone(number: str | None) -> str:
    """A phone number for display: only its last four digits."""
    return mask(number) if number else ""


def _per_ip() -> str:
    return policy().lockout.per_ip_limit


@bp.get("/settings")
@signed_in(back="settings.overview")
def overview(sso: SsoSession) -> Page:
    return _overview(sso)


def _overview(sso: SsoSession, errors: list[str] | None = None) -> tuple[str, int]:
    return render_template("accounts/settings.html", user=sso.user, sso=sso,
                           sessions=service.live_sessions(sso.user),
                           expires=passwords.expires_at(sso.user),
                           languages=[(code, LANGUAGE_NAMES.get(code, code))
                                      for code in policy().web.locales],
                           errors=errors or [],
                           messages=get_flashed_messages()), 400 if errors else 200


@bp.post("/language")
@signed_in(back="settings.overview")
def language(sso: SsoSession) -> BaseResponse | tuple[str, int]:
    """The account's language (pages once signed in, mails and texts, the `locale` claim)."""
    try:
        service.set_language(sso.user, str(request.form.get("language", ""))[:16])
    except service.SettingsError as exc:
        db.session.rollback()
        return _overview(sso, [str(exc)])
    db.session.commit()
    flash(_("Your language was saved."))  # in the language just chosen
    return redirect(url_for("settings.overview"))


@bp.route("/password", methods=["GET", "POST"])
@limiter.limit(_per_ip, methods=["POST"])
@signed_in(back="settings.overview")
def password(sso: SsoSession) -> Page:
    user = sso.user
    form = PasswordChangeForm()
    errors: list[str] = []
    if request.method == "POST":
        form.validate()
        if not form.current_password.data:
            errors = [_("Enter your current password.")]
        else:
            mismatch = [e for name in ("new_password", "confirm_password")
                        for e in form.errors.get(name, [])]
            result = service.change_password(user, sso, form.current_password.data,
                                             form.new_password.data or "", mismatch)
            db.session.commit()
            if result.newly_locked:
                notices.account_locked(user)
            if result.ok:
                notices.password_changed(user)
                flash(_("Your password was changed. Other devices were signed out."))
                return redirect(url_for("settings.overview"))
            errors = result.errors
    return render_template("accounts/settings_password.html", form=form, errors=errors,
                           rules=policy().password.rules), 400 if errors else 200


@bp.get("/sessions")
@signed_in(back="settings.overview")
def session_list(sso: SsoSession) -> Page:
    return render_template("accounts/settings_sessions.html", sso=sso,
                           sessions=service.live_sessions(sso.user),
                           messages=get_flashed_messages())


@bp.post("/sessions/<string(maxlength=64):sid>/end")
@signed_in(back="settings.session_list")
def end_session(sso: SsoSession, sid: str) -> Page:
    ended_here = sid == sso.id
    if not service.end_own_session(sso.user, sid, sso):
        db.session.rollback()
        return render_template("error.html", message=_("You have no such session.")), 404
    db.session.commit()
    if ended_here:
        return redirect(url_for("accounts.login"))
    flash(_("The session was ended."))
    back = request.form.get("next")
    return redirect(safe_next(back) if back else url_for("settings.session_list"))


@bp.get("/activity")
@signed_in(back="settings.overview")
def activity(sso: SsoSession) -> Page:
    """Live sessions (each can be ended) and the account's recent sign-in events."""
    return render_template("accounts/activity.html", sso=sso,
                           sessions=service.live_sessions(sso.user),
                           events=recent_logins(sso.user.id, limit=20),
                           messages=get_flashed_messages(),
                           place=geoip.lookup if geoip.enabled() else None)


@bp.post("/activity/not-me")
@signed_in(back="settings.activity")
def not_me(sso: SsoSession) -> Page:
    """"This wasn't me": end every session and token, force a new password, tell security
    staff (idp.accounts.compromise). `event` optionally names the sign-in row reported."""
    done = compromise.report(sso.user, sso, event_seq=request.form.get("event"))
    db.session.commit()
    compromise.send_notices(done)
    return render_template("accounts/not_me_done.html", ended=done.sessions_ended)


@bp.post("/sessions/end-all")
@signed_in(back="settings.session_list")
def end_all_sessions(sso: SsoSession) -> Response:
    service.sign_out_everywhere(sso.user, "signed_out_everywhere", sso)
    db.session.commit()
    return redirect(url_for("accounts.login"))


@bp.route("/email", methods=["GET", "POST"])
@limiter.limit(_per_ip, methods=["POST"])
@signed_in(back="settings.overview")
def email(sso: SsoSession) -> Page:
    """A new address: re-authenticate, then a link to the new address confirms it."""
    user = sso.user
    form = EmailChangeForm()
    errors: list[str] = []
    if request.method == "POST":
        form.validate()
        errors = list(form.errors.get("new_email", []))
        if not form.current_password.data:
            errors.append(_("Enter your current password."))
        if not errors:
            proof = service.prove_password(user, form.current_password.data)
            errors = proof.errors
            db.session.commit()
            if proof.newly_locked:
                notices.account_locked(user)
        if not errors:
            try:
                change = service.request_email_change(user, form.new_email.data)
            except service.SettingsError as exc:
                errors = [str(exc)]
            else:
                mails = service.queue_email_change(change)
                db.session.commit()
                if outbox.deliver_now(mails):
                    flash(_("We sent a link to %(email)s. Open it to confirm the change.",
                            email=change.new_email))
                else:
                    flash(_("Our mail server is not answering: the link to %(email)s may be "
                            "delayed. It will be sent as soon as the server is back.",
                            email=change.new_email))
                return redirect(url_for("settings.overview"))
    return render_template("accounts/settings_email.html", form=form, errors=errors, user=user,
                           hours=policy().password.reset_link_lifetime // 3600
                           ), 400 if errors else 200


@bp.get("/email/verify/<token>")
@signed_in(back="settings.overview")
def verify_email(sso: SsoSession, token: str) -> Page:
    if not service.confirm_email_change(sso.user, token):
        db.session.rollback()
        return render_template("accounts/settings_email_invalid.html"), 400
    db.session.commit()
    flash(_("Your email address is now %(email)s.", email=sso.user.email))
    return redirect(url_for("settings.overview"))


# -- phone number ------------------------------------------------------------------------------
PHONE_ATTEMPT = "phone_attempt"


def _phone_page(user: User, *, errors: list[str] | None = None, message: str | None = None,
                step: str = "ask") -> tuple[str, int]:
    """The phone page; the code form shows while a code sent from this browser still lives."""
    factor = phones.pending(user)
    attempt = phones.held_attempt(user, session.get(PHONE_ATTEMPT))
    waiting = factor is not None and (step == "confirm" or phones.has_live_code(factor, attempt))
    errors = errors or []
    return render_template(
        "accounts/settings_phone.html", user=user, errors=errors, message=message,
        pending=mask(factor.destination or "") if waiting else None,
        minutes=policy().mfa.code_lifetime // 60), 400 if errors else 200


@bp.route("/phone", methods=["GET", "POST"])
@limiter.limit(_per_ip, methods=["POST"])
@signed_in(back="settings.overview")
def phone(sso: SsoSession) -> Page:
    """A new mobile number: re-authenticate, then a code texted to the new number confirms
    it (mfa.phone_change)."""
    user = sso.user
    if request.method == "GET":
        if phones.expire_stale(user):
            db.session.commit()
        return _phone_page(user)
    step = request.form.get("step")
    if step == "confirm":
        form = PhoneCodeForm()
        form.validate()
        attempt = phones.held_attempt(user, session.get(PHONE_ATTEMPT))
        result = phones.confirm_change(user, attempt, (form.code.data or "")[:16])
        db.session.commit()
        if not result.ok:
            return _phone_page(user, errors=[result.error], step="confirm")
        session.pop(PHONE_ATTEMPT, None)
        phones.send_phone_changed(user, result.masked)
        flash(_("Your phone number is now %(phone)s.", phone=result.masked))
        return redirect(url_for("settings.overview"))
    if step == "resend":
        attempt = phones.attempt_for(user, session.get(PHONE_ATTEMPT))
        sent = phones.resend(user, attempt)
        return _phone_sent(user, attempt, sent)
    form = PhoneChangeForm()
    form.validate()
    errors = list(form.errors.get("phone", []))
    if not (form.phone.data or "").strip():
        errors.append(_("Enter your new mobile phone number."))
    elif not errors:
        try:  # the number's own problems first: they say nothing about the account
            phones.validate_number(user, form.phone.data)
        except phones.PhoneChangeError as exc:
            errors.append(str(exc))
    if not form.current_password.data:
        errors.append(_("Enter your current password."))
    if not errors:
        proof = service.prove_password(user, form.current_password.data)
        errors = proof.errors
        db.session.commit()
        if proof.newly_locked:
            notices.account_locked(user)
    if errors:
        return _phone_page(user, errors=errors)
    attempt = phones.attempt_for(user, session.get(PHONE_ATTEMPT))
    try:
        sent = phones.request_change(user, form.phone.data, attempt)
    except phones.PhoneChangeError as exc:
        db.session.rollback()
        return _phone_page(user, errors=[str(exc)])
    return _phone_sent(user, attempt, sent)


def _phone_sent(user: User, attempt: LoginAttempt, sent: phones.Sent) -> tuple[str, int]:
    if not sent.sent:
        db.session.rollback()  # nothing changes: no pending number, no voided codes
        return _phone_page(user, errors=[sent.message])
    db.session.commit()
    session[PHONE_ATTEMPT] = attempt.id
    return _phone_page(user, message=sent.message, step="confirm")
