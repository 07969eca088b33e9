"""The EPCS rule lives in policies/epcs.toml: two distinct factor categories at one ceremony,
one of them the hardware factor; SMS, email and recovery codes never count. Bad EPCS or report
policies refuse to load."""

from __future__ import annotations

import pytest

from idp.policy import PolicyError, load_policy
from tests.integration.test_epcs_keys import VENDOR
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


# -- epcs_keys.toml (1311.115(b)) ----------------------------------------------------------
def test_the_shipped_key_policy_trusts_nothing_until_filled_in():
    keys = load_policy(POLICIES).epcs.keys
    assert keys.formats == ("packed",) and keys.roots == () and keys.aaguids == {}
    assert keys.allow_platform_biometric is False


def _pem() -> str:
    return VENDOR.pem.decode()


def test_the_key_policy_reads_roots_beside_it_and_lowercases_aaguids(policies):  # noqa: F811
    (policies / "vendor.pem").write_text(_pem())
    edit(policies, "epcs_keys.toml", "roots = []", 'roots = ["vendor.pem"]')
    text = (policies / "epcs_keys.toml").read_text()
    (policies / "epcs_keys.toml").write_text(
        text + '"CB69481E-8FF7-4039-93EC-0A2729A154A8" = "A FIPS key"\n')
    keys = load_policy(policies).epcs.keys
    assert keys.root_files == ("vendor.pem",) and keys.roots[0].decode() == _pem()
    assert keys.aaguids == {"cb69481e-8ff7-4039-93ec-0a2729a154a8": "A FIPS key"}


@pytest.mark.parametrize("old, new, problem", [
    ('formats = ["packed"]', 'formats = ["none"]', "formats among"),
    ('formats = ["packed"]', 'formats = ["fido-u2f"]', "formats among"),
    ('formats = ["packed"]', "formats = []", "formats among"),
    ("roots = []", 'roots = ["missing.pem"]', "not a readable PEM"),
    ("roots = []", 'roots = ["epcs.toml"]', "not a readable PEM"),
    ("allow_platform_biometric = false", 'allow_platform_biometric = "yes"', "true or false"),
    ("\n[aaguids]\n", '\n[aaguids]\n"not-an-aaguid" = "x"\n', "not an AAGUID"),
])
def test_bad_key_policies_refuse_to_load(policies, old, new, problem):  # noqa: F811
    edit(policies, "epcs_keys.toml", old, new)
    with pytest.raises(PolicyError, match=problem):
        load_policy(policies)
