"""The SMS outbox page: admins with a second factor only; reading it is audited."""

from idp import clock
from idp.audit.models import AuditEvent
from idp.extensions import db
from idp.notify.models import SmsOutbox
from tests.helpers import login, make_user


def _message() -> None:
    db.session.add(SmsOutbox(to="+12025550123", body="Your code is 123456", created_at=clock.now()))
    db.session.commit()


def test_admin_reads_the_outbox(ctx, client):
    make_user("idp.admin", npi=None, role="admin")
    _message()
    login(client, "idp.admin")
    page = client.get("/admin/sms-outbox")
    assert page.status_code == 200 and "Your code is 123456" in page.text
    assert db.session.query(AuditEvent).filter_by(event="admin.sms_outbox_viewed").count() == 1


def test_others_cannot(ctx, client):
    make_user()
    _message()
    assert client.get("/admin/sms-outbox").status_code == 302  # not signed in
    login(client)
    page = client.get("/admin/sms-outbox")
    assert page.status_code == 403 and "123456" not in page.text
