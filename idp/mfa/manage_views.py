"""Account pages for one's own sign-in methods (registered on the mfa blueprint)."""

from __future__ import annotations

from flask import Response, redirect, render_template, request, session, url_for

from idp.extensions import db
from idp.mfa import enrollment, flow, manage
from idp.mfa.blueprint import bp
from idp.mfa.factors.recovery import remaining
from idp.mfa.factors.registry import registry
from idp.sessions.models import SsoSession
from idp.web.guards import signed_in


@bp.get("/factors")
@signed_in()
def factors(sso: SsoSession) -> Response | str:
    return render_template("mfa/factors.html", factors=flow.factors(sso.user),
                           remaining=remaining(sso.user),
                           specs=registry().describe(), error=request.args.get("error"))


@bp.post("/factors/<int(max=2147483647):factor_id>/rename")
@signed_in(recent=True)
def rename(sso: SsoSession, factor_id: int) -> Response:
    try:
        manage.rename(sso.user, factor_id, request.form.get("label", ""))
    except manage.FactorError as exc:
        return redirect(url_for("mfa.factors", error=str(exc)))
    db.session.commit()
    return redirect(url_for("mfa.factors"))


@bp.post("/factors/<int(max=2147483647):factor_id>/remove")
@signed_in(recent=True)
def remove(sso: SsoSession, factor_id: int) -> Response:
    try:
        manage.remove(sso.user, factor_id)
    except manage.FactorError as exc:
        db.session.rollback()
        return redirect(url_for("mfa.factors", error=str(exc)))
    db.session.commit()
    return redirect(url_for("mfa.factors"))


@bp.post("/recovery-codes/new")
@signed_in(recent=True)
def regenerate_recovery_codes(sso: SsoSession) -> Response:
    codes = manage.new_recovery_codes(sso.user)
    db.session.commit()
    session[enrollment.CODES_KEY] = codes
    return redirect(url_for("mfa.show_recovery_codes", next=url_for("mfa.factors")))
