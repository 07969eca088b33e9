"""Admin pages."""

from __future__ import annotations

from flask import Response, render_template
from sqlalchemy import select

from idp.admin.access import require_admin
from idp.admin.blueprint import bp
from idp.audit import service as audit
from idp.extensions import db
from idp.notify.models import SmsOutbox


@bp.get("/sms-outbox")
def sms_outbox() -> Response | str:
    """The development SMS gateway's messages (SMS_BACKEND=outbox). Reading it is audited:
    the messages hold sign-in codes."""
    sso = require_admin()
    if isinstance(sso, Response):
        return sso
    rows = db.session.execute(select(SmsOutbox).order_by(SmsOutbox.id.desc()).limit(50)
                              ).scalars().all()
    audit.record("admin.sms_outbox_viewed", user_id=sso.user_id, actor=f"admin:{sso.user_id}")
    db.session.commit()
    return render_template("admin/sms_outbox.html", rows=rows)
