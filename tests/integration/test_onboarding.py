"""Provider onboarding against a real database and real SMTP: the application form and its
refusals (check digit, duplicate NPI, expired license, throttles), email verification,
the review queue (roles, filters, SLA flag, approve / reject / ask, four-eyes), facilities,
the license-expiry job and the claims of an approved account."""

from __future__ import annotations

import dataclasses
import re
from datetime import date, timedelta

import pytest
from sqlalchemy import select

from idp import clock
from idp.accounts.models import User
from idp.audit.models import AuditEvent
from idp.context import runtime
from idp.core.crypto import digest
from idp.extensions import db
from idp.oidc.claims import user_claims
from idp.onboarding import service
from idp.onboarding.models import Application, ApplicationLink, Department, Facility
from tests.helpers import csrf_from, login, make_user

NPI = "1245319599"
OTHER_NPI = "1679576722"
NEXT_YEAR = (date.today() + timedelta(days=365)).isoformat()


@pytest.fixture
def facility(ctx) -> Facility:
    item = Facility(name="General Hospital", active=True, created_at=clock.now())
    db.session.add(item)
    db.session.flush()
    db.session.add(Department(facility_id=item.id, name="Cardiology"))
    db.session.add(Facility(name="Riverside Clinic", active=True, created_at=clock.now()))
    db.session.commit()
    return item


def _form(facility: Facility, **changes) -> dict[str, str]:
    department = facility.departments[0]
    data = {"given_name": "Maria", "family_name": "Lopez", "email": "maria@clinic.example",
            "phone": "+1 650 253 0000", "role": "physician", "npi": NPI,
            "license_state": "CA", "license_number": "A123456", "license_expires": NEXT_YEAR,
            "facility_id": str(facility.id), "department_id": str(department.id)}
    data.update(changes)
    return data


def _apply(client, data: dict[str, str]):
    page = client.get("/onboarding/apply")
    assert page.status_code == 200
    return client.post("/onboarding/apply", data={**data, "csrf_token": csrf_from(page.text)})


def _link(mailbox, address: str, kind: str) -> str:
    message = [m for m in mailbox.to(address)][-1]
    body = mailbox.body(message)
    found = re.search(r"http://idp\.test/onboarding/" + kind + r"/[A-Za-z0-9_-]+", body)
    assert found, body
    return found.group(0).removeprefix("http://idp.test")


def _applied_and_verified(client, mailbox, facility, **changes) -> Application:
    response = _apply(client, _form(facility, **changes))
    assert response.status_code == 200, response.text
    path = _link(mailbox, changes.get("email", "maria@clinic.example"), "verify")
    page = client.get(path)
    assert page.status_code == 200 and "Confirm my email" in page.text
    done = client.post(path, data={"csrf_token": csrf_from(page.text)})
    assert done.status_code == 200 and "Application received" in done.text
    db.session.expire_all()
    return db.session.execute(select(Application).order_by(Application.id.desc())).scalars().first()


def _reviewer(app, username: str = "v.one", role: str = "verifier"):
    http = app.test_client()
    make_user(username, npi=None, role=role, given_name="Vera", family_name="Checker")
    assert login(http, username).status_code == 302
    return http


# -- the form --------------------------------------------------------------------------------
def test_login_page_links_to_the_registration(client):
    page = client.get("/login")
    assert '<a href="/onboarding/apply">New Provider Registration</a>' in page.text


def test_form_offers_the_applicable_roles_and_active_facilities(client, facility):
    db.session.add(Facility(name="Closed Annex", active=False, created_at=clock.now()))
    db.session.commit()
    page = client.get("/onboarding/apply").text
    for label in ("Physician", "Nurse practitioner", "Administrative staff",
                  "General Hospital", "Riverside Clinic", "General Hospital · Cardiology",
                  "Puerto Rico", "Guam"):
        assert label in page
    assert "Closed Annex" not in page and "IdP administrator" not in page
    assert 'value="verifier"' not in page and 'name="csrf_token"' in page


