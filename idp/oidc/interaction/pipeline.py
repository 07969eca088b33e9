"""The /authorize interaction as a pipeline of small checks (node oidc-provider's interaction
policy: prompts made of checks).

Each check looks at one `Interaction` (the validated request, the browser's session and the
facts it needs, asked through `Services`) and either lets the request pass (None) or answers
an `Outcome`: a value saying what the browser must do first (sign in, step up, a gate, the
consent page, a feature's page) or the error the client gets, with the check's reason code.
The first outcome wins; when every check passes the outcome is `issue` (a code for the user,
with the AuthContext it was authenticated with). Built-in checks come from
idp.oidc.interaction.checks; features register theirs in idp.oidc.registry, placed before a
named built-in check or at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from authlib.oauth2.rfc6749.errors import OAuth2Error

from idp.oidc.auth_context import AuthContext
from idp.policy import AssurancePolicy


@dataclass(frozen=True)
class Services:
    """What checks ask (and the one thing one does) outside the request: the database behind
    each is the real one in the IdP; unit tests hand plain functions."""

    pending_gate: Callable[[Any], str | None]           # user -> endpoint of a step owed
    has_consent: Callable[[Any, Any, str], bool]        # (user, client, scope)
    achievable_acr: Callable[[Any], str]                # user -> strongest acr enrolled
    remember_consent: Callable[[Any, Any, str], None]   # (user, client, scope); /authorize commits


@dataclass(frozen=True)
class _NoScope:
    scope: str = ""


@dataclass(frozen=True)
class ProtocolRequest:
    """Stands for Authlib's grant when another protocol (a SAML AuthnRequest) runs the
    sign-in checks: `client` is its party (a SAML service provider), there is no
    redirect_uri (the protocol answers errors its own way) and no scope."""

    client: Any
    redirect_uri: str | None = None
    request: _NoScope = field(default_factory=_NoScope)


@dataclass
class Interaction:
    """One authorization request being decided.

    `grant` is Authlib's validated authorization grant; `sso` the browser's SSO session or
    None; `key` identifies this very request (login markers, SMART picks, EPCS ceremonies);
    `marker` is when this request first sent the user to sign in for prompt=login or max_age
    (a sign-in after it satisfies them); `decision` is the consent form's choice on POST.
    Checks may settle two things for later checks and for the code: `auth` (how the user
    authenticated for this response, when not the session's own sign-in: an EPCS ceremony)
    and `values` (what a feature settled, e.g. the patient picked for a SMART launch)."""

    grant: Any
    sso: Any | None
    params: Mapping[str, str]
    key: str
    return_to: str
    now: float
    assurance: AssurancePolicy
    services: Services
    marker: float | None = None
    decision: str | None = None
    auth: AuthContext | None = None
    login_settled: bool = False  # a feature check (EPCS) answered the sign-in questions
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def prompts(self) -> frozenset[str]:
        return frozenset((self.params.get("prompt") or "").split())

    @property
    def user(self) -> Any | None:
        return self.sso.user if self.sso is not None else None

    @property
    def client(self) -> Any:
        return self.grant.client

    @property
    def scope(self) -> str:
        return self.grant.request.scope or ""

    @property
    def redirect_uri(self) -> str:
        return self.grant.redirect_uri

    @property
    def consenting(self) -> bool:
        return self.decision is not None

    def requested_acr(self) -> str | None:
        """The weakest of the requested acr values this provider knows (acr_values lists
        acceptable values; any one of them satisfies the request)."""
        known = [a for a in (self.params.get("acr_values") or "").split()
                 if a in self.assurance.acr_values]
        return min(known, key=self.assurance.rank) if known else None

    def context(self) -> AuthContext | None:
        """How the user authenticated for this response."""
        if self.auth is not None:
            return self.auth
        return AuthContext.of_session(self.sso) if self.sso is not None else None


# Outcome kinds, and what the authorize view does with each (idp.oidc.interaction.respond):
ISSUE = "issue"        # the authorization response with a code for the user
LOGIN = "login"        # to the sign-in page; `mark`: remember when (prompt=login, max_age)
STEP_UP = "stepup"     # a stronger factor now (MFA step-up to `acr`)
REDIRECT = "redirect"  # to `endpoint` (a gate, an EPCS ceremony, the SMART patient picker)
#                        or `url` (a feature's same-site URL: UDAP Tiered OAuth's upstream)
CONSENT = "consent"    # the consent page
DENY = "deny"          # the user said no: access_denied to the client
ERROR = "error"        # `error` (an OAuth2Error) to the client's redirect_uri
PAGE = "page"          # the IdP's own error page (invalid_request, `description`)


@dataclass(frozen=True)
class Outcome:
    kind: str
    reason: str  # the deciding check's reason code (no_session, max_age, step_up, ...)
    endpoint: str | None = None
    args: Mapping[str, Any] = field(default_factory=dict)
    url: str | None = None  # REDIRECT to this same-site URL instead of `endpoint`
    error: OAuth2Error | None = None
    description: str | None = None
    acr: str | None = None
    mark: bool = False
    auth: AuthContext | None = None
    values: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def fail(cls, reason: str, error: OAuth2Error) -> Outcome:
        return cls(ERROR, reason, error=error)

    @classmethod
    def go(cls, reason: str, endpoint: str, **args: Any) -> Outcome:
        return cls(REDIRECT, reason, endpoint=endpoint, args=args)


CheckFn = Callable[[Interaction], "Outcome | None"]


@dataclass(frozen=True)
class Check:
    """A named step of the pipeline; `before` places a feature's check ahead of the named
    built-in check (None: after all of them)."""

    name: str
    run: CheckFn
    before: str | None = None


def arrange(builtin: Iterable[Check], registered: Iterable[Check]) -> list[Check]:
    """Built-in checks in their order, each feature check inserted before the one it names."""
    ordered = list(builtin)
    for check in registered:
        names = [c.name for c in ordered]
        if check.before is None:
            ordered.append(check)
        elif check.before in names:
            ordered.insert(names.index(check.before), check)
        else:
            raise ValueError(f"check {check.name!r}: no check {check.before!r} to go before")
    return ordered


def run(ix: Interaction, checks: Iterable[Check]) -> Outcome:
    """The first check's outcome, or a code for the user when all pass."""
    for check in checks:
        outcome = check.run(ix)
        if outcome is not None:
            return outcome
    return Outcome(ISSUE, "granted", auth=ix.context(), values=dict(ix.values))
