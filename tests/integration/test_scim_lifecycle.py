"""Joiners, movers and leavers over SCIM, against a real database and a real SMTP server:
the joiner's welcome mail and first sign-in through second-factor enrolment; the mover's role
change (audited with the token's name, sessions ended, refresh tokens revoked, EPCS
withdrawn when the new role is not clinical); the leaver's termination (sessions, tokens,
reset links and pending mails)."""

from __future__ import annotations

import re
from datetime import timedelta

import pyotp
from sqlalchemy import func, select

from idp import clock
from idp.accounts.models import User
from idp.audit.models import AuditEvent
from idp.epcs.models import EpcsPermission
from idp.extensions import db
from idp.notify.models import MailOutbox
from idp.oidc.models import RefreshToken
from idp.sessions.models import SsoSession
from tests.conftest import TEST_ISSUER
from tests.helpers import csrf_from, login, make_client, make_user
from tests.integration.scim_helpers import PATCH_OP, Scim, make_token

CORE = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
LINK = re.compile(re.escape(TEST_ISSUER) + r"(/password/reset/[A-Za-z0-9_-]+)")
CHOSEN = "Granite-Orchid-Velvet-93?"


def _events(name: str) -> list[AuditEvent]:
    return list(db.session.execute(select(AuditEvent).where(AuditEvent.event == name)
                                   .order_by(AuditEvent.seq)).scalars())


def test_joiner_welcome_mail_then_first_sign_in_enrols_a_factor(ctx, client, mailbox):
    scim = Scim(client, make_token("Workday via Entra"))
    made = scim("POST", "/Users", {"schemas": [CORE], "userName": "new.joiner",
                                   "name": {"givenName": "Nia", "familyName": "Joiner"},
                                   "emails": [{"value": "nia@hospital.example", "type": "work",
                                               "primary": True}]})
    assert made.status_code == 201, made.get_data(as_text=True)
    [mail] = mailbox.to("nia@hospital.example")
    assert mail["Subject"] == "Your account is ready: choose your password"
    body = mailbox.body(mail)
    assert "new.joiner" in body and "second factor" in body
    path = LINK.search(body).group(1)
    page = client.get(path)
    assert page.status_code == 200
    chosen = client.post(path, data={"new_password": CHOSEN, "confirm_password": CHOSEN,
                                     "csrf_token": csrf_from(page.text)})
    assert chosen.status_code == 200, chosen.text
    # First sign-in: password, then enrolment of a second factor before anything else.
    signed = login(client, "new.joiner", CHOSEN, mfa=False)
    assert signed.headers["Location"] == "/mfa/challenge"
    assert client.get("/mfa/challenge").headers["Location"] == "/mfa/enroll"
    enrol = client.get("/mfa/enroll/totp")
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', enrol.text).group(1)
    done = client.post("/mfa/enroll/totp", data={"code": pyotp.TOTP(secret).at(clock.now()),
                                                "csrf_token": csrf_from(enrol.text)})
    assert done.headers["Location"].startswith("/mfa/recovery-codes")
    assert client.get(done.headers["Location"]).status_code == 200
    account = client.get("/account")
    if account.status_code == 302:  # today's acknowledgment first
        assert "/account/acknowledge" in account.headers["Location"]
    else:
        assert account.status_code == 200
    [created] = _events("scim.user_created")
    assert created.actor == "scim:Workday via Entra"


def test_joiner_with_a_password_gets_no_mail(ctx, client, mailbox):
    scim = Scim(client, make_token("okta"))
    made = scim("POST", "/Users", {"schemas": [CORE], "userName": "with.password",
                                   "password": CHOSEN,
                                   "emails": [{"value": "wp@hospital.example"}]})
    assert made.status_code == 201
    assert mailbox.to("wp@hospital.example") == []
    assert login(client, "with.password", CHOSEN, mfa=False).headers["Location"] == \
        "/mfa/challenge"


def _physician_with_epcs_signed_in_elsewhere(app) -> tuple[User, object]:
    doc = make_user()
    rp = make_client()
    now = clock.now()
    db.session.add(RefreshToken(token_hash="r" * 64, family_id="f", client_id=rp.client_id,
                                user_id=doc.id, scope="openid roles", auth_time=now,
                                issued_at=now, expires_at=now + timedelta(days=1)))
    db.session.add(EpcsPermission(user_id=doc.id, proposed_by=doc.id, proposed_at=now,
                                  approved_by=doc.id, approved_at=now))
    db.session.commit()
    other = app.test_client()
    assert login(other).status_code == 302
    assert other.get("/account").status_code == 200
    return doc, other


