"""SMART clinical scope syntax (v2, v1 accepted) and what a registered scope covers."""

from __future__ import annotations

import pytest

from idp.smart.scopes import covered, describe, is_smart, parse


@pytest.mark.parametrize(("scope", "context", "resource", "perms", "query"), [
    ("patient/Observation.rs", "patient", "Observation", "rs", None),
    ("user/Patient.cruds", "user", "Patient", "cruds", None),
    ("patient/*.r", "patient", "*", "r", None),
    ("patient/Observation.rs?category=laboratory", "patient", "Observation", "rs",
     "category=laboratory"),
    ("system/Patient.s", "system", "Patient", "s", None),
    ("patient/Observation.read", "patient", "Observation", "rs", None),   # v1
    ("user/*.write", "user", "*", "cud", None),                          # v1
    ("user/*.*", "user", "*", "cruds", None),                            # v1
])
def test_valid_scopes_parse(scope, context, resource, perms, query):
    parsed = parse(scope)
    assert parsed is not None
    assert (parsed.context, parsed.resource, parsed.permissions, parsed.query) == (
        context, resource, frozenset(perms), query)


@pytest.mark.parametrize("scope", [
    "patient/Observation.", "patient/Observation.sr", "patient/Observation.rr",
    "patient/observation.rs", "doctor/Patient.rs", "patient/Patient.rs?", "patient/.rs",
    "patient/Patient.x", "patient/Patient.rs?a b", "openid", "launch", "",
    "patient/Patient.rs\n", "patient/" + "A" * 300 + ".rs",
])
def test_malformed_scopes_do_not_parse(scope):
    assert parse(scope) is None


@pytest.mark.parametrize(("scope", "registered", "expected"), [
    ("patient/Observation.rs", ["patient/*.rs"], True),
    ("patient/Observation.r", ["patient/Observation.rs"], True),
    ("patient/Observation.rs?category=laboratory", ["patient/Observation.rs"], True),
    ("patient/Observation.rs", ["patient/Observation.rs?category=laboratory"], False),
    ("patient/Observation.rs?category=vital-signs",
     ["patient/Observation.rs?category=laboratory"], False),
    ("patient/Observation.cruds", ["patient/*.rs"], False),
    ("user/Observation.rs", ["patient/*.rs"], False),
    ("patient/Observation.read", ["patient/*.rs"], True),     # v1 request, v2 registration
    ("patient/Observation.rs", ["patient/*.read"], True),     # v2 request, v1 registration
    ("patient/Observation.write", ["patient/*.rs"], False),
    ("launch", ["launch"], True),
    ("launch/patient", ["launch"], False),
])
def test_coverage(scope, registered, expected):
    assert covered(scope, registered) is expected


def test_smart_scopes_are_recognised_and_described():
    assert is_smart("fhirUser") and is_smart("launch/patient") and is_smart("patient/x")
    assert not is_smart("openid") and not is_smart("ehr.patients.read")
    assert describe("patient/Observation.rs") == \
        "Read, search the selected patient's Observation records in the EHR"
