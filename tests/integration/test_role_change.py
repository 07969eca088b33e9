"""Admin console role change: POST /admin/users/<id>/role (admin only, CSRF, never one's own
role, only roles of policies/roles.toml), audited `user.role_changed` {"from", "to"} so the
role_holdings report shows both periods; the account is signed out everywhere and its tokens
revoked; a role that is not clinical loses a live EPCS permission."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from idp import clock
from idp.accounts.models import User
from idp.audit.models import AuditEvent
from idp.epcs import service as epcs
from idp.epcs.models import EpcsPermission
from idp.extensions import db
from idp.oidc.models import RefreshToken
from idp.reports import service as reports
from idp.sessions.models import SsoSession
from tests.helpers import csrf_from, login, make_client, make_user

CHANGED = "user.role_changed"


def _signed_in(http, username: str, role: str) -> User:
    user = make_user(username, npi=None, role=role, given_name="Ada", family_name="Root")
    assert login(http, username).status_code == 302
    return user


def _doctor_signed_in_elsewhere(http) -> tuple[User, object]:
    """A physician with a live session in another browser and a live refresh token."""
    doc = make_user()
    rp = make_client()
    db.session.add(RefreshToken(token_hash="r" * 64, family_id="f", client_id=rp.client_id,
                                user_id=doc.id, scope="openid roles", auth_time=clock.now(),
                                issued_at=clock.now(),
                                expires_at=clock.now() + timedelta(days=1)))
    db.session.commit()
    other = http.application.test_client()
    assert login(other).status_code == 302
    assert other.get("/account").status_code == 200
    return doc, other


def _post(http, user: User, role: str | None, *, csrf: bool = True):
    page = http.get(f"/admin/users/{user.id}")
    assert page.status_code == 200
    data = {} if role is None else {"role": role}
    if csrf:
        data["csrf_token"] = csrf_from(page.text)
    return http.post(f"/admin/users/{user.id}/role", data=data)


def _count(event: str = CHANGED) -> int:
    return db.session.execute(select(func.count()).select_from(AuditEvent)
                              .where(AuditEvent.event == event)).scalar_one()


def _role(user: User) -> str:
    db.session.expire_all()
    return db.session.get(User, user.id).role


def test_admin_changes_a_physicians_role(ctx, client):
    doc, other = _doctor_signed_in_elsewhere(client)
    admin = _signed_in(client, "root.admin", "admin")
    page = client.get(f"/admin/users/{doc.id}")
    assert '<option value="physician" selected>' in page.text and "Change role" in page.text
    response = _post(client, doc, "nurse_practitioner")
    assert response.status_code == 302 and "done=role_changed" in response.headers["Location"]
    assert _role(doc) == "nurse_practitioner"
    [event] = db.session.execute(select(AuditEvent).where(AuditEvent.event == CHANGED)
                                 ).scalars().all()
    assert event.user_id == doc.id and event.actor == f"admin:{admin.id}"
    assert event.detail == {"from": "physician", "to": "nurse_practitioner"}
    ended = db.session.execute(select(AuditEvent).where(
        AuditEvent.event == "sessions.ended_all")).scalar_one()
    assert ended.user_id == doc.id and ended.detail["reason"] == "role_changed"
    assert ended.detail["sessions_ended"] == 1
    assert db.session.execute(select(SsoSession).where(
        SsoSession.user_id == doc.id, SsoSession.ended_at.is_(None))).first() is None
    assert other.get("/account").status_code == 302  # signed out
    assert db.session.execute(select(RefreshToken.revoked_at)).scalar_one() is not None
    shown = client.get(response.headers["Location"])
    assert "Role changed" in shown.text and '<option value="nurse_practitioner" selected>' \
        in shown.text
    assert client.get("/admin/").status_code == 200  # the admin's own session is untouched


def test_role_holdings_show_both_periods(ctx, client, frozen):
    doc = make_user()
    doc.created_at = clock.now() - timedelta(days=10)
    db.session.commit()
    _signed_in(client, "root.admin", "admin")
    assert _post(client, doc, "admin_staff").status_code == 302
    at = clock.aware(db.session.execute(select(AuditEvent.at).where(
        AuditEvent.event == CHANGED)).scalar_one())
    frozen.advance(2 * 86400)
    today = clock.now().date()
    span = reports.build("role_holdings", (today - timedelta(days=5)).isoformat(),
                         today.isoformat())
    rows = [r for r in span.rows if r["username"] == doc.username and r["kind"] == "role"]
    assert [(r["value"], r["held_from"], r["held_to"]) for r in rows] == [
        ("physician", clock.aware(doc.created_at), at), ("admin_staff", at, None)]
    after = reports.build("role_holdings", (today - timedelta(days=1)).isoformat(),
                          today.isoformat())
    assert [r["value"] for r in after.rows if r["username"] == doc.username] == ["admin_staff"]


def test_a_security_officer_cannot_change_a_role(ctx, client):
    doc, other = _doctor_signed_in_elsewhere(client)
    _signed_in(client, "sec.officer", "security")
    page = client.get(f"/admin/users/{doc.id}")
    assert page.status_code == 200 and "Change role" not in page.text
    assert _post(client, doc, "admin").status_code == 403
    assert _role(doc) == "physician" and _count() == 0
    assert other.get("/account").status_code == 200
    assert db.session.execute(select(RefreshToken.revoked_at)).scalar_one() is None


def test_an_admin_cannot_change_their_own_role(ctx, client):
    admin = _signed_in(client, "root.admin", "admin")
    response = _post(client, admin, "physician")
    assert response.status_code == 302 and "done=self_role" in response.headers["Location"]
    assert "You cannot change your own role." in client.get(response.headers["Location"]).text
    assert _role(admin) == "admin" and _count() == 0
    assert client.get("/admin/").status_code == 200


def test_an_unknown_or_unchanged_role_is_refused(ctx, client):
    doc, other = _doctor_signed_in_elsewhere(client)
    _signed_in(client, "root.admin", "admin")
    for value, message in (("superuser", "Unknown role: choose one of the roles listed."),
                           ("", "Unknown role: choose one of the roles listed."),
                           (None, "Unknown role: choose one of the roles listed."),
                           ("x" * 5000, "Unknown role: choose one of the roles listed."),
                           ("physician", "The account already holds that role")):
        response = _post(client, doc, value)
        assert response.status_code == 400, value
        assert message in response.text and 'role="alert"' in response.text, value
        assert "superuser" not in response.text  # the value is not echoed
        assert _role(doc) == "physician" and _count() == 0
    assert other.get("/account").status_code == 200
    assert db.session.execute(select(RefreshToken.revoked_at)).scalar_one() is None


def test_a_post_without_the_csrf_token_is_refused(ctx, client):
    doc, other = _doctor_signed_in_elsewhere(client)
    _signed_in(client, "root.admin", "admin")
    assert _post(client, doc, "admin_staff", csrf=False).status_code == 400
    assert _role(doc) == "physician" and _count() == 0
    assert other.get("/account").status_code == 200


def test_a_role_that_cannot_prescribe_loses_the_epcs_permission(ctx, client):
    doc = make_user()
    nurse = make_user("nurse.jo", npi=None, role="nurse_practitioner")
    one = make_user("admin.one", npi=None, role="admin")
    two = make_user("admin.two", npi=None, role="admin")
    proposed = make_user("dr.new", npi=None)
    held = {}
    for user in (doc, nurse, proposed):
        held[user.username] = epcs.propose(user, one)
        if user is not proposed:
            epcs.approve(held[user.username], two)
    db.session.commit()
    assert login(client, "admin.one").status_code == 302
    assert _post(client, nurse, "physician").status_code == 302  # still clinical: kept
    assert _post(client, doc, "admin_staff").status_code == 302
    assert _post(client, proposed, "verifier").status_code == 302
    db.session.expire_all()
    assert db.session.get(EpcsPermission, held["nurse.jo"].id).state == "active"
    assert db.session.get(EpcsPermission, held["dr.new"].id).state == "withdrawn"
    assert _count("epcs.permission_withdrawn") == 1 and _count() == 3
    revoked = db.session.get(EpcsPermission, held["drsmith"].id)
    assert revoked.state == "revoked" and revoked.revoked_by == one.id
    event = db.session.execute(select(AuditEvent).where(
        AuditEvent.event == "epcs.permission_revoked")).scalar_one()
    assert event.user_id == doc.id and event.actor == f"admin:{one.id}"
    assert event.detail == {"permission_id": revoked.id}
    assert not epcs.has_permission(db.session.get(User, doc.id))
