"""SMART App Launch clinical scopes (v2 syntax, v1 accepted): parsing and coverage. Pure.

v2: `<context>/<resource>.<permissions>[?<query>]` with context patient|user|system, resource a
FHIR type or `*`, permissions a non-empty subsequence of `cruds` in that order. v1 suffixes are
accepted and read as their v2 equivalents (`.read` = `.rs`, `.write` = `.cud`, `.*` = `.cruds`):
a v1 scope is granted as written (the app asked in v1 and reads its grant in v1), and a v2
registration covers it (and vice versa).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CONTEXTS = ("patient", "user", "system")
PERMISSIONS = "cruds"
V1 = {"read": "rs", "write": "cud", "*": "cruds"}
# The non-clinical SMART scopes; they are ordinary entries of policies/scopes.toml.
LAUNCH_SCOPES = ("launch", "launch/patient", "launch/encounter")
SMART_SCOPES = (*LAUNCH_SCOPES, "fhirUser")

_SCOPE = re.compile(
    r"(?P<context>patient|user|system)/(?P<resource>\*|[A-Z][A-Za-z]{0,63})"
    r"\.(?P<perms>c?r?u?d?s?|read|write|\*)(?:\?(?P<query>[A-Za-z0-9_.:|,\-=&%]{1,200}))?")


@dataclass(frozen=True)
class ClinicalScope:
    context: str
    resource: str
    permissions: frozenset[str]
    query: str | None

    def covers(self, other: ClinicalScope) -> bool:
        """Does a grant of this scope include everything `other` asks for?"""
        return (self.context == other.context
                and self.resource in ("*", other.resource)
                and other.permissions <= self.permissions
                and self.query in (None, other.query))

    def allows(self, permission: str, resource: str) -> bool:
        return permission in self.permissions and self.resource in ("*", resource)


def parse(scope: str) -> ClinicalScope | None:
    """The clinical scope `scope` names, or None when it is not one (or malformed)."""
    if not isinstance(scope, str) or len(scope) > 300:
        return None
    match = _SCOPE.fullmatch(scope)
    if match is None:
        return None
    perms = V1.get(match["perms"], match["perms"])
    if not perms:
        return None
    return ClinicalScope(match["context"], match["resource"], frozenset(perms), match["query"])


def looks_clinical(scope: str) -> bool:
    """Starts like a clinical scope: a malformed one is invalid_scope, never ignored."""
    return isinstance(scope, str) and scope.split("/", 1)[0] in CONTEXTS and "/" in scope


def is_smart(scope: str) -> bool:
    return scope in SMART_SCOPES or looks_clinical(scope)


def covered(scope: str, registered: set[str] | list[str]) -> bool:
    """Is `scope` registered for the client, exactly or through a wider clinical scope?"""
    if scope in registered:
        return True
    wanted = parse(scope)
    if wanted is None:
        return False
    return any(r is not None and r.covers(wanted) for r in map(parse, registered))


def clinical(scopes: list[str]) -> list[ClinicalScope]:
    return [c for c in map(parse, scopes) if c is not None]


def describe(scope: str) -> str:
    """A consent-page sentence for a clinical scope."""
    parsed = parse(scope)
    if parsed is None:
        return scope
    whose = {"patient": "the selected patient's", "user": "any patient's you can see",
             "system": "all"}[parsed.context]
    what = "records" if parsed.resource == "*" else f"{parsed.resource} records"
    verbs = [name for letter, name in (("c", "create"), ("r", "read"), ("u", "update"),
                                       ("d", "delete"), ("s", "search"))
             if letter in parsed.permissions]
    text = f"{', '.join(verbs).capitalize()} {whose} {what} in the EHR"
    return f"{text} ({parsed.query})" if parsed.query else text
