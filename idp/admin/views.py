"""Admin pages."""

from __future__ import annotations

from flask import Response, render_template
from sqlalchemy import select

from idp.admin.access import require_role
from idp.admin.blueprint import bp
from idp.audit import service as audit
from idp.extensions import db
from idp.notify.models import SmsOutbox
from idp.sessions.models import SsoSession


@bp.get("/sms-outbox")
@require_role()
def sms_outbox(sso: SsoSession) -> Response | str:
    """The development SMS gateway's messages (SMS_BACKEND=outbox). Reading it is audited:
    the messages hold sign-in codes."""
    rows = db.session.execute(select(SmsOutbox).order_by(SmsOutbox.id.desc()).limit(50)
                              ).scalars().all()
    audit.record("admin.sms_outbox_viewed", user_id=sso.user_id, actor=f"admin:{sso.user_id}")
    db.session.commit()
    return render_template("admin/sms_outbox.html", rows=rows)
