"""EPCS (DEA 21 CFR 1311) at the IdP, over the test client with a software WebAuthn
authenticator: the signing ceremony (acr_values epcs, max_age=0, binding_message), who is
refused and how, and the two-admin permission console."""

from __future__ import annotations

import re
from urllib.parse import urlencode

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import select

from idp import clock
from idp.audit.models import AuditEvent
from idp.epcs import service as epcs
from idp.epcs.models import EpcsCeremony, EpcsPermission
from idp.extensions import db
from idp.mfa.models import Factor
from idp.notify.models import SmsOutbox
from idp.sessions.models import SsoSession
from tests.helpers import (
    PASSWORD,
    auth_params,
    csrf_from,
    exchange,
    login,
    make_client,
    make_user,
    pkce,
    query,
)
from tests.integration.test_epcs_keys import seed_epcs_key, trust_test_vendor
from tests.integration.test_webauthn_service import (
    SoftAuthenticator,
    password_step,
    post_json,
    totp_step,
)

EPCS = "urn:healthidp:acr:epcs"
AAL2 = "urn:healthidp:acr:aal2"
RX = "RX-9002"


def events(name: str) -> list[AuditEvent]:
    return list(db.session.execute(select(AuditEvent).where(AuditEvent.event == name)
                                   .order_by(AuditEvent.seq)).scalars())


def grant(user, *, proposer=None, approver=None) -> EpcsPermission:
    """The permission as two admins leave it (service calls; the console is tested below)."""
    proposer = proposer or make_user("admin.one", npi=None, role="admin")
    approver = approver or make_user("admin.two", npi=None, role="admin")
    item = epcs.propose(user, proposer)
    epcs.approve(item, approver)
    db.session.commit()
    return item


def signing_request(http, rp, message: str | None = RX, **extra):
    verifier, challenge = pkce()
    params = auth_params(rp, challenge, scope="openid profile roles", acr_values=EPCS,
                         max_age="0", binding_message=message, **extra)
    return http.get("/authorize?" + urlencode(params)), verifier, params


def ceremony_password(http, location: str, password: str = PASSWORD):
    page = http.get(location)
    assert page.status_code == 200, page.text
    return page, http.post(location, data={"password": password,
                                           "csrf_token": csrf_from(page.text)})


def hardware_step(http, key: SoftAuthenticator):
    page = http.get("/mfa/challenge")
    assert page.status_code == 200
    token = csrf_from(page.text)
    options = post_json(http, "/mfa/webauthn/options", {}, token).get_json()
    done = post_json(http, "/mfa/webauthn/verify", {"credential": key.get(options)}, token)
    assert done.status_code == 200, done.text
    return page, done.get_json()["redirect"]


def id_token_claims(http, body: dict) -> dict:
    keys = KeySet.import_key_set(http.get("/jwks.json").get_json())
    return jwt.decode(body["id_token"], keys).claims


@pytest.fixture
def physician(ctx, monkeypatch):
    """A prescriber; the test policy lists the model of the EPCS keys seeded (test_epcs_keys)."""
    trust_test_vendor(monkeypatch)
    return make_user()


def test_a_ceremony_with_password_and_security_key_reaches_epcs(physician, client):
    key = SoftAuthenticator()
    seed_epcs_key(physician, key)
    grant(physician)
    rp = make_client()
    password_step(client)
    totp_step(client)
    started = clock.timestamp()

    response, verifier, params = signing_request(client, rp)
    location = response.headers["Location"]
    assert re.fullmatch(r"/epcs/ceremony/[\w-]+", location), location
    page, done = ceremony_password(client, location)
    assert RX in page.text and "Sign controlled-substance prescription" in page.text
    assert done.headers["Location"] == "/mfa/challenge"
    challenge, back = hardware_step(client, key)
    assert RX in challenge.text and 'data-webauthn="authenticate"' in challenge.text
    assert "Authenticator app" not in challenge.text  # the app is not offered for EPCS
    assert "recovery code" not in challenge.text.lower()
    answer = client.get(back)
    assert answer.headers["Location"].startswith(rp.redirect_uri), answer.headers["Location"]
    body = exchange(client, rp, query(answer.headers["Location"])["code"], verifier).get_json()
    claims = id_token_claims(client, body)
    assert claims["acr"] == EPCS
    assert {"pwd", "hwk"} <= set(claims["amr"]) and "otp" not in claims["amr"]
    assert claims["auth_time"] >= started
    assert claims["entitlements"] == ["epcs"]
    access = jwt.decode(body["access_token"], KeySet.import_key_set(
        client.get("/jwks.json").get_json())).claims
    assert access["acr"] == EPCS and access["entitlements"] == ["epcs"]

    # The session keeps its own level: EPCS is per ceremony, never remembered.
    sso = db.session.execute(select(SsoSession)).scalar_one()
    db.session.refresh(sso)
    assert sso.acr == AAL2 and "hwk" not in sso.amr
    [begun] = events("epcs.ceremony_started")
    [completed] = events("epcs.ceremony_completed")
    assert begun.detail["binding_message"] == RX == completed.detail["binding_message"]
    assert completed.detail["acr"] == EPCS and completed.detail["factors"] == [
        "password", "webauthn"]

    # The next signature is a new ceremony, although the last one finished seconds ago.
    again, _, _ = signing_request(client, rp)
    assert again.headers["Location"].startswith("/epcs/ceremony/")
    assert again.headers["Location"] != location


