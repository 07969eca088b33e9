"""policies/saml.toml: per-SP attribute names (profiles of URN names, single renamings) and
assertion encryption load checked; a bad table refuses to load."""

from __future__ import annotations

import pytest

from idp.policy import PolicyError, load_policy
from tests.unit.test_policy import POLICIES, edit, policies  # noqa: F401 (fixture)

SP = '[sps."https://scribe.example/saml"]\n'


def test_shipped_profiles_rename_to_urn_names_and_nothing_else():
    saml = load_policy(POLICIES).saml
    assert saml.encrypt_assertions == "never"
    assert saml.attribute_names("https://unlisted.example") == {a: a for a in saml.attributes}
    edu = saml.attribute_profiles["eduperson"]
    assert edu["email"] == "urn:oid:0.9.2342.19200300.100.1.3"
    assert saml.attribute_profiles["microsoft"]["email"] == \
        "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress"


def test_an_sp_takes_a_profile_and_its_own_renamings(policies):  # noqa: F811
    edit(policies, "saml.toml", "[sps]\n", "[sps]\n" + SP + 'attribute_profile = "eduperson"\n'
         'attribute_names = { facility = "urn:example:facility", email = "mail" }\n'
         'encrypt_assertions = "required"\n')
    saml = load_policy(policies).saml
    names = saml.attribute_names("https://scribe.example/saml")
    assert names["given_name"] == "urn:oid:2.5.4.42" and names["roles"] == "roles"
    assert names["facility"] == "urn:example:facility" and names["email"] == "mail"
    assert saml.sp("https://scribe.example/saml").encrypt_assertions == "required"


@pytest.mark.parametrize("text, problem", [
    ('attribute_profile = "okta"\n', "attribute_profile one of"),
    ('attribute_names = { shoe_size = "urn:x" }\n', "unknown attributes"),
    ('attribute_names = { email = "" }\n', "non-empty"),
    ('attribute_names = { email = "npi" }\n', "under one Name"),
    ('attribute_profile = "eduperson"\nattribute_names = { facility = "urn:oid:2.5.4.42" }\n',
     "under one Name"),
    ('encrypt_assertions = "sometimes"\n', "encrypt_assertions one of"),
])
def test_bad_sp_tables_refuse_to_load(policies, text, problem):  # noqa: F811
    edit(policies, "saml.toml", "[sps]\n", "[sps]\n" + SP + text)
    with pytest.raises(PolicyError, match=problem):
        load_policy(policies)


def test_bad_profiles_and_defaults_refuse_to_load(policies):  # noqa: F811
    edit(policies, "saml.toml", 'encrypt_assertions = "never"', 'encrypt_assertions = "yes"')
    with pytest.raises(PolicyError, match="encrypt_assertions"):
        load_policy(policies)
    edit(policies, "saml.toml", 'encrypt_assertions = "yes"', 'encrypt_assertions = "never"')
    role_claim = 'roles = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"\n'
    edit(policies, "saml.toml", role_claim, role_claim + 'badge = "urn:x"\n')
    with pytest.raises(PolicyError, match="unknown attributes"):
        load_policy(policies)