def test_mover_group_membership_changes_the_role(app, ctx, client):
    doc, other = _physician_with_epcs_signed_in_elsewhere(app)
    scim = Scim(client, make_token("HR"))
    uid = doc.subject
    made = scim("POST", "/Groups", {"schemas": [GROUP], "displayName": "Administrative staff",
                                    "members": [{"value": uid}]})
    assert made.status_code == 201, made.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(User, doc.id).role == "admin_staff"
    [moved] = _events("user.role_changed")
    assert moved.actor == "scim:HR" and moved.detail["token_name"] == "HR"
    assert (moved.detail["from"], moved.detail["to"]) == ("physician", "admin_staff")
    [ended] = _events("sessions.ended_all")
    assert ended.detail["reason"] == "role_changed" and ended.detail["sessions_ended"] == 1
    assert other.get("/account").status_code == 302  # signed out
    assert db.session.execute(select(RefreshToken.revoked_at)).scalar_one() is not None
    permission = db.session.execute(select(EpcsPermission)).scalar_one()
    assert permission.revoked_at is not None
    [withdrawn] = _events("epcs.permission_revoked")
    assert withdrawn.actor == "scim:HR"


def test_mover_to_a_clinical_role_keeps_epcs(app, ctx, client):
    doc, other = _physician_with_epcs_signed_in_elsewhere(app)
    doc.license_state, doc.license_number = "CA", "A12345"
    doc.license_expires = clock.now().date() + timedelta(days=300)
    db.session.commit()
    scim = Scim(client, make_token("HR"))
    clinician = "urn:healthidp:scim:schemas:extension:clinician:2.0:User"
    moved = scim("PATCH", f"/Users/{doc.subject}", {"schemas": [PATCH_OP], "Operations": [
        {"op": "replace", "path": f"{clinician}:role", "value": "nurse_practitioner"}]})
    assert moved.status_code == 200, moved.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(User, doc.id).role == "nurse_practitioner"
    assert db.session.execute(select(EpcsPermission.revoked_at)).scalar_one() is None
    assert other.get("/account").status_code == 302  # sessions end on any role change


def test_leaver_ends_everything_and_cancels_mail(app, ctx, client, mailbox):
    doc, other = _physician_with_epcs_signed_in_elsewhere(app)
    scim = Scim(client, make_token("HR"))
    # A reset link and a mail still waiting in the outbox.
    forgot = client.get("/password/forgot")
    client.post("/password/forgot", data={"identifier": doc.username,
                                          "csrf_token": csrf_from(forgot.text)})
    [reset_mail] = mailbox.to(doc.email)
    path = LINK.search(mailbox.body(reset_mail)).group(1)
    db.session.add(MailOutbox(recipient=doc.email, subject="queued", body="x",
                              created_at=clock.now(), attempts=1,
                              next_attempt_at=clock.now() + timedelta(hours=1)))
    db.session.commit()
    assert scim("DELETE", f"/Users/{doc.subject}").status_code == 204
    db.session.expire_all()
    assert db.session.get(User, doc.id).disabled
    assert db.session.execute(select(func.count()).select_from(SsoSession).where(
        SsoSession.user_id == doc.id, SsoSession.ended_at.is_(None))).scalar_one() == 0
    assert other.get("/account").status_code == 302
    assert db.session.execute(select(RefreshToken.revoked_at)).scalar_one() is not None
    assert client.get(path).status_code in (400, 404)  # the reset link no longer works
    queued = db.session.execute(select(MailOutbox).where(MailOutbox.subject == "queued")
                                ).scalar_one()
    assert queued.abandoned_at is not None and queued.body is None
    [terminated] = _events("user.terminated")
    assert terminated.actor == "scim:HR" and terminated.detail["reason"] == "deleted"
    assert terminated.detail["mails_cancelled"] == 1
    refused = login(client)
    assert refused.status_code == 401 and "password is not right" in refused.text


def test_group_mapped_to_a_facility(app, ctx, client):
    import dataclasses

    from idp.policy import ScimGroup

    original = app.extensions["idp"].policy
    mapped = ScimGroup("general", "General Hospital staff", None, "General Hospital")
    app.extensions["idp"].policy = dataclasses.replace(original, scim=dataclasses.replace(
        original.scim, groups={**original.scim.groups, "general": mapped}))
    try:
        scim = Scim(client, make_token("HR"))
        uid = scim("POST", "/Users", {"schemas": [CORE], "userName": "fac.member",
                                      "emails": [{"value": "fm@hospital.example"}]}
                   ).get_json(force=True)["id"]
        made = scim("POST", "/Groups", {"schemas": [GROUP],
                                        "displayName": "general hospital staff",
                                        "members": [{"value": uid}]})
        assert made.status_code == 201, made.get_data(as_text=True)
        db.session.expire_all()
        user = db.session.execute(select(User).where(User.subject == uid)).scalar_one()
        assert user.facility == "General Hospital" and user.role == "admin_staff"
        gid = made.get_json(force=True)["id"]
        assert scim("PATCH", f"/Groups/{gid}", {"schemas": [PATCH_OP], "Operations": [
            {"op": "remove", "path": f'members[value eq "{uid}"]'}]}).status_code == 200
        db.session.expire_all()
        assert db.session.get(User, user.id).facility is None
        changes = [(e.detail["from"], e.detail["to"]) for e in _events("scim.facility_changed")]
        assert changes == [(None, "General Hospital"), ("General Hospital", None)]
    finally:
        app.extensions["idp"].policy = original