def test_application_waits_for_the_email_link_then_enters_the_queue(client, mailbox, facility):
    response = _apply(client, _form(facility))
    assert response.status_code == 200 and "Check your email" in response.text
    item = db.session.execute(select(Application)).scalar_one()
    assert item.status == "email_pending" and item.phone == "+16502530000"
    message = mailbox.to("maria@clinic.example")[-1]
    assert message["Subject"] == "Confirm your email to complete your provider registration"
    body = mailbox.body(message)
    assert "Hello Maria Lopez" in body and "within 24 hours" in body
    path = _link(mailbox, "maria@clinic.example", "verify")
    token = path.rsplit("/", 1)[1]
    link = db.session.execute(select(ApplicationLink)).scalar_one()
    assert link.token_hash == digest(token) and token not in link.token_hash  # hash only
    assert (link.expires_at - clock.now()).total_seconds() == pytest.approx(86400, abs=60)

    page = client.get(path)  # a GET (mail scanner) does not use the link up
    assert page.status_code == 200
    db.session.expire_all()
    assert db.session.get(Application, item.id).status == "email_pending"
    done = client.post(path, data={"csrf_token": csrf_from(page.text)})
    assert done.status_code == 200
    db.session.expire_all()
    item = db.session.get(Application, item.id)
    assert item.status == "pending" and item.submitted_at is not None
    assert item.registry_result["note"] == "no registry configured"
    # single use
    assert client.get(path).status_code == 404
    again = client.post(path, data={"csrf_token": csrf_from(page.text)})
    assert again.status_code == 404 and "cannot be used" in again.text
    events = [e.event for e in service.events(item)]
    assert events == ["onboarding.applied", "onboarding.email_verified"]


def test_email_link_expires_after_24_hours(client, mailbox, facility, frozen):
    _apply(client, _form(facility))
    path = _link(mailbox, "maria@clinic.example", "verify")
    frozen.advance(86400 + 1)
    assert client.get(path).status_code == 404


@pytest.mark.parametrize("changes, field, words", [
    ({"npi": "1245319598"}, "npi", "check digit"),
    ({"npi": "12345"}, "npi", "exactly 10 digits"),
    ({"license_expires": (date.today() - timedelta(days=1)).isoformat()}, "license_expires",
     "expired"),
    ({"license_expires": date.today().isoformat()}, "license_expires", "expired"),
    ({"license_state": ""}, "license_state", "state or territory"),
    ({"license_number": "12"}, "license_number", "California license number"),
    ({"license_expires": ""}, "license_expires", "date your license expires"),
    ({"license_expires": "next june"}, "license_expires", "such as 2027-06-30"),
    ({"email": "maria"}, "email", "email address such as"),
    ({"phone": "12"}, "phone", "phone number"),
    ({"role": "admin"}, "role", "Choose the role"),
    ({"facility_id": "999"}, "facility_id", "Choose the facility"),
    ({"facility_id": "x"}, "facility_id", "Choose the facility"),
    ({"given_name": ""}, "given_name", "first name"),
])
def test_each_field_refusal_has_a_readable_message(client, mailbox, facility, changes, field,
                                                   words):
    response = _apply(client, _form(facility, **changes))
    assert response.status_code == 400
    match = re.search(rf'id="{field}-error"><span class="visually-hidden">Error: </span>'
                      r'([^<]+)<', response.text)
    assert match and words in match.group(1).replace("&#39;", "'"), response.text[-3000:]
    # WCAG: the field names its error (and hint) and is marked invalid; one alert, the summary,
    # which takes the focus and links to the field.
    control = re.search(rf'<(?:input|select)[^>]*\bid="{field}"[^>]*>', response.text).group(0)
    assert 'aria-invalid="true"' in control and f"{field}-error" in re.search(
        r'aria-describedby="([^"]+)"', control).group(1)
    assert response.text.count('role="alert"') == 1
    assert re.search(r'id="error-summary" role="alert" tabindex="-1" autofocus', response.text)
    assert f'href="#{field}"' in response.text
    assert db.session.execute(select(Application)).first() is None
    assert mailbox.messages == []