def test_only_an_authenticator_app_is_refused_in_plain_words(physician, client):
    grant(physician)
    rp = make_client()
    login(client)
    response, _, params = signing_request(client, rp)
    location = response.headers["Location"]
    assert location.startswith(rp.redirect_uri), location  # straight back: no loop
    got = query(location)
    assert got["error"] == "unmet_authentication_requirements" and got["state"] == params["state"]
    assert "no security key enrolled for prescribing" in got["error_description"]
    assert "authenticator-app codes, text messages (SMS)" in got["error_description"]
    assert "everyday passkeys do not count" in got["error_description"]
    assert [e.detail["reason"] for e in events("epcs.refused")] == ["no_hardware_factor"]
    assert db.session.execute(select(EpcsCeremony)).first() is None


def test_a_text_message_sign_in_is_refused(ctx, client):
    user = make_user(totp=False)
    db.session.add(Factor(user_id=user.id, kind="sms", label="Phone", created_at=clock.now(),
                          confirmed_at=clock.now(), destination="+15555550123"))
    db.session.commit()
    grant(user)
    rp = make_client()
    page = client.get("/login")
    client.post("/login", data={"username": "drsmith", "password": PASSWORD,
                                "csrf_token": csrf_from(page.text), "next": "/account"})
    challenge = client.get("/mfa/challenge")
    sent = db.session.execute(select(SmsOutbox.body)).scalar_one()
    code = re.search(r"\b(\d{6})\b", sent).group(1)
    done = client.post("/mfa/challenge", data={"code": code, "csrf_token": csrf_from(
        challenge.text)})
    assert done.status_code == 302 and done.headers["Location"] == "/account"
    assert "sms" in db.session.execute(select(SsoSession.amr)).scalar_one()

    response, _, _ = signing_request(client, rp)
    got = query(response.headers["Location"])
    assert got["error"] == "unmet_authentication_requirements"
    assert "text messages (SMS)" in got["error_description"]


def test_without_the_epcs_permission_the_request_is_refused(physician, client):
    seed_epcs_key(physician, SoftAuthenticator())
    rp = make_client()
    login(client)
    response, _, _ = signing_request(client, rp)
    got = query(response.headers["Location"])
    assert got["error"] == "access_denied"
    assert "does not hold the EPCS permission" in got["error_description"]
    assert [e.detail["reason"] for e in events("epcs.refused")] == ["no_permission"]
    # A proposal alone (one admin) is not the permission either.
    epcs.propose(physician, make_user("admin.one", npi=None, role="admin"))
    db.session.commit()
    response, _, _ = signing_request(client, rp)
    assert query(response.headers["Location"])["error"] == "access_denied"


def test_a_wrong_password_at_the_ceremony_counts_as_a_failure(physician, client):
    seed_epcs_key(physician, SoftAuthenticator())
    grant(physician)
    rp = make_client()
    login(client)
    response, _, _ = signing_request(client, rp)
    page, done = ceremony_password(client, response.headers["Location"], "Wrong-password-1!")
    assert done.status_code == 401 and "not right" in done.text
    db.session.refresh(physician)
    assert physician.failed_logins == 1
    assert [e.detail["reason"] for e in events("login.failure")] == ["epcs_password"]
    assert client.get("/mfa/challenge").headers["Location"] == "/login"  # no factor step


@pytest.mark.parametrize("message, problem", [
    (None, "is required"),
    ("", "is required"),
    ("RX-" + "9" * 70, "longer than 64"),
    ("<script>alert(1)</script>", "may hold only"),
    ("RX-1\nINJECT", "may hold only"),
])
def test_the_binding_message_is_required_and_bounded(physician, client, message, problem):
    grant(physician)
    rp = make_client()
    login(client)
    response, _, _ = signing_request(client, rp, message)
    got = query(response.headers["Location"])
    assert got["error"] == "invalid_request" and problem in got["error_description"]


def test_prompt_none_cannot_hold_a_ceremony(physician, client):
    seed_epcs_key(physician, SoftAuthenticator())
    grant(physician)
    rp = make_client()
    login(client)
    response, _, _ = signing_request(client, rp, prompt="none")
    assert query(response.headers["Location"])["error"] == "interaction_required"


def test_a_ceremony_page_belongs_to_its_user_and_ends(physician, client, app, frozen):
    seed_epcs_key(physician, SoftAuthenticator())
    grant(physician)
    rp = make_client()
    login(client)
    response, _, _ = signing_request(client, rp)
    location = response.headers["Location"]
    other = app.test_client()
    make_user("drjones", npi="1245319599")
    login(other, "drjones")
    assert other.get(location).status_code == 410
    frozen.advance(301)
    assert client.get(location).status_code == 410


# -- the two-admin permission console ------------------------------------------------------
def admin_client(app, username: str):
    http = app.test_client()
    make_user(username, npi=None, role="admin")
    assert login(http, username).status_code == 302
    return http


