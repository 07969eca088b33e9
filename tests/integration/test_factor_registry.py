"""A second factor is one module behind one interface (idp.mfa.factors.base): a throwaway
"desk PIN" factor, defined only in this file, is registered into a fresh app's registry with
a policy entry enabling it for physicians, enrolled through the registry's enroll API, and
signs a user in through the normal /mfa/challenge page. No other module knows it: the
challenge page, the factors page and the MFA coverage report pick it up from the registry."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

import pytest
from sqlalchemy import select

from idp import clock, create_app
from idp.accounts.models import User
from idp.audit.models import AuditEvent
from idp.config import Settings
from idp.core import crypto
from idp.extensions import db
from idp.mfa import enrollment
from idp.mfa.factors.base import FactorType
from idp.mfa.factors.registry import registry
from idp.mfa.models import Factor, LoginAttempt
from idp.reports import service as reports
from idp.sessions.models import SsoSession
from tests.conftest import TEST_POLICY
from tests.helpers import PASSWORD, csrf_from, make_user
from tests.log_scan import register as register_secret

PIN = "80417"
AAL2 = "urn:healthidp:acr:aal2"


class DeskPinFactor(FactorType):
    """A PIN typed at the challenge page (kept encrypted, like a TOTP seed)."""

    kind = "pin"
    icon = "dialpad"
    category = "knowledge"
    failed_message = "That PIN is not right."

    def enroll(self, user: User, **details: object) -> Factor:
        now = clock.now()
        return Factor(user_id=user.id, kind=self.kind, label="Ward desk PIN", created_at=now,
                      confirmed_at=now, secret_encrypted=crypto.encrypt(str(details["pin"])))

    def prompt(self, factor: Factor) -> str:
        return "Your desk PIN"

    def verify(self, attempt: LoginAttempt, user: User, factor: Factor | None,
               response: Mapping[str, str]) -> bool:
        given = response.get("code", "")[:64]
        return factor is not None and hmac.compare_digest(
            crypto.decrypt(factor.secret_encrypted or "").encode(), given.encode())


PIN_POLICY = {"mfa.factors": {"pin": {"label": "Desk PIN", "amr": ["pin"], "acr": AAL2}},
              "mfa.roles": {"physician": ["pin"]}}


@pytest.fixture
def pin_app(request, app, env):
    """A fresh app (same database) with the PIN type in its registry, and (or not) the
    policy entry enabling it; `app` is requested so the tables are emptied after the test."""
    fresh = create_app(Settings.from_env(env), policy_overrides={**TEST_POLICY,
                                                                 **request.param})
    fresh.config["TESTING"] = True
    with fresh.app_context():
        registry().register(DeskPinFactor())
        yield fresh


def _events(name: str) -> list[AuditEvent]:
    return list(db.session.execute(select(AuditEvent).where(AuditEvent.event == name)
                                   .order_by(AuditEvent.seq)).scalars())


@pytest.mark.parametrize("pin_app", [PIN_POLICY], indirect=True, ids=["pin-in-policy"])
def test_a_throwaway_factor_enrolls_and_signs_in_through_the_challenge_page(pin_app):
    register_secret("PIN", PIN)
    user = make_user(totp=False)
    factor = registry().get("pin").enroll(user, pin=PIN)
    codes = enrollment.save(user, factor)  # audited, first recovery codes
    db.session.commit()
    assert codes and len(codes) == 10
    assert [e.detail["factor"] for e in _events("mfa.enrolled")] == ["pin"]
    assert PIN not in (factor.secret_encrypted or "")

    browser = pin_app.test_client()
    page = browser.get("/login")
    sent = browser.post("/login", data={"username": "drsmith", "password": PASSWORD,
                                        "csrf_token": csrf_from(page.text)})
    assert sent.headers["Location"] == "/mfa/challenge"
    challenge = browser.get("/mfa/challenge")
    assert challenge.status_code == 200
    assert '<label for="code">Your desk PIN</label>' in challenge.text
    token = csrf_from(challenge.text)

    wrong = browser.post("/mfa/challenge", data={"code": "11111", "factor": factor.id,
                                                 "csrf_token": token})
    assert wrong.status_code == 400 and "That PIN is not right." in wrong.text
    assert [e.detail["factor"] for e in _events("mfa.failure")] == ["pin"]

    done = browser.post("/mfa/challenge", data={"code": PIN, "factor": factor.id,
                                                "csrf_token": token})
    assert done.status_code == 302 and done.headers["Location"] == "/account"
    assert browser.get("/account").status_code == 200  # signed in
    sso = db.session.execute(select(SsoSession).where(SsoSession.user_id == user.id)
                             ).scalar_one()
    assert sso.acr == AAL2 and sso.amr == ["pwd", "pin", "mfa"]
    assert [e.detail["factor"] for e in _events("mfa.verified")] == ["pin"]

    # The pages and reports that list factors iterate the registry: the PIN is there too.
    methods = browser.get("/mfa/factors")
    assert 'data-kind="pin" data-icon="dialpad"' in methods.text
    assert "<strong>Ward desk PIN</strong> (Desk PIN)" in methods.text
    coverage = reports.build("mfa_coverage")
    assert coverage.columns[-1] == "pin"
    assert [(r["role"], r["pin"], r["totp"]) for r in coverage.rows] == [("physician", 1, 0)]


@pytest.mark.parametrize("pin_app", [{}], indirect=True, ids=["pin-not-in-policy"])
def test_without_its_policy_entry_a_registered_factor_is_not_offered(pin_app):
    """Policy decides what is enabled: without [factors.pin] the registered type is unused,
    and a PIN row the user holds is no way to pass the second step."""
    user = make_user(totp=False)
    db.session.add(DeskPinFactor().enroll(user, pin=PIN))
    db.session.commit()
    assert registry().get("pin") is None
    assert [t.kind for t in registry()] == ["webauthn", "totp", "sms", "email", "recovery"]
    browser = pin_app.test_client()
    page = browser.get("/login")
    browser.post("/login", data={"username": "drsmith", "password": PASSWORD,
                                 "csrf_token": csrf_from(page.text)})
    assert browser.get("/mfa/challenge").headers["Location"] == "/mfa/enroll"