def test_license_not_required_for_administrative_staff(client, mailbox, facility):
    response = _apply(client, _form(facility, role="admin_staff", license_state="",
                                    license_number="", license_expires=""))
    assert response.status_code == 200, response.text


def test_duplicate_npi_is_refused_without_saying_whose(client, mailbox, facility):
    make_user("dr.owner", npi=NPI, given_name="Olivia", family_name="Owner")
    response = _apply(client, _form(facility))
    assert response.status_code == 400
    assert "already belongs to an account or to an application" in response.text
    assert "Olivia" not in response.text and "dr.owner" not in response.text
    assert "Owner" not in response.text and "owner@" not in response.text


def test_npi_of_a_pending_application_is_refused(client, mailbox, facility):
    assert _apply(client, _form(facility)).status_code == 200  # waiting for its email link
    again = _apply(client, _form(facility, email="someone@else.example", given_name="Eve"))
    assert again.status_code == 400 and "already belongs" in again.text
    # nothing of the other application shows (its name, address, phone)
    assert "Maria " not in again.text and "maria@" not in again.text
    assert "253" not in again.text.replace('value="+1 650 253 0000"', "")


def test_throttle_per_ip_answers_429_with_a_readable_page(client, mailbox, facility):
    limit = int(service.rules().apply_per_ip_limit.split()[0])
    for n in range(limit):
        response = _apply(client, _form(facility, npi="1234567890", email=f"a{n}@x.example"))
        assert response.status_code == 400  # refused, but counted
    blocked = _apply(client, _form(facility, email="new@x.example"))
    assert blocked.status_code == 429
    assert "Too many applications" in blocked.text and "try again" in blocked.text
    assert db.session.execute(select(Application)).first() is None


def test_throttle_per_email(app, mailbox, facility):
    limit = int(service.rules().apply_per_email_limit.split()[0])
    for _ in range(limit):
        http = app.test_client()
        response = _apply(http, _form(facility, npi="1234567890"))
        assert response.status_code == 400
    other_ip = app.test_client()
    page = other_ip.get("/onboarding/apply")
    blocked = other_ip.post("/onboarding/apply", environ_base={"REMOTE_ADDR": "10.9.9.9"},
                            data={**_form(facility), "csrf_token": csrf_from(page.text)})
    assert blocked.status_code == 429 and "Too many applications" in blocked.text
    fresh = other_ip.post("/onboarding/apply", environ_base={"REMOTE_ADDR": "10.9.9.9"},
                          data={**_form(facility, email="other@clinic.example"),
                                "csrf_token": csrf_from(page.text)})
    assert fresh.status_code == 200


def test_form_without_csrf_token_is_refused(client, facility):
    response = client.post("/onboarding/apply", data=_form(facility))
    assert response.status_code == 400
    assert db.session.execute(select(Application)).first() is None


# -- the queue -------------------------------------------------------------------------------
def test_non_verifier_gets_403_and_anonymous_is_sent_to_sign_in(app, client, facility):
    assert client.get("/admin/verifications").status_code == 302
    clinician = app.test_client()
    make_user("dr.clinic")
    assert login(clinician, "dr.clinic").status_code == 302
    assert clinician.get("/admin/verifications").status_code == 403
    assert clinician.get("/admin/facilities").status_code == 403
    security = _reviewer(app, "sec.officer", role="security")
    assert security.get("/admin/verifications").status_code == 403
    verifier = _reviewer(app)
    assert verifier.get("/admin/verifications").status_code == 200
    assert verifier.get("/admin/facilities").status_code == 403  # admins only


