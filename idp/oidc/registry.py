"""Extension points of the OpenID provider: what features (SMART, EPCS, ...) contribute.

The core learns about a feature only through this registry, filled by the feature's
`install(app)` at start (the way node oidc-provider takes `findAccount().claims`, `audiences`
and `extraTokenClaims` hooks). One registry per application (`app.extensions["idp.oidc"]`), so
an app built with a feature switched off carries none of its contributions. Lookups happen at
request time through `registry()`; the lists are filled once and never change afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app

if TYPE_CHECKING:
    from joserfc.jwk import KeySet

    from idp.accounts.models import User
    from idp.keys.jwt import Kind
    from idp.oidc.auth_context import AuthContext
    from idp.oidc.models import Client
    from idp.policy import Policy

EXTENSION = "idp.oidc"

# (user, claim names the granted scopes release) -> claims (the core keeps only those names)
ClaimsSource = Callable[["User", "set[str]"], Mapping[str, Any]]
# granted scopes -> resource identifiers (access token `aud`)
AudienceSource = Callable[[list[str]], list[str]]
# (user, granted scopes, how the user authenticated or None) -> extra access-token claims
TokenClaimsSource = Callable[["User", list[str], "AuthContext | None"], Mapping[str, Any]]
# (granted scopes, how the user authenticated) -> parameters beside the tokens of a response
TokenResponseSource = Callable[[list[str], "AuthContext"], Mapping[str, Any]]
# () -> members a feature adds to the discovery document (e.g. RFC 9396
# authorization_details_types_supported)
DiscoverySource = Callable[[], Mapping[str, Any]]
# Authlib grant hook after_validate_authorization_request_payload: (grant, redirect_uri)
RequestRule = Callable[[Any, str], None]
# At code issuance: (oauth request, grant family id, user, values the interaction settled);
# raises BindingRefused when the grant cannot be made (nothing is stored then)
CodeBinder = Callable[[Any, str, "User", Mapping[str, Any]], None]


class Refused(ValueError):
    """A feature refuses a registration or a client assertion: `error` is the protocol's
    error code, str() its safe description."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error


@dataclass(frozen=True)
class TrustedRegistration:
    """What a registrar (UDAP) accepted at /register: the RFC 7591 metadata to register under
    the usual rules and admin approval (idp.admin.registration), the client this identity
    registered before (a modification, or with `cancel` its cancellation), the statement to
    echo, and `bind(client)` to record the feature's link once the client exists."""

    metadata: dict[str, Any]
    client_id: str | None
    cancel: bool
    statement: str
    bind: Callable[[Client], None]


@dataclass(frozen=True)
class Registrar:
    """A kind of registration request a feature answers at /register without an initial
    access token: `recognizes(body)` (e.g. `udap` with a software_statement) and
    `verify(body)` -> TrustedRegistration, or Refused (error code of the feature's spec)."""

    recognizes: Callable[[Any], bool]
    verify: Callable[[dict[str, Any]], TrustedRegistration]


@dataclass(frozen=True)
class AssertionCheck:
    """How to verify a client assertion of a client a feature manages: the signer's keys
    (validated by the feature: UDAP's x5c leaf), the JWT kind, and `accept(claims,
    grant_type)`, run on the verified claims, which returns claims the access token carries
    (UDAP hl7-b2b) or raises Refused."""

    keys: KeySet
    kind: Kind
    accept: Callable[[dict[str, Any], str | None], Mapping[str, Any]]


# (client, the assertion) -> AssertionCheck for a client the feature manages, else None;
# raises Refused (e.g. the certificate chain is not trusted)
AssertionSource = Callable[["Client", str], "AssertionCheck | None"]


class BindingRefused(ValueError):
    """A feature refuses to bind its context to a code (e.g. a SMART launch consumed
    meanwhile); str() is safe to send as error_description."""


@dataclass(frozen=True)
class ScopeFamily:
    """An open set of scopes a feature defines by syntax (SMART clinical scopes), beside the
    closed list of policies/scopes.toml."""

    recognizes: Callable[[str], bool]            # a well-formed member of the family?
    covered: Callable[[str, set[str]], bool]     # granted through a wider registered one?
    describe: Callable[[str], str]               # the consent page's sentence


@dataclass
class Registry:
    features: set[str] = field(default_factory=set)  # installed (scopes.toml `feature` tags)
    claims: list[ClaimsSource] = field(default_factory=list)
    audiences: list[AudienceSource] = field(default_factory=list)
    token_claims: list[TokenClaimsSource] = field(default_factory=list)
    token_response: list[TokenResponseSource] = field(default_factory=list)
    request_rules: list[RequestRule] = field(default_factory=list)
    code_binders: list[CodeBinder] = field(default_factory=list)
    scope_families: list[ScopeFamily] = field(default_factory=list)
    discovery: list[DiscoverySource] = field(default_factory=list)
    registrars: list[Registrar] = field(default_factory=list)
    assertion_sources: list[AssertionSource] = field(default_factory=list)
    # /authorize interaction checks (idp.oidc.interaction.Check), placed by their `before`
    checks: list[Any] = field(default_factory=list)
    _scopes: frozenset[str] | None = None

    # -- scopes ------------------------------------------------------------------------------
    def supported_scopes(self, policy: Policy) -> frozenset[str]:
        """The scopes of policies/scopes.toml this app offers: those of no feature, and those
        of installed features (policy and features are fixed once the app is built)."""
        if self._scopes is None:
            self._scopes = frozenset(name for name, scope in policy.scopes.items()
                                     if scope.feature is None or scope.feature in self.features)
        return self._scopes

    def in_family(self, scope: str) -> bool:
        return any(family.recognizes(scope) for family in self.scope_families)

    def covered(self, scope: str, registered: set[str]) -> bool:
        return any(family.covered(scope, registered) for family in self.scope_families)

    def describe(self, scope: str) -> str | None:
        for family in self.scope_families:
            if family.recognizes(scope):
                return family.describe(scope)
        return None

    # -- contributions -----------------------------------------------------------------------
    def extra_claims(self, user: User, allowed: set[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for source in self.claims:
            found.update(source(user, allowed))
        return found

    def extra_audiences(self, scopes: list[str]) -> list[str]:
        return [a for source in self.audiences for a in source(scopes)]

    def extra_token_claims(self, user: User, scopes: list[str], ctx: AuthContext | None
                           ) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for source in self.token_claims:
            found.update(source(user, scopes, ctx))
        return found

    def extra_token_response(self, scopes: list[str], ctx: AuthContext) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for source in self.token_response:
            found.update(source(scopes, ctx))
        return found


def install(app: Flask) -> Registry:
    """An empty registry for `app` (before any feature installs)."""
    app.extensions[EXTENSION] = Registry()
    return app.extensions[EXTENSION]


def of(app: Flask) -> Registry:
    return app.extensions[EXTENSION]


def registry() -> Registry:
    """The registry of the application handling this request (or CLI command)."""
    return current_app.extensions[EXTENSION]


def add_feature(app: Flask, name: str, **contributions: Iterable[Any]) -> None:
    """Register a feature and its contributions: add_feature(app, "smart", claims=[...], ...).
    Each keyword names a list of the registry."""
    reg = of(app)
    reg.features.add(name)
    reg._scopes = None
    for kind, items in contributions.items():
        if kind not in Registry.__dataclass_fields__ or kind.startswith("_") or \
                kind == "features":
            raise TypeError(f"no extension point {kind!r}")
        getattr(reg, kind).extend(items)
