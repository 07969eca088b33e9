"""The factor registry: factor types by kind, one registry per application.

Each factor module registers its type with @builtin when imported; idp.mfa.install puts a
registry of the built-in types on the app, and a deployment (or a test) may register more on
that app's registry. What is offered, and in which order, is policy: a kind is enabled when
policies/mfa.toml has its [factors.<kind>] entry, allowed per role by [roles], ordered by
`order` (unlisted kinds follow in the order they registered).
"""

from __future__ import annotations

from collections.abc import Iterator

from flask import Flask, current_app

from idp.context import policy
from idp.mfa.factors.base import Description, FactorType

EXTENSION = "idp.mfa.factors"
BUILTIN: list[type[FactorType]] = []


def builtin(cls: type[FactorType]) -> type[FactorType]:
    """Class decorator of the factor modules shipped with the IdP."""
    if cls not in BUILTIN:
        BUILTIN.append(cls)
    return cls


class Registry:
    def __init__(self, types: list[FactorType] | None = None) -> None:
        self._types: dict[str, FactorType] = {}
        for item in types or ():
            self.register(item)

    def register(self, factor_type: FactorType) -> FactorType:
        self._types[factor_type.kind] = factor_type
        return factor_type

    def get(self, kind: str) -> FactorType | None:
        """The type of an enabled kind (registered here and present in the policy)."""
        found = self._types.get(kind)
        return found if found is not None and kind in policy().mfa.factors else None

    def __iter__(self) -> Iterator[FactorType]:
        """Enabled types in policy order."""
        return iter(sorted((t for t in self._types.values() if t.kind in policy().mfa.factors),
                           key=lambda t: self.rank(t.kind)))

    def rank(self, kind: str) -> int:
        order = policy().mfa.order
        if kind in order:
            return order.index(kind)
        known = list(self._types)
        return len(order) + (known.index(kind) if kind in known else len(known))

    def stored(self) -> list[FactorType]:
        """Types enrolled as rows of mfa_factors (what a user "has"), in order."""
        return [t for t in self if t.stored]

    def allowed(self, role: str) -> list[FactorType]:
        """Stored types the role may use, in order."""
        permitted = set(policy().mfa.allowed(role))
        return [t for t in self.stored() if t.kind in permitted]

    def describe(self) -> dict[str, Description]:
        return {t.kind: t.describe() for t in self}


def install(app: Flask) -> Registry:
    found = app.extensions.get(EXTENSION)
    if found is None:
        found = app.extensions[EXTENSION] = Registry([cls() for cls in BUILTIN])
    return found


def registry() -> Registry:
    """The current application's registry."""
    return current_app.extensions[EXTENSION]