def test_unverified_application_is_not_in_the_queue_and_cannot_be_approved(app, client,
                                                                          mailbox, facility):
    _apply(client, _form(facility))
    item = db.session.execute(select(Application)).scalar_one()
    verifier = _reviewer(app)
    queue = verifier.get("/admin/verifications?status=")
    assert "Maria Lopez" not in queue.text and "No application matches" in queue.text
    assert verifier.get(f"/admin/verifications/{item.id}").status_code == 404
    page = verifier.get("/onboarding/apply")  # any form of the session: its CSRF token
    response = verifier.post(f"/admin/verifications/{item.id}/approve", data={
        "role": "physician", "facility_id": facility.id, "csrf_token": csrf_from(page.text)})
    assert response.status_code == 404
    with pytest.raises(service.OnboardingError, match="not confirmed their email"):
        service.approve(item, db.session.execute(select(User).where(
            User.username == "v.one")).scalar_one(), "physician", facility.id, None)
    db.session.rollback()
    assert db.session.execute(select(User).where(User.npi == NPI)).first() is None


def test_queue_lists_age_sla_flag_and_filters(app, client, mailbox, facility, frozen):
    item = _applied_and_verified(client, mailbox, facility)
    other = _applied_and_verified(client, mailbox, facility, npi=OTHER_NPI, role="admin_staff",
                                  email="sam@clinic.example", given_name="Sam",
                                  license_state="", license_number="", license_expires="",
                                  facility_id=str(db.session.execute(select(Facility.id).where(
                                      Facility.name == "Riverside Clinic")).scalar_one()),
                                  department_id="")
    verifier = _reviewer(app)
    page = verifier.get("/admin/verifications").text
    assert "Maria Lopez" in page and "Sam Lopez" in page and "past SLA" not in page
    frozen.advance(service.rules().sla + 3600)
    verifier = _reviewer(app, "v.two")  # sign in again: time moved past the re-auth window
    page = verifier.get("/admin/verifications").text
    assert page.count("past SLA") == 2 and "49 h" in page
    only_np = verifier.get("/admin/verifications?role=admin_staff").text
    assert "Sam Lopez" in only_np and "Maria Lopez" not in only_np
    by_facility = verifier.get(f"/admin/verifications?facility={facility.id}").text
    assert "Maria Lopez" in by_facility and "Sam Lopez" not in by_facility
    assert "Maria Lopez" not in verifier.get("/admin/verifications?status=approved").text
    assert verifier.get("/admin/verifications?status=bogus&facility=x").status_code == 200
    detail = verifier.get(f"/admin/verifications/{item.id}").text
    assert "no registry configured" in detail and "onboarding.email_verified" in detail
    assert other.id != item.id


def test_approval_creates_the_account_and_mails_temporary_credentials(app, client, mailbox,
                                                                      facility):
    item = _applied_and_verified(client, mailbox, facility)
    verifier = _reviewer(app)
    page = verifier.get(f"/admin/verifications/{item.id}")
    assert page.status_code == 200
    response = verifier.post(f"/admin/verifications/{item.id}/approve", data={
        "role": "nurse_practitioner", "facility_id": str(facility.id),
        "department_id": str(facility.departments[0].id), "csrf_token": csrf_from(page.text)})
    assert response.status_code == 302
    db.session.expire_all()
    user = db.session.execute(select(User).where(User.npi == NPI)).scalar_one()
    assert user.username == "maria.lopez" and user.role == "nurse_practitioner"
    assert (user.facility, user.department) == ("General Hospital", "Cardiology")
    assert (user.license_state, user.license_number) == ("CA", "A123456")
    assert user.license_expires.isoformat() == NEXT_YEAR
    assert user.must_change_password and user.email_verified
    assert (user.temporary_password_expires_at - clock.now()).total_seconds() == \
        pytest.approx(72 * 3600, abs=60)
    item = db.session.get(Application, item.id)
    assert item.status == "approved" and item.user_id == user.id

    message = mailbox.to("maria@clinic.example")[-1]
    assert message["Subject"] == "Your provider account is ready"
    body = mailbox.body(message)
    assert "Username: maria.lopez" in body and "http://idp.test/login" in body
    assert "72 hours" in body
    password = re.search(r"Temporary password: (\S+)", body).group(1)
    assert password not in str([e.detail for e in db.session.execute(
        select(AuditEvent)).scalars()])

    applicant = app.test_client()
    signed = login(applicant, "maria.lopez", password, mfa=False)
    assert signed.status_code == 302 and signed.headers["Location"] == "/mfa/challenge"
    assert [e.event for e in service.events(item)][-1] == "onboarding.approved"

    claims = user_claims(user, "openid npi roles")
    assert claims["npi"] == NPI and claims["license_state"] == "CA"
    assert claims["roles"] == ["nurse_practitioner"]
    assert (claims["facility"], claims["department"]) == ("General Hospital", "Cardiology")

    # decided: no second decision
    again = verifier.post(f"/admin/verifications/{item.id}/reject", data={
        "reason": "x", "csrf_token": csrf_from(page.text)})
    assert again.status_code == 409 and "already approved" in again.text


