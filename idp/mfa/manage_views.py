"""Account pages for one's own sign-in methods (registered on the mfa blueprint)."""

from __future__ import annotations

from flask import Response, redirect, render_template, request, session, url_for

from idp.extensions import db
from idp.mfa import enrollment, flow, manage
from idp.mfa.blueprint import bp
from idp.mfa.factors.recovery import remaining
from idp.mfa.factors.registry import registry
from idp.sessions import service as sessions
from idp.web.gates import recent_sign_in


@bp.get("/factors")
def factors() -> Response | str:
    sso = sessions.current()
    if sso is None:
        return redirect(url_for("accounts.login", next=request.full_path))
    return render_template("mfa/factors.html", factors=flow.factors(sso.user),
                           remaining=remaining(sso.user),
                           specs=registry().describe(), error=request.args.get("error"))


@bp.post("/factors/<int(max=2147483647):factor_id>/rename")
@recent_sign_in
def rename(factor_id: int) -> Response:
    sso = sessions.current()  # live and recent: idp.web.gates saw to it
    try:
        manage.rename(sso.user, factor_id, request.form.get("label", ""))
    except manage.FactorError as exc:
        return redirect(url_for("mfa.factors", error=str(exc)))
    db.session.commit()
    return redirect(url_for("mfa.factors"))


@bp.post("/factors/<int(max=2147483647):factor_id>/remove")
@recent_sign_in
def remove(factor_id: int) -> Response:
    sso = sessions.current()  # live and recent: idp.web.gates saw to it
    try:
        manage.remove(sso.user, factor_id)
    except manage.FactorError as exc:
        db.session.rollback()
        return redirect(url_for("mfa.factors", error=str(exc)))
    db.session.commit()
    return redirect(url_for("mfa.factors"))


@bp.post("/recovery-codes/new")
@recent_sign_in
def regenerate_recovery_codes() -> Response:
    sso = sessions.current()  # live and recent: idp.web.gates saw to it
    codes = manage.new_recovery_codes(sso.user)
    db.session.commit()
    session[enrollment.CODES_KEY] = codes
    return redirect(url_for("mfa.show_recovery_codes", next=url_for("mfa.factors")))
