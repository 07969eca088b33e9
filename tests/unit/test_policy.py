"""policies/*.toml load into frozen dataclasses; every kind of bad policy refuses to load with a
PolicyError that names the problem."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from idp.config import POLICY_DIR
from idp.policy import PolicyError, load_policy

POLICIES = POLICY_DIR


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    """A private copy of the shipped policies to break."""
    target = tmp_path / "policies"
    shutil.copytree(POLICIES, target)
    return target


def edit(directory: Path, name: str, old: str, new: str) -> None:
    path = directory / name
    text = path.read_text()
    assert old in text, f"{name} no longer holds {old!r}: update this test"
    path.write_text(text.replace(old, new, 1))


def test_shipped_policies_load_with_the_guide_defaults():
    policy = load_policy(POLICIES)
    assert policy.tokens.access_token_lifetime == 600
    assert policy.tokens.authorization_code_lifetime == 60
    assert policy.session.idle_timeout == 30 * 60 and policy.session.absolute_timeout == 12 * 3600
    assert policy.session.cookie_name == "idp_session"
    assert policy.keys.algorithms == ("RS256", "ES256")  # lists become tuples
    assert policy.assurance.password_acr in policy.assurance.acr_values
    assert "openid" in policy.scopes and "physician" in policy.roles
    # a signing key stays published for the longest token a client may be given
    assert policy.max_token_lifetime == max(policy.tokens.max_access_token_lifetime,
                                            policy.tokens.max_id_token_lifetime) == 86400
    assert policy.alerts.new_network_window == 90 * 86400 and policy.alerts.ipv4_prefix == 24
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.tokens.access_token_lifetime = 1  # type: ignore[misc]


def test_scopes_map_to_claims_and_resource_audiences():
    policy = load_policy(POLICIES)
    assert policy.claims_for(["openid", "email"]) == {"sub", "email", "email_verified"}
    assert policy.claims_for(["unknown"]) == set()
    ehr = policy.resources["ehr"]
    assert policy.audiences_for(["openid", "ehr.patients.read", "ehr.labs.read"]) == [ehr]
    assert policy.audiences_for(["openid", "profile"]) == []


def test_overrides_patch_single_values_and_are_validated_too(policies: Path):
    policy = load_policy(policies, {"tokens": {"access_token_lifetime": 5}})
    assert policy.tokens.access_token_lifetime == 5
    assert policy.tokens.id_token_lifetime == load_policy(POLICIES).tokens.id_token_lifetime
    with pytest.raises(PolicyError, match="tokens.toml.*surprise"):
        load_policy(policies, {"tokens": {"surprise": 1}})
    with pytest.raises(PolicyError, match="access_token_lifetime must not be negative"):
        load_policy(policies, {"tokens": {"access_token_lifetime": -5}})


def test_missing_file(policies: Path):
    (policies / "tokens.toml").unlink()
    with pytest.raises(PolicyError, match=r"tokens\.toml is missing"):
        load_policy(policies)


@pytest.mark.parametrize("name", ["tokens.toml", "keys.toml", "session.toml", "scopes.toml",
                                  "roles.toml", "assurance.toml"])
def test_every_file_is_required(policies: Path, name: str):
    (policies / name).unlink()
    with pytest.raises(PolicyError, match=f"{name} is missing"):
        load_policy(policies)


def test_bad_toml(policies: Path):
    edit(policies, "session.toml", "idle_timeout = 1800", "idle_timeout = = 1800")
    with pytest.raises(PolicyError, match=r"session\.toml is not valid TOML"):
        load_policy(policies)


def test_unknown_key(policies: Path):
    (policies / "tokens.toml").write_text(
        (policies / "tokens.toml").read_text() + "\naccess_token_lifetme = 300\n")
    with pytest.raises(PolicyError, match=r"tokens\.toml: unknown \['access_token_lifetme'\]"):
        load_policy(policies)


def test_missing_key(policies: Path):
    edit(policies, "tokens.toml", "id_token_lifetime = 3600", "")
    with pytest.raises(PolicyError, match=r"tokens\.toml: .*missing \['id_token_lifetime'\]"):
        load_policy(policies)


def test_missing_key_in_a_table(policies: Path):
    edit(policies, "password.toml", "salt_len = 16", "")
    with pytest.raises(PolicyError, match=r"password\.toml \[argon2\].*missing \['salt_len'\]"):
        load_policy(policies)


@pytest.mark.parametrize(("name", "old", "new", "key"), [
    ("tokens.toml", "access_token_lifetime = 600", "access_token_lifetime = -600",
     "access_token_lifetime"),
    ("keys.toml", "activation_delay = 3600", "activation_delay = -1", "activation_delay"),
    ("session.toml", "absolute_timeout = 43200", "absolute_timeout = -43200",
     "absolute_timeout"),
])
def test_negative_value(policies: Path, name: str, old: str, new: str, key: str):
    edit(policies, name, old, new)
    with pytest.raises(PolicyError, match=f"{name}: {key} must not be negative"):
        load_policy(policies)


@pytest.mark.parametrize(("name", "old", "new", "alg"), [
    ("keys.toml", 'algorithms = ["RS256", "ES256"]', 'algorithms = ["RS256", "HS256"]', "HS256"),
    ("tokens.toml", 'access_token_alg = "RS256"', 'access_token_alg = "none"', "none"),
    ("tokens.toml", 'id_token_default_alg = "RS256"', 'id_token_default_alg = "PS512"', "PS512"),
])
def test_unsupported_algorithm(policies: Path, name: str, old: str, new: str, alg: str):
    edit(policies, name, old, new)
    with pytest.raises(PolicyError, match=f"unsupported signing algorithm '{alg}'"):
        load_policy(policies)


def test_access_token_alg_needs_a_key(policies: Path):
    edit(policies, "keys.toml", 'algorithms = ["RS256", "ES256"]', 'algorithms = ["ES256"]')
    with pytest.raises(PolicyError, match="access_token_alg has no key"):
        load_policy(policies)


def test_bad_acr(policies: Path):
    edit(policies, "assurance.toml", 'password_acr = "urn:healthidp:acr:aal1"',
         'password_acr = "urn:healthidp:acr:aal9"')
    with pytest.raises(PolicyError, match="password_acr is not one of acr_values"):
        load_policy(policies)


@pytest.mark.parametrize(("old", "new"), [
    ("idle_timeout = 1800", "idle_timeout = 0"),
    ("absolute_timeout = 43200", "absolute_timeout = 60"),
])
def test_session_timeouts_must_make_sense(policies: Path, old: str, new: str):
    edit(policies, "session.toml", old, new)
    with pytest.raises(PolicyError, match="idle_timeout <= absolute_timeout"):
        load_policy(policies)


@pytest.mark.parametrize(("old", "new", "message"), [
    ("touch_every = 30", "touch_every = 0", "0 < touch_every < idle_timeout"),
    ("touch_every = 30", "touch_every = 1800", "0 < touch_every < idle_timeout"),
    ("device_cookie_max_age = 34560000", "device_cookie_max_age = 34560001",
     "device_cookie_max_age <= 34560000"),
    ("device_cookie_max_age = 34560000", "device_cookie_max_age = 0",
     "device_cookie_max_age <= 34560000"),
])
def test_session_upkeep_and_device_cookie_must_make_sense(policies: Path, old: str, new: str,
                                                          message: str):
    edit(policies, "session.toml", old, new)
    with pytest.raises(PolicyError, match=message):
        load_policy(policies)


def test_session_upkeep_and_device_cookie_come_from_the_policy(policies: Path):
    session = load_policy(policies, {"session": {"touch_every": 5}}).session
    assert session.touch_every == 5 and session.device_cookie_max_age == 400 * 86400


def test_scope_naming_an_unknown_resource(policies: Path):
    edit(policies, "scopes.toml", 'description = "Read lab results in the EHR"\nresource = "ehr"',
         'description = "Read lab results in the EHR"\nresource = "lab"')
    with pytest.raises(PolicyError, match="ehr.labs.read names unknown resource lab"):
        load_policy(policies)


def test_grants_defaults_and_user_level_patterns():
    grants = load_policy(POLICIES).grants
    assert grants.self_service_scopes == ("openid", "profile", "email", "phone",
                                          "offline_access")
    assert "client_credentials" not in grants.self_service_grant_types
    for scope in ("ehr.patients.read", "user/Patient.rs", "patient/*.read",
                  "patient/Observation.rs?category=laboratory"):
        assert grants.user_level(scope), scope
    for scope in ("system/Patient.rs", "openid", "ehr", "users/Patient.rs", "launch/patient"):
        assert not grants.user_level(scope), scope


@pytest.mark.parametrize(("old", "new", "message"), [
    ('self_service_scopes = ["openid",', 'self_service_scopes = ["openid", "ehr.all",',
     r"unknown \['ehr.all'\]"),
    ('self_service_grant_types = ["authorization_code",',
     'self_service_grant_types = ["implicit",', r"unknown \['implicit'\]"),
    ('user_level_scopes = ["ehr.*",', 'user_level_scopes = ["",', "non-empty patterns"),
    ('user_level_scopes = ', 'user_level = ', "missing"),
])
def test_bad_grants_table(policies: Path, old: str, new: str, message: str):
    edit(policies, "scopes.toml", old, new)
    with pytest.raises(PolicyError, match=message):
        load_policy(policies)


def test_openid_scope_is_required(policies: Path):
    edit(policies, "scopes.toml", "[scopes.openid]", "[scopes.openid_gone]")
    with pytest.raises(PolicyError, match="must define the openid scope"):
        load_policy(policies)


@pytest.mark.parametrize(("old", "new"), [
    ("need_patient_banner = true", 'need_patient_banner = "yes"'),
    ('color_text = "#1b2733"', 'colour_text = "#1b2733"'),   # not a SMART style member
    ('color_text = "#1b2733"', "color_text = 12"),
])
def test_a_bad_smart_style_or_banner_refuses_to_load(policies: Path, old: str, new: str):
    assert load_policy(policies).smart.need_patient_banner is True
    edit(policies, "smart.toml", old, new)
    with pytest.raises(PolicyError):
        load_policy(policies)


def test_mfa_order_limits_and_enrollment_lifetime_are_policy():
    mfa = load_policy(POLICIES).mfa
    assert mfa.order == ("webauthn", "totp", "sms", "email")
    assert mfa.enrollment_lifetime == 15 * 60
    assert (mfa.limits.challenge, mfa.limits.recovery, mfa.limits.webauthn) == (
        "30 per minute", "10 per minute", "30 per minute")


def test_mfa_order_must_name_known_factors(policies):
    edit(policies, "mfa.toml", 'order = ["webauthn",', 'order = ["pager", "webauthn",')
    with pytest.raises(PolicyError, match=r"order: unknown factors \['pager'\]"):
        load_policy(policies)


def test_a_factor_and_its_roles_can_be_added_by_override():
    """What a deployment's extra factor module (or a test's) needs from policy."""
    mfa = load_policy(POLICIES, {
        "mfa.factors": {"pin": {"label": "Desk PIN", "amr": ["pin"],
                                "acr": "urn:healthidp:acr:aal2"}},
        "mfa.roles": {"nurse_practitioner": ["pin", "totp"]}}).mfa
    assert mfa.factors["pin"].label == "Desk PIN" and "totp" in mfa.factors
    assert mfa.allowed("nurse_practitioner") == ("pin", "totp")
    assert mfa.allowed("physician") == ("webauthn", "totp", "sms", "email")
    with pytest.raises(PolicyError, match="unknown factors"):
        load_policy(POLICIES, {"mfa.roles": {"physician": ["pin"]}})


# -- one Policy, one loader (issue 19) ----------------------------------------------------------
def test_every_section_is_in_the_one_policy_and_required():
    policy = load_policy(POLICIES)
    assert policy.smart.enabled is True and policy.smart.resource == "ehr"
    assert policy.web.max_body_bytes == 65536 and policy.web.max_json_depth == 32
    assert policy.console.admin_roles == ("admin",)
    assert policy.console.console_roles == ("admin", "security", "verifier")
    assert policy.console.security_roles == ("admin", "security")
    assert policy.console.min_acr == "urn:healthidp:acr:aal2"
    assert policy.alerts.recipient_roles == ("security",)
    assert policy.onboarding.license_expiry_buckets == (30, 60, 90)
    assert policy.tokens.client_assertion_jti_retention == 300
    # no section is optional: a Policy cannot be made without any of them
    assert not [f.name for f in dataclasses.fields(policy)
                if f.default is not dataclasses.MISSING]


def test_overrides_reach_the_smart_web_and_console_sections(policies: Path):
    policy = load_policy(policies, {"smart": {"enabled": False}, "web": {"max_form_parts": 7},
                                    "roles.console": {"security_roles": ["security"]},
                                    "alerts": {"recipient_roles": ["admin", "security"]}})
    assert policy.smart.enabled is False and policy.web.max_form_parts == 7
    assert policy.console.security_roles == ("security",)
    assert policy.alerts.recipient_roles == ("admin", "security")
    with pytest.raises(PolicyError, match="web.toml"):
        load_policy(policies, {"web": {"max_param_length": 10}})
    with pytest.raises(PolicyError, match="smart.toml"):
        load_policy(policies, {"smart": {"fhir_path": "fhir"}})


@pytest.mark.parametrize(("name", "old", "new", "message"), [
    ("roles.toml", 'admin_roles = ["admin"]', 'admin_roles = ["root"]',
     r"roles.toml \[console\] admin_roles"),
    ("roles.toml", 'security_roles = ["admin", "security"]', "security_roles = []",
     r"roles.toml \[console\] security_roles"),
    ("roles.toml", 'min_acr = "urn:healthidp:acr:aal2"', 'min_acr = "aal9"',
     r"roles.toml \[console\] min_acr"),
    ("roles.toml", 'min_acr = "urn:healthidp:acr:aal2"', "", r"roles.toml \[console\].*min_acr"),
    ("alerts.toml", 'recipient_roles = ["security"]', 'recipient_roles = ["secuirty"]',
     "alerts.toml recipient_roles"),
    ("alerts.toml", 'recipient_roles = ["security"]', "recipient_roles = []",
     "alerts.toml recipient_roles"),
    ("onboarding.toml", "license_expiry_buckets = [30, 60, 90]",
     "license_expiry_buckets = [60, 30, 90]", "onboarding.toml license_expiry_buckets"),
    ("onboarding.toml", "license_expiry_buckets = [30, 60, 90]",
     "license_expiry_buckets = [0, 30]", "onboarding.toml license_expiry_buckets"),
    ("onboarding.toml", "license_expiry_buckets = [30, 60, 90]",
     "license_expiry_buckets = []", "onboarding.toml license_expiry_buckets"),
    ("tokens.toml", "client_assertion_jti_retention = 300", "client_assertion_jti_retention = 0",
     "tokens.toml: client_assertion_jti_retention"),
    ("tokens.toml", "client_assertion_jti_retention = 300", "", "tokens.toml.*missing"),
])
def test_rules_moved_from_code_are_checked_at_load(policies: Path, name: str, old: str,
                                                   new: str, message: str):
    edit(policies, name, old, new)
    with pytest.raises(PolicyError, match=message):
        load_policy(policies)


def test_scim_policy_is_checked(tmp_path):
    """scim.toml: groups name known roles or a facility; the pending role is not clinical."""
    loaded = load_policy(POLICY_DIR)
    assert loaded.scim.enabled and loaded.scim.groups["physicians"].role == "physician"
    for change in ({"pending_role": "physician"}, {"default_role": "wizard"},
                   {"max_page_size": 0}):
        with pytest.raises(PolicyError):
            load_policy(POLICY_DIR, {"scim": change})
    copy = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, copy)
    scim = copy / "scim.toml"
    scim.write_text(scim.read_text() + '\n[groups.empty]\ndisplay = "Nothing"\n')
    with pytest.raises(PolicyError, match="a role, a facility or both"):
        load_policy(copy)
    scim.write_text(scim.read_text().replace('display = "Nothing"',
                                             'display = "Ward"\nfacility = "General"'))
    assert load_policy(copy).scim.groups["empty"].facility == "General"


def test_udap_tiered_oauth_settings_are_checked(policies: Path):
    """udap.toml: udap_to is announced; tiered_fallback is error or local; the logo_uri of
    our registrations at upstreams is https."""
    policy = load_policy(policies)
    assert "udap_to" in policy.udap.profiles and policy.udap.tiered_fallback == "error"
    assert load_policy(policies, {"udap": {"tiered_fallback": "local"}}).udap.tiered_fallback \
        == "local"
    with pytest.raises(PolicyError, match="tiered_fallback"):
        load_policy(policies, {"udap": {"tiered_fallback": "maybe"}})
    with pytest.raises(PolicyError, match="tiered_logo_uri must be an https URL"):
        load_policy(policies, {"udap": {"tiered_logo_uri": "http://example.org/logo.png"}})