def test_expired_license_cannot_be_approved(app, client, mailbox, facility, frozen):
    item = _applied_and_verified(client, mailbox, facility,
                                 license_expires=(date.today() + timedelta(days=2)).isoformat())
    frozen.advance(3 * 86400)
    verifier = _reviewer(app)
    page = verifier.get(f"/admin/verifications/{item.id}")
    response = verifier.post(f"/admin/verifications/{item.id}/approve", data={
        "role": "physician", "facility_id": str(facility.id), "csrf_token": csrf_from(page.text)})
    assert response.status_code == 409 and "license has expired" in response.text
    assert db.session.execute(select(User).where(User.npi == NPI)).first() is None


def test_reject_emails_the_reason(app, client, mailbox, facility):
    item = _applied_and_verified(client, mailbox, facility)
    verifier = _reviewer(app)
    page = verifier.get(f"/admin/verifications/{item.id}")
    empty = verifier.post(f"/admin/verifications/{item.id}/reject",
                          data={"reason": "", "csrf_token": csrf_from(page.text)})
    assert empty.status_code == 400 and "reason" in empty.text
    response = verifier.post(f"/admin/verifications/{item.id}/reject", data={
        "reason": "The license number is not on the California board's register.",
        "csrf_token": csrf_from(page.text)})
    assert response.status_code == 302
    message = mailbox.to("maria@clinic.example")[-1]
    assert message["Subject"] == "Your provider registration"
    assert "not on the California board's register" in mailbox.body(message)
    db.session.expire_all()
    assert db.session.get(Application, item.id).status == "rejected"
    assert "onboarding.rejected" in [e.event for e in service.events(item)]


def test_more_information_then_the_applicant_answers_through_the_link(app, client, mailbox,
                                                                      facility):
    item = _applied_and_verified(client, mailbox, facility)
    verifier = _reviewer(app)
    page = verifier.get(f"/admin/verifications/{item.id}")
    response = verifier.post(f"/admin/verifications/{item.id}/request-info", data={
        "question": "Please send a scan of your DEA registration.",
        "csrf_token": csrf_from(page.text)})
    assert response.status_code == 302
    message = mailbox.to("maria@clinic.example")[-1]
    assert message["Subject"] == "More information needed for your provider registration"
    assert "scan of your DEA registration" in mailbox.body(message)
    path = _link(mailbox, "maria@clinic.example", "reply")
    db.session.expire_all()
    assert db.session.get(Application, item.id).status == "info_requested"

    applicant = app.test_client()
    form = applicant.get(path)
    assert form.status_code == 200 and "scan of your DEA registration" in form.text
    assert applicant.post(path, data={"reply": "", "csrf_token": csrf_from(form.text)}
                          ).status_code == 400
    sent = applicant.post(path, data={"reply": "Attached: DEA FL1234563, valid to 2028.",
                                      "csrf_token": csrf_from(form.text)})
    assert sent.status_code == 200 and "Answer sent" in sent.text
    assert applicant.get(path).status_code == 404  # single use
    db.session.expire_all()
    item = db.session.get(Application, item.id)
    assert item.status == "pending"
    detail = verifier.get(f"/admin/verifications/{item.id}").text
    assert "DEA FL1234563" in detail and "onboarding.applicant_replied" in detail


