"""The EHR honours an emergency entitlement only as the IdP issues it: an `emergency.exp` in
the future (an integer) with the break-glass purpose of use; anything else widens nothing."""

from __future__ import annotations

import pytest

from clients.ehr import emergency

NOW = 1_800_000_000


@pytest.fixture(autouse=True)
def _clock(monkeypatch):
    monkeypatch.setattr(emergency, "now", lambda: NOW)


def test_a_running_entitlement_is_honoured_until_its_end():
    claims = {"purpose_of_use": ["ETREAT", "BTG"], "emergency": {"exp": NOW + 60}}
    assert emergency.emergency_until(claims) == NOW + 60


@pytest.mark.parametrize("claims", [
    None, {}, {"emergency": {"exp": NOW + 60}},                         # no purpose of use
    {"purpose_of_use": ["TREAT"], "emergency": {"exp": NOW + 60}},      # not break-glass
    {"purpose_of_use": "BTG", "emergency": {"exp": NOW + 60}},          # not a list
    {"purpose_of_use": ["BTG"], "emergency": {"exp": NOW}},             # ended
    {"purpose_of_use": ["BTG"], "emergency": {"exp": str(NOW + 60)}},   # not an integer
    {"purpose_of_use": ["BTG"], "emergency": {"exp": True}},
    {"purpose_of_use": ["BTG"], "emergency": NOW + 60},
    {"purpose_of_use": ["BTG"], "emergency": {}},
])
def test_anything_else_widens_nothing(claims):
    assert emergency.emergency_until(claims) is None