def console_post(http, path: str, **data):
    page = http.get("/admin/epcs")
    assert page.status_code == 200, page.text
    return http.post(path, data={"csrf_token": csrf_from(page.text), **data})


def test_two_admins_grant_and_one_revokes(physician, app):
    first, second = admin_client(app, "admin.one"), admin_client(app, "admin.two")
    proposed = console_post(first, "/admin/epcs/propose", username="drsmith")
    assert proposed.status_code == 302
    item = db.session.execute(select(EpcsPermission)).scalar_one()
    assert item.state == "proposed" and not epcs.has_permission(physician)
    page = first.get("/admin/epcs")
    assert "Waiting for another administrator" in page.text

    # The proposer cannot approve their own proposal.
    own = console_post(first, f"/admin/epcs/{item.id}/approve")
    assert own.status_code == 403 and "A different administrator must approve" in own.text
    db.session.refresh(item)
    assert item.approved_at is None and not epcs.has_permission(physician)
    [refused] = events("epcs.permission_approval_refused")
    assert refused.actor == f"admin:{item.proposed_by}"

    approved = console_post(second, f"/admin/epcs/{item.id}/approve")
    assert approved.status_code == 302
    db.session.refresh(item)
    assert item.state == "active" and epcs.has_permission(physician)
    [proposal] = events("epcs.permission_proposed")
    [approval] = events("epcs.permission_approved")
    assert proposal.user_id == approval.user_id == physician.id
    assert proposal.actor != approval.actor
    assert approval.detail["proposed_by"] == item.proposed_by != item.approved_by

    # A second proposal for a holder is refused; one admin revokes.
    again = console_post(second, "/admin/epcs/propose", username="drsmith")
    assert again.status_code == 409 and "already has an EPCS permission" in again.text
    revoked = console_post(first, f"/admin/epcs/{item.id}/revoke")
    assert revoked.status_code == 302
    db.session.refresh(item)
    assert item.state == "revoked" and not epcs.has_permission(physician)
    assert len(events("epcs.permission_revoked")) == 1


def test_the_console_refuses_non_prescribers_self_grants_and_other_roles(physician, app):
    first = admin_client(app, "admin.one")
    make_user("clerk", npi=None, role="admin_staff")
    refused = console_post(first, "/admin/epcs/propose", username="clerk")
    assert refused.status_code == 409 and "Only prescribers" in refused.text
    own = console_post(first, "/admin/epcs/propose", username="admin.one")
    assert own.status_code == 409
    assert db.session.execute(select(EpcsPermission)).first() is None
    security = app.test_client()
    make_user("sec.officer", npi=None, role="security")
    login(security, "sec.officer")
    assert security.get("/admin/epcs").status_code == 403
    token = csrf_from(security.get("/account/password").text)  # its own, valid token
    assert security.post("/admin/epcs/propose", data={"username": "drsmith",
                                                      "csrf_token": token}).status_code == 403
    no_csrf = first.post("/admin/epcs/propose", data={"username": "drsmith"})
    assert no_csrf.status_code == 400
    assert db.session.execute(select(EpcsPermission)).first() is None


def test_a_binding_message_outside_epcs_is_bounded_too(physician, client):
    rp = make_client()
    login(client)
    verifier, challenge = pkce()
    bad = auth_params(rp, challenge, binding_message="<b>RX</b>")
    got = query(client.get("/authorize?" + urlencode(bad)).headers["Location"])
    assert got["error"] == "invalid_request" and "may hold only" in got["error_description"]
    fine = auth_params(rp, challenge, binding_message="RX-1")
    assert "code" in query(client.get("/authorize?" + urlencode(fine)).headers["Location"])


def test_the_rule_is_applied_at_completion_not_only_by_the_factor_offered(physician, client):
    """Were an app code (or SMS, recovery) to finish a ceremony, the rule refuses EPCS."""
    from idp.mfa.models import LoginAttempt

    seed_epcs_key(physician, SoftAuthenticator())
    grant(physician)
    rp = make_client()
    login(client)
    response, _, params = signing_request(client, rp)
    ceremony = db.session.execute(select(EpcsCeremony)).scalar_one()
    attempt = LoginAttempt(id="attempt-1", user_id=physician.id, purpose="epcs", amr=["pwd"],
                           target_acr=EPCS, created_at=clock.now(), expires_at=clock.now())
    db.session.add(attempt)
    ceremony.attempt_id = attempt.id
    app_factor = db.session.execute(select(Factor).where(
        Factor.kind == "totp", Factor.user_id == physician.id)).scalar_one()
    assert epcs.complete(attempt, physician, app_factor.kind, ["pwd", "otp", "mfa"]) is False
    db.session.commit()
    [failed] = events("epcs.ceremony_failed")
    assert failed.detail["factors"] == ["password", "totp"] and failed.detail["acr"] is None
    again = client.get("/authorize?" + urlencode(params))
    got = query(again.headers["Location"])
    assert got["error"] == "unmet_authentication_requirements"
    assert "did not meet the EPCS requirements" in got["error_description"]
