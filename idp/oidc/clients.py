"""Registering relying parties: validation of metadata, secrets shown once, stored hashed."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import delete, select, update

from idp import clock
from idp.audit import service as audit
from idp.context import policy
from idp.core import outbound
from idp.core.crypto import digest
from idp.extensions import db
from idp.oidc import client_profile
from idp.oidc.models import LOOPBACK_HOSTS, AuthorizationCode, Client, Consent
from idp.oidc.registry import registry
from idp.oidc.tokens import revoke_where
from idp.policy import GRANT_TYPE_NAMES

GRANT_TYPES = GRANT_TYPE_NAMES
# The one list of client authentication methods: discovery, the SMART configuration, the
# endpoints, the CLI's --auth-method and the admin form derive theirs from it.
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt", "none")
CONFIDENTIAL_METHODS = tuple(m for m in AUTH_METHODS if m != "none")


class ClientError(ValueError):
    """Client metadata is invalid; the message names the field."""


class UriRefused(ClientError):
    """A URI the IdP would call is one the outbound policy forbids (an internal address).
    Carries what the audit trail records: the field, the host (never the path or query, which
    may hold secrets) and the policy's reason."""

    def __init__(self, field: str, host: str, reason: str) -> None:
        super().__init__(f"{field}: the IdP does not call this address: {reason}")
        self.field, self.host, self.reason = field, host, reason


def record_refusal(exc: UriRefused, actor: str | None) -> None:
    """Audit a refused URI (an SSRF attempt, or an internal RP not allow-listed). The caller
    has rolled the registration back; this is the one thing the refusal writes."""
    audit.record("registration.refused_uri", actor=actor, field=exc.field,
                 host=exc.host[:255], reason=exc.reason[:200])


def check_outbound_uri(uri: str, field: str) -> None:
    """Would the IdP be allowed to call this URI (idp/core/outbound.py)? Literal addresses in
    any spelling and names that resolve now to a forbidden address are refused; a name that
    does not resolve passes (delivery checks again, at connect time)."""
    try:
        outbound.client().check_url(uri)
    except outbound.OutboundRefused as exc:
        raise UriRefused(field, urlsplit(uri).hostname or "", exc.reason) from None


@dataclass(frozen=True)
class NewClient:
    client: Client
    client_secret: str | None  # shown once, never stored in clear


# RFC 8252 §7.1 private-use URI scheme: a reverse domain name the app's publisher controls.
PRIVATE_USE_SCHEME = re.compile(r"[a-z][a-z0-9-]*(\.[a-z0-9-]+)+")


def validate_native_uri(uri: str, field: str) -> str:
    """A native app's redirect: a loopback one (validate_uri), or RFC 8252 private-use scheme
    `com.example.app:/callback` (reverse domain, single slash, no authority)."""
    scheme, sep, rest = uri.partition(":")
    if sep and PRIVATE_USE_SCHEME.fullmatch(scheme) and rest.startswith("/") and \
            not rest.startswith("//") and "#" not in rest and "*" not in rest and \
            rest.isprintable() and " " not in rest:
        return uri
    return validate_uri(uri, field)


def validate_uri(uri: str, field: str) -> str:
    """https only, except http on loopback (RFC 8252); no fragment, no wildcard."""
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018  (raises on a malformed port)
    except ValueError:
        raise ClientError(f"{field}: {uri!r} is not a valid URI") from None
    if parts.fragment or "#" in uri:
        raise ClientError(f"{field}: {uri!r} must not have a fragment")
    if "*" in uri:
        raise ClientError(f"{field}: {uri!r} must not contain wildcards")
    if not parts.hostname:
        raise ClientError(f"{field}: {uri!r} needs a host")
    if "@" in parts.netloc:
        raise ClientError(f"{field}: {uri!r} must not carry user information")
    if parts.scheme == "https":
        return uri
    if parts.scheme == "http" and parts.hostname in (*LOOPBACK_HOSTS, "localhost"):
        return uri
    raise ClientError(f"{field}: {uri!r} must use https (http only on loopback)")


@dataclass(frozen=True)
class Lifetimes:
    """A client's own token lifetimes in seconds; None = the policy default."""

    access_token: int | None = None
    id_token: int | None = None
    refresh_token: int | None = None


