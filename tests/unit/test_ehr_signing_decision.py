"""The EHR's decision for its sensitive action (sign a prescription), as pure logic."""

import pytest

from clients.ehr.prescriptions import signing_decision
from clients.ehr.scopes import (
    ACR_AAL1,
    ACR_AAL2,
    ACR_AAL2_PHR,
    ACR_EPCS,
    ACR_ORDER,
    PRESCRIPTIONS_WRITE,
    SIGN_PRESCRIPTION_ACR,
    acr_at_least,
)

STRONG = {"acr": ACR_AAL2_PHR, "scope": f"openid {PRESCRIPTIONS_WRITE}", "roles": ["physician"]}


def test_the_acr_order_is_the_idps():
    from idp.config import POLICY_DIR
    from idp.policy import load_policy

    assert ACR_ORDER == (ACR_AAL1, ACR_AAL2, ACR_AAL2_PHR, ACR_EPCS)
    assert ACR_ORDER == load_policy(POLICY_DIR).assurance.acr_values
    assert SIGN_PRESCRIPTION_ACR == "urn:healthidp:acr:aal2-phr"


@pytest.mark.parametrize("acr, wanted, ok", [
    (ACR_AAL2_PHR, ACR_AAL2_PHR, True), (ACR_AAL2_PHR, ACR_AAL2, True),
    (ACR_AAL2, ACR_AAL2_PHR, False), (ACR_AAL1, ACR_AAL2, False),
    (None, ACR_AAL1, False), ("urn:other:acr:aal3", ACR_AAL1, False), (3, ACR_AAL1, False),
])
def test_acr_at_least(acr, wanted, ok):
    assert acr_at_least(acr, wanted) is ok


def test_a_physician_with_a_phishing_resistant_sign_in_and_the_scope_may_sign():
    assert signing_decision(STRONG).allowed
    assert signing_decision({**STRONG, "roles": ["nurse_practitioner"]}).allowed


@pytest.mark.parametrize("change", [{"acr": ACR_AAL2}, {"acr": None}, {"scope": "openid"}])
def test_too_weak_or_missing_the_scope_means_step_up(change):
    decision = signing_decision({**STRONG, **change})
    assert not decision.allowed and decision.step_up and decision.reason


def test_no_usable_token_means_step_up():
    decision = signing_decision(None)
    assert not decision.allowed and decision.step_up


@pytest.mark.parametrize("roles", [["admin_staff"], ["admin"], [], None, "physician"])
def test_other_roles_are_refused_without_step_up(roles):
    decision = signing_decision({**STRONG, "roles": roles})
    assert not decision.allowed and not decision.step_up
    assert "physicians and nurse practitioners" in decision.reason