def test_four_eyes_for_administrative_roles(app, client, mailbox, facility):
    item = _applied_and_verified(client, mailbox, facility, role="admin_staff",
                                 license_state="", license_number="", license_expires="")
    first = _reviewer(app, "v.one")
    page = first.get(f"/admin/verifications/{item.id}")
    assert "needs two approvals" in page.text
    data = {"role": "admin_staff", "facility_id": str(facility.id),
            "csrf_token": csrf_from(page.text)}
    assert first.post(f"/admin/verifications/{item.id}/approve", data=data).status_code == 302
    db.session.expire_all()
    assert db.session.get(Application, item.id).status == "pending"
    assert db.session.execute(select(User).where(User.npi == NPI)).first() is None
    assert "First approval recorded" in first.get(
        f"/admin/verifications/{item.id}?done=first").text

    same = first.post(f"/admin/verifications/{item.id}/approve", data=data)
    assert same.status_code == 409 and "different verifier" in same.text
    db.session.expire_all()
    assert db.session.execute(select(User).where(User.npi == NPI)).first() is None

    second = _reviewer(app, "v.two")
    page = second.get(f"/admin/verifications/{item.id}")
    response = second.post(f"/admin/verifications/{item.id}/approve",
                           data={**data, "csrf_token": csrf_from(page.text)})
    assert response.status_code == 302
    db.session.expire_all()
    user = db.session.execute(select(User).where(User.npi == NPI)).scalar_one()
    assert user.role == "admin_staff"
    assert [e.event for e in service.events(item)][-2:] == [
        "onboarding.first_approval", "onboarding.approved"]


def test_clinical_role_needs_only_one_approval(app, client, mailbox, facility):
    item = _applied_and_verified(client, mailbox, facility)
    verifier = _reviewer(app)
    page = verifier.get(f"/admin/verifications/{item.id}")
    verifier.post(f"/admin/verifications/{item.id}/approve", data={
        "role": "physician", "facility_id": str(facility.id), "csrf_token": csrf_from(page.text)})
    db.session.expire_all()
    assert db.session.get(Application, item.id).status == "approved"


# -- facilities ------------------------------------------------------------------------------
def test_admin_maintains_facilities_and_departments_audited(app, facility):
    admin = _reviewer(app, "root.admin", role="admin")
    page = admin.get("/admin/facilities")
    assert page.status_code == 200 and "General Hospital" in page.text
    token = csrf_from(page.text)
    assert admin.post("/admin/facilities", data={"name": "North Campus", "csrf_token": token}
                      ).status_code == 302
    assert admin.post("/admin/facilities", data={"name": "North Campus", "csrf_token": token}
                      ).status_code == 409
    north = db.session.execute(select(Facility).where(Facility.name == "North Campus")
                               ).scalar_one()
    assert admin.post(f"/admin/facilities/{north.id}/rename",
                      data={"name": "North Campus Hospital", "csrf_token": token}
                      ).status_code == 302
    assert admin.post(f"/admin/facilities/{north.id}/departments",
                      data={"name": "Oncology", "csrf_token": token}).status_code == 302
    assert admin.post(f"/admin/facilities/{facility.id}/deactivate",
                      data={"csrf_token": token}).status_code == 302
    assert admin.post(f"/admin/facilities/{north.id}/explode",
                      data={"csrf_token": token}).status_code == 404
    assert admin.post(f"/admin/facilities/{north.id}/departments",
                      data={"name": "Oncology"}).status_code == 400  # no CSRF token
    db.session.expire_all()
    north = db.session.get(Facility, north.id)
    assert north.name == "North Campus Hospital" and [d.name for d in north.departments] == \
        ["Oncology"]
    assert not db.session.get(Facility, facility.id).active
    events = [e.event for e in db.session.execute(select(AuditEvent).where(
        AuditEvent.event.like("admin.%acilit%") | AuditEvent.event.like("admin.department%"))
        .order_by(AuditEvent.seq)).scalars()]
    assert events == ["admin.facility_created", "admin.facility_renamed",
                      "admin.department_added", "admin.facility_deactivated"]
    form = app.test_client().get("/onboarding/apply").text
    assert "North Campus Hospital" in form and "General Hospital" not in form