LIFETIME_KINDS = ("access_token", "id_token", "refresh_token")


def validate_lifetimes(lifetimes: Lifetimes) -> Lifetimes:
    """Each value None or within [client_min_lifetime, max_<kind>_lifetime] of tokens.toml."""
    rules = policy().tokens
    for kind in LIFETIME_KINDS:
        value = getattr(lifetimes, kind)
        if value is None:
            continue
        highest = getattr(rules, f"max_{kind}_lifetime")
        if isinstance(value, bool) or not isinstance(value, int) or \
                not rules.client_min_lifetime <= value <= highest:
            label = kind.replace("_", "-")
            raise ClientError(f"{label}-lifetime: between {rules.client_min_lifetime} and "
                              f"{highest} seconds, or empty for the default "
                              f"({getattr(rules, f'{kind}_lifetime')} seconds)")
    return lifetimes


def _apply_lifetimes(client: Client, lifetimes: Lifetimes) -> None:
    for kind in LIFETIME_KINDS:
        setattr(client, f"{kind}_lifetime", getattr(lifetimes, kind))


def lifetimes_of(client: Client) -> Lifetimes:
    return Lifetimes(*(getattr(client, f"{kind}_lifetime", None) for kind in LIFETIME_KINDS))


@dataclass(frozen=True)
class Metadata:
    grant_types: list[str]
    method: str
    redirect_uris: list[str]
    logout_uris: list[str]
    scopes: list[str]


def validate_metadata(*, name: str, redirect_uris: list[str], public: bool = False,
                      grant_types: list[str] | None = None, scope: str | None = None,
                      post_logout_redirect_uris: list[str] | None = None,
                      backchannel_logout_uri: str | None = None, auth_method: str | None = None,
                      jwks: dict | None = None, id_token_alg: str | None = None) -> Metadata:
    """Every rule a client's metadata must meet, for create_client and update_client alike."""
    if not name or len(name) > 200:
        raise ClientError("name: 1-200 characters")
    texts = [("name", name), ("scope", scope or ""),
             ("backchannel-logout-uri", backchannel_logout_uri or ""),
             *(("redirect-uri", u) for u in redirect_uris),
             *(("post-logout-redirect-uri", u) for u in post_logout_redirect_uris or [])]
    for field, text in texts:
        if not isinstance(text, str) or any(ord(c) < 32 or ord(c) == 127 for c in text):
            raise ClientError(f"{field}: control characters are not allowed")
    grant_types = list(grant_types or ["authorization_code", "refresh_token"])
    for grant in grant_types:
        if grant not in GRANT_TYPES:
            raise ClientError(f"grant-type: {grant!r} is not one of {', '.join(GRANT_TYPES)}")
    method = auth_method or ("none" if public else (
        "private_key_jwt" if jwks else "client_secret_basic"))
    if method not in AUTH_METHODS:
        raise ClientError(f"auth-method: {method!r} is not one of {', '.join(AUTH_METHODS)}")
    if public and method != "none" or method == "none" and not public:
        raise ClientError("auth-method: public clients, and only they, use 'none'")
    if public and "client_credentials" in grant_types:
        raise ClientError("grant-type: a public client cannot use client_credentials")
    if "authorization_code" in grant_types and not redirect_uris:
        raise ClientError("redirect-uri: at least one is needed for authorization_code")
    check = validate_native_uri if public else validate_uri
    uris = [check(u, "redirect-uri") for u in redirect_uris]
    logout_uris = [validate_uri(u, "post-logout-redirect-uri")
                   for u in post_logout_redirect_uris or []]
    if backchannel_logout_uri:
        validate_uri(backchannel_logout_uri, "backchannel-logout-uri")
        check_outbound_uri(backchannel_logout_uri, "backchannel-logout-uri")
    scopes = (scope or "openid profile email").split()
    reg = registry()
    unknown = [s for s in scopes
               if s not in reg.supported_scopes(policy()) and not reg.in_family(s)]
    if unknown:
        raise ClientError(f"scope: unknown {', '.join(unknown)}")
    if method == "private_key_jwt":
        try:
            KeySet.import_key_set(jwks or {})
        except (JoseError, ValueError, TypeError, KeyError):
            raise ClientError("jwks: not a valid public JWK set") from None
        if not (jwks or {}).get("keys"):
            raise ClientError("jwks: private_key_jwt needs at least one key")
    if id_token_alg not in (None, *policy().keys.algorithms):
        raise ClientError(f"id-token-alg: one of {', '.join(policy().keys.algorithms)}")
    return Metadata(grant_types, method, uris, logout_uris, scopes)


