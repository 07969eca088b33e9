"""/admin/reports: the compliance reports as HTML tables, CSV and JSON downloads (roles admin
and security; every view and export audited), and disabling a dormant account (admin)."""

from __future__ import annotations

from flask import Blueprint, Response, abort, jsonify, redirect, render_template, request, url_for

from idp import clock
from idp.admin.access import ADMIN_ROLES, SECURITY_ROLES, actor, require_role
from idp.audit import service as audit
from idp.epcs.forms import ActionForm
from idp.extensions import db
from idp.reports import service
from idp.sessions.models import SsoSession

bp = Blueprint("reports", __name__, url_prefix="/admin/reports")
FORMATS = ("html", "csv", "json")


@bp.get("/")
@require_role(SECURITY_ROLES)
def index(sso: SsoSession) -> Response | str:
    return render_template("reports/index.html", reports=sorted(
        service.REPORTS.values(), key=lambda s: s.title))


@bp.get("/<name>")
@require_role(SECURITY_ROLES)
def show(sso: SsoSession, name: str) -> Response | str | tuple[str, int]:
    fmt = request.args.get("format", "html")
    if fmt not in FORMATS:
        return render_template("admin/message.html", title="Report refused",
                               message="format must be html, csv or json"), 400
    try:
        result = service.build(name[:64], request.args.get("from"), request.args.get("to"))
    except service.ReportError as exc:
        status = 404 if str(exc).startswith("unknown report") else 400
        return render_template("admin/message.html", title="Report refused",
                               message=str(exc)), status
    audit.record("admin.report_viewed" if fmt == "html" else "admin.report_exported",
                 user_id=sso.user_id, actor=actor(sso), report=result.name, format=fmt,
                 range=result.range.as_dict() if result.range else None, rows=len(result.rows))
    db.session.commit()
    stamp = clock.now().strftime("%Y%m%dT%H%M%SZ")
    if fmt == "json":
        response = jsonify(result.as_json())
    elif fmt == "csv":
        response = Response(result.as_csv(), mimetype="text/csv")
    else:
        return render_template("reports/report.html", report=result,
                               args={k: request.args.get(k, "") for k in ("from", "to")},
                               can_disable=sso.user.role in ADMIN_ROLES, form=ActionForm(),
                               done=request.args.get("done"))
    response.headers["Content-Disposition"] = \
        f'attachment; filename="{result.name}-{stamp}.{fmt}"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/dormant_accounts/<int(max=2147483647):user_id>/disable")
@require_role(ADMIN_ROLES)
def disable_dormant(sso: SsoSession, user_id: int) -> Response | tuple[str, int]:
    if not ActionForm().validate_on_submit():
        abort(400)
    if user_id == sso.user_id:
        return render_template("admin/message.html", title="Not disabled",
                               message="You cannot disable your own account."), 400
    if not service.disable_dormant(user_id, actor=actor(sso)):
        db.session.rollback()
        return render_template("admin/message.html", title="Not disabled",
                               message="That account is not dormant (or no longer)."), 409
    db.session.commit()
    return redirect(url_for("reports.show", name="dormant_accounts", done=user_id))