# -- license expiry --------------------------------------------------------------------------
def test_check_licenses_warns_once_then_suspends_the_clinical_role(ctx, mailbox, frozen):
    today = clock.now().date()
    soon = make_user("dr.soon", npi=NPI, license_state="CA")
    soon.license_expires = today + timedelta(days=20)
    later = make_user("dr.later", npi=OTHER_NPI, license_state="CA")
    later.license_expires = today + timedelta(days=200)
    staff = make_user("staff.one", npi=None, role="admin_staff")
    staff.license_expires = today - timedelta(days=1)  # not clinical: left alone
    db.session.commit()

    run = service.check_licenses()
    db.session.commit()
    assert [u.username for u in run.warned] == ["dr.soon"] and run.suspended == []
    assert [u.username for u in service.check_licenses().warned] == []  # once
    db.session.commit()

    frozen.advance(21 * 86400)
    run = service.check_licenses()
    db.session.commit()
    assert [u.username for u in run.suspended] == ["dr.soon"]
    user = db.session.execute(select(User).where(User.username == "dr.soon")).scalar_one()
    assert user.clinical_suspended
    assert "roles" not in user_claims(user, "openid roles npi")
    assert user_claims(user, "openid npi")["npi"] == NPI
    assert service.check_licenses().suspended == []
    staff_claims = user_claims(db.session.execute(select(User).where(
        User.username == "staff.one")).scalar_one(), "openid roles")
    assert staff_claims["roles"] == ["admin_staff"]


def test_check_licenses_command_emails_and_prints_json(ctx, mailbox, run_cli):
    soon = make_user("dr.soon", npi=NPI, license_state="CA")
    soon.license_expires = clock.now().date() + timedelta(days=10)
    gone = make_user("dr.gone", npi=OTHER_NPI, license_state="CA")
    gone.license_expires = clock.now().date() - timedelta(days=1)
    db.session.commit()
    result = run_cli("onboarding", "check-licenses", "--json")
    import json

    data = json.loads(result.stdout)
    assert data == {"warned": ["dr.soon"], "suspended": ["dr.gone"], "mail_failed": []}
    assert mailbox.to("dr.soon@hospital.example")[-1]["Subject"] == \
        "Your license on file expires soon"
    assert mailbox.to("dr.gone@hospital.example")[-1]["Subject"] == \
        "Your clinical access is suspended"
    again = json.loads(run_cli("onboarding", "check-licenses", "--json").stdout)
    assert again == {"warned": [], "suspended": [], "mail_failed": []}


@pytest.fixture
def run_cli(env, app):
    import os
    import subprocess
    import sys
    from pathlib import Path

    idp = str(Path(sys.executable).parent / "idp")

    def _run(*args: str, check: bool = True):
        result = subprocess.run([idp, *args], env={**os.environ, **env}, capture_output=True,
                                text=True, timeout=60)
        if check:
            assert result.returncode == 0, result.stderr
        return result
    return _run


def test_registry_result_is_stored_for_the_reviewer(app, client, mailbox, facility, tmp_path,
                                                    monkeypatch):
    from tests.integration.test_onboarding_registry import write_sample

    sample = write_sample(tmp_path / "npidata.csv")
    monkeypatch.setattr(runtime(), "settings", dataclasses.replace(
        runtime().settings, npi_registry=f"offline:{sample}"))
    item = _applied_and_verified(client, mailbox, facility)
    assert item.registry_result["found"] and item.registry_result["name_matches"]
    verifier = _reviewer(app)
    detail = verifier.get(f"/admin/verifications/{item.id}").text
    assert "MARIA LOPEZ" in detail and "(matches the application)" in detail
    assert "207R00000X" in detail and "NPI status</dt><dd>active" in detail