def new_client_id() -> str:
    """128 random bits, URL-safe, never starting with '-' or '_': an id that begins with a dash
    is read as an option by command lines (`--client-id -x...`, `idp clients ... -x...`)."""
    while True:
        candidate = secrets.token_urlsafe(16)
        if candidate[0].isalnum():
            return candidate


def create_client(*, name: str, redirect_uris: list[str], public: bool = False,
                  grant_types: list[str] | None = None, scope: str | None = None,
                  post_logout_redirect_uris: list[str] | None = None,
                  backchannel_logout_uri: str | None = None, first_party: bool = False,
                  auth_method: str | None = None, jwks: dict | None = None,
                  loopback_any_port: bool = False, id_token_alg: str | None = None,
                  introspect_any: bool = False, client_id: str | None = None,
                  require_pkce: bool = False, actor: str | None = None,
                  lifetimes: Lifetimes | None = None, profile: str | None = None,
                  require_par: bool = False, dpop_bound: bool = False) -> NewClient:
    """Register a client. `profile` (policies/fapi.toml [profiles], e.g. fapi2), `require_par`
    (RFC 9126 require_pushed_authorization_requests) and `dpop_bound` (RFC 9449
    dpop_bound_access_tokens): idp.oidc.client_profile."""
    lifetimes = validate_lifetimes(lifetimes or Lifetimes())
    meta = validate_metadata(name=name, redirect_uris=redirect_uris, public=public,
                             grant_types=grant_types, scope=scope,
                             post_logout_redirect_uris=post_logout_redirect_uris,
                             backchannel_logout_uri=backchannel_logout_uri,
                             auth_method=auth_method, jwks=jwks, id_token_alg=id_token_alg)
    grant_types, method, uris, logout_uris, scopes = (
        meta.grant_types, meta.method, meta.redirect_uris, meta.logout_uris, meta.scopes)
    client_id = client_id or new_client_id()
    if db.session.execute(select(Client.id).where(Client.client_id == client_id)).first():
        raise ClientError(f"client-id: {client_id!r} exists already")
    secret = secrets.token_urlsafe(32) if method.startswith("client_secret") else None
    client = Client(
        client_id=client_id, client_secret_hash=digest(secret) if secret else None,
        client_name=name, redirect_uris=uris, post_logout_redirect_uris=logout_uris,
        backchannel_logout_uri=backchannel_logout_uri, grant_types=grant_types,
        response_types=["code"] if "authorization_code" in grant_types else [],
        scope=" ".join(scopes), token_endpoint_auth_method=method,
        jwks=jwks if method == "private_key_jwt" else None, first_party=first_party,
        require_pkce=public or require_pkce, loopback_any_port=loopback_any_port,
        id_token_signed_response_alg=id_token_alg, introspect_any=introspect_any)
    _apply_lifetimes(client, lifetimes)
    try:
        client_profile.apply(client, profile=profile, require_par=require_par,
                             dpop_bound=dpop_bound)
    except client_profile.ProfileError as exc:
        raise ClientError(str(exc)) from None
    db.session.add(client)
    db.session.flush()
    audit.record("client.created", client_id=client_id, actor=actor, name=name,
                 first_party=first_party, lifetimes=lifetimes.__dict__, profile=profile,
                 require_par=client.require_pushed_authorization_requests,
                 dpop_bound=client.dpop_bound_access_tokens)
    return NewClient(client, secret)


