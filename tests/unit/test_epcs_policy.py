"""The EPCS rule lives in policies/epcs.toml: two distinct factor categories at one ceremony,
one of them the hardware factor; SMS, email and recovery codes never count. Bad EPCS or report
policies refuse to load."""

from __future__ import annotations

import pytest

from idp.policy import PolicyError, load_policy
from tests.unit.test_policy import POLICIES, edit, policies  # noqa: F401 (fixture)


@pytest.mark.parametrize("kinds, met", [
    (["password", "webauthn"], True),      # know + have (hardware, user-verifying)
    (["webauthn", "password"], True),
    (["password", "totp"], False),         # no hardware factor
    (["password", "sms"], False),
    (["password", "email"], False),
    (["webauthn"], False),                 # one category only
    (["webauthn", "totp"], False),         # two possession factors: one category
    (["webauthn", "sms"], False),          # SMS never counts
    (["webauthn", "email"], False),
    (["webauthn", "recovery"], False),     # a recovery code is not "something you know" here
    (["password", "recovery"], False),
    ([], False),
])
def test_the_shipped_rule(kinds, met):
    assert load_policy(POLICIES).epcs.satisfied_by(kinds) is met


def test_epcs_acr_ranks_above_phishing_resistant():
    policy = load_policy(POLICIES)
    assert policy.assurance.rank(policy.epcs.acr) > policy.assurance.rank(
        "urn:healthidp:acr:aal2-phr")
    assert policy.reports.dormant_after_days == 90
    assert "entitlements" in policy.scopes["roles"].claims


@pytest.mark.parametrize("file, old, new, problem", [
    ("epcs.toml", 'acr = "urn:healthidp:acr:epcs"', 'acr = "urn:other"', "acr_values"),
    ("epcs.toml", "min_categories = 2", "min_categories = 1", "min_categories"),
    ("epcs.toml", 'hardware_factors = ["webauthn"]', 'hardware_factors = ["sms"]',
     "hardware factor not excluded"),
    ("epcs.toml", 'hardware_factors = ["webauthn"]', 'hardware_factors = ["yubi"]',
     "unknown factors"),
    ("epcs.toml", "binding_message_max_length = 64", "binding_message_max_length = 0",
     "binding_message_max_length"),
    ("epcs.toml", "ceremony_lifetime = 300", "lifetime = 300", "missing"),
    ("reports.toml", "dormant_after_days = 90", "dormant_after_days = 0", "dormant"),
])
def test_bad_epcs_and_report_policies_refuse_to_load(policies, file, old,  # noqa: F811
                                                     new, problem):
    edit(policies, file, old, new)
    with pytest.raises(PolicyError, match=problem):
        load_policy(policies)