def test_reviewer_asks_the_registry_again(app, client, mailbox, facility, tmp_path,
                                          monkeypatch):
    from tests.integration.test_onboarding_registry import write_sample

    item = _applied_and_verified(client, mailbox, facility)  # no registry configured then
    verifier = _reviewer(app)
    page = verifier.get(f"/admin/verifications/{item.id}")
    assert "no registry configured" in page.text
    sample = write_sample(tmp_path / "npidata.csv")
    monkeypatch.setattr(runtime(), "settings", dataclasses.replace(
        runtime().settings, npi_registry=f"offline:{sample}"))
    assert verifier.post(f"/admin/verifications/{item.id}/registry",
                         data={}).status_code == 400  # no CSRF token
    done = verifier.post(f"/admin/verifications/{item.id}/registry",
                         data={"csrf_token": csrf_from(page.text)})
    assert done.status_code == 302
    detail = verifier.get(done.headers["Location"]).text
    assert "The registry was asked again" in detail and "MARIA LOPEZ" in detail
    assert "onboarding.registry_checked" in detail


def test_demo_seed_creates_the_facilities_once(ctx, tmp_path):
    from idp.demo import FACILITIES, seed

    seed(instance_dir=tmp_path)
    seed(instance_dir=tmp_path)
    rows = db.session.execute(select(Facility).order_by(Facility.name)).scalars().all()
    assert [f.name for f in rows] == sorted(FACILITIES)
    assert {f.name: tuple(sorted(d.name for d in f.departments)) for f in rows} == \
        {name: tuple(sorted(deps)) for name, deps in FACILITIES.items()}


def test_renewed_license_lifts_the_suspension(ctx, mailbox, run_cli):
    gone = make_user("dr.gone", npi=NPI, license_state="NY")
    gone.license_expires = clock.now().date() - timedelta(days=1)
    db.session.commit()
    run_cli("onboarding", "check-licenses")
    db.session.expire_all()
    assert db.session.get(User, gone.id).clinical_suspended

    past = (clock.now().date() - timedelta(days=1)).isoformat()
    assert "must be in the future" in run_cli("onboarding", "renew-license", "dr.gone",
                                              "--expires", past, check=False).stderr
    bad = run_cli("onboarding", "renew-license", "dr.gone", "--expires", NEXT_YEAR,
                  "--number", "A1", check=False)
    assert bad.returncode == 1 and "New York" in bad.stderr
    import json

    done = json.loads(run_cli("onboarding", "renew-license", NPI, "--expires", NEXT_YEAR,
                              "--number", "123456", "--json").stdout)
    assert done == {"username": "dr.gone", "license_expires": NEXT_YEAR,
                    "clinical_suspended": False}
    db.session.expire_all()
    user = db.session.get(User, gone.id)
    assert user.license_number == "123456" and user.license_warned_at is None
    assert user_claims(user, "openid roles")["roles"] == ["physician"]
    assert db.session.execute(select(AuditEvent.event).where(
        AuditEvent.event == "onboarding.license_renewed")).scalar_one()


def test_a_concurrent_decision_taking_the_npi_first_gets_a_readable_409(app, client, mailbox,
                                                                       facility, monkeypatch):
    """Two decisions racing for one NPI: the pre-check passed for both, the database's unique
    constraint stops the second at commit, which answers 409 and creates nothing."""
    item = _applied_and_verified(client, mailbox, facility)
    verifier = _reviewer(app)
    page = verifier.get(f"/admin/verifications/{item.id}")
    make_user("already.there", npi=NPI, totp=False)  # committed "at the same moment"
    monkeypatch.setattr(service, "npi_on_account", lambda npi: False)  # the check ran before it
    response = verifier.post(f"/admin/verifications/{item.id}/approve", data={
        "role": "physician", "facility_id": str(facility.id), "csrf_token": csrf_from(page.text)})
    assert response.status_code == 409 and "at the same moment" in response.text
    db.session.expire_all()
    assert db.session.get(Application, item.id).status == "pending"
    assert db.session.execute(select(User).where(User.username == "maria.lopez")).first() is None