def update_client(client: Client, *, name: str, redirect_uris: list[str],
                  grant_types: list[str] | None, scope: str | None,
                  post_logout_redirect_uris: list[str] | None,
                  backchannel_logout_uri: str | None, auth_method: str,
                  first_party: bool, require_pkce: bool, jwks: dict | None = None,
                  actor: str | None = None, lifetimes: Lifetimes | None = None) -> str | None:
    """Replace a client's metadata under the rules create_client applies. Returns a new secret
    (shown once) when the change moved the client to a secret-based method it had no secret
    for; a client leaving secret-based methods loses its secret. `lifetimes` None keeps the
    client's token lifetimes as they are."""
    public = auth_method == "none"
    if lifetimes is not None:
        validate_lifetimes(lifetimes)
    meta = validate_metadata(name=name, redirect_uris=redirect_uris, public=public,
                             grant_types=grant_types, scope=scope,
                             post_logout_redirect_uris=post_logout_redirect_uris,
                             backchannel_logout_uri=backchannel_logout_uri,
                             auth_method=auth_method,
                             jwks=jwks if jwks is not None else client.jwks,
                             id_token_alg=client.id_token_signed_response_alg)
    try:  # a profiled client stays within its profile's authentication methods
        client_profile.validate(client.profile, method=meta.method)
    except client_profile.ProfileError as exc:
        raise ClientError(str(exc)) from None
    secret = None
    if meta.method.startswith("client_secret"):
        if not client.client_secret_hash:
            secret = secrets.token_urlsafe(32)
            client.client_secret_hash = digest(secret)
    else:
        client.client_secret_hash = None
    before = {"redirect_uris": list(client.redirect_uris or []), "scope": client.scope,
              "grant_types": list(client.grant_types or []),
              "token_endpoint_auth_method": client.token_endpoint_auth_method}
    client.client_name = name
    client.redirect_uris = meta.redirect_uris
    client.post_logout_redirect_uris = meta.logout_uris
    client.backchannel_logout_uri = backchannel_logout_uri or None
    client.grant_types = meta.grant_types
    client.response_types = ["code"] if "authorization_code" in meta.grant_types else []
    client.scope = " ".join(meta.scopes)
    client.token_endpoint_auth_method = meta.method
    if meta.method == "private_key_jwt":
        client.jwks = jwks if jwks is not None else client.jwks
    else:
        client.jwks = None
    client.first_party = first_party
    client.require_pkce = public or require_pkce
    if lifetimes is not None:
        before["lifetimes"] = lifetimes_of(client).__dict__
        _apply_lifetimes(client, lifetimes)
    audit.record("client.updated", client_id=client.client_id, actor=actor, before=before,
                 lifetimes=lifetimes_of(client).__dict__,
                 redirect_uris=meta.redirect_uris, scope=client.scope,
                 grant_types=meta.grant_types, token_endpoint_auth_method=meta.method,
                 first_party=first_party, require_pkce=client.require_pkce)
    return secret


def rotate_secret(client: Client, *, actor: str | None = None) -> str:
    """A new client secret (returned once, stored hashed); the old one stops working now."""
    if not client.token_endpoint_auth_method.startswith("client_secret"):
        raise ClientError("auth-method: only client_secret_* clients have a secret")
    secret = secrets.token_urlsafe(32)
    client.client_secret_hash = digest(secret)
    audit.record("client.secret_rotated", client_id=client.client_id, actor=actor)
    return secret


def _revoke_client_tokens(client_id: str) -> None:
    revoke_where(lambda model: model.client_id == client_id)
    now = clock.now()
    db.session.execute(update(AuthorizationCode).where(
        AuthorizationCode.client_id == client_id, AuthorizationCode.used_at.is_(None))
        .values(used_at=now).execution_options(synchronize_session=False))


def set_client_disabled(client: Client, disabled: bool, *, actor: str | None = None) -> None:
    """A disabled client cannot authorize, exchange or refresh; its tokens are revoked."""
    client.disabled = disabled
    if disabled:
        _revoke_client_tokens(client.client_id)
    audit.record("client.disabled" if disabled else "client.enabled",
                 client_id=client.client_id, actor=actor)


def delete_client(client: Client, *, actor: str | None = None) -> None:
    """Remove the client: its tokens are revoked, its consents withdrawn, the row deleted."""
    client_id = client.client_id
    _revoke_client_tokens(client_id)
    db.session.execute(delete(Consent).where(Consent.client_id == client_id))
    db.session.delete(client)
    audit.record("client.deleted", client_id=client_id, actor=actor, name=client.client_name)
