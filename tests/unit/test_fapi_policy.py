"""policies/fapi.toml is checked at start: a bad value refuses to start (PolicyError)."""

from __future__ import annotations

from pathlib import Path

import pytest

import idp
from idp.policy import PolicyError, load_policy

POLICIES = Path(idp.__file__).parent / "policies"
SHIPPED_DPOP = {"algorithms": ["ES256"], "iat_window": 60, "require_nonce": False,
                "nonce_lifetime": 300}


def test_the_shipped_policy_loads():
    fapi = load_policy(POLICIES).fapi
    assert fapi.par.request_uri_lifetime == 90 and fapi.profiles["fapi2"].max_code_lifetime == 60
    assert "private_key_jwt" in fapi.profiles["fapi2"].auth_methods


@pytest.mark.parametrize("change,message", [
    ({"dpop": {**SHIPPED_DPOP, "algorithms": ["HS256"]}}, "asymmetric"),
    ({"dpop": {**SHIPPED_DPOP, "algorithms": []}}, "asymmetric"),
    ({"dpop": {**SHIPPED_DPOP, "iat_window": 0}}, "positive"),
    ({"dpop": {**SHIPPED_DPOP, "surprise": 1}}, "unknown"),
    ({"par": {"request_uri_lifetime": 0, "interaction_lifetime": 900,
              "require_for_all": False, "max_body": 16384}}, "positive"),
])
def test_bad_values_refuse_to_start(change, message):
    with pytest.raises(PolicyError, match=message):
        load_policy(POLICIES, {"fapi": change})


def test_a_profile_with_an_unknown_method_refuses_to_start():
    profile = {"description": "x", "require_par": True, "require_pkce_s256": True,
               "confidential_only": True, "auth_methods": ["mtls"], "require_dpop": True,
               "max_code_lifetime": 60, "signing_algorithms": ["ES256"]}
    with pytest.raises(PolicyError, match="auth_methods"):
        load_policy(POLICIES, {"fapi": {"profiles": {"odd": profile}}})
