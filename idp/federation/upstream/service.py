"""Brokering to upstream OpenID Providers: registration, discovery (cached), the code flow with
PKCE, state and nonce, ID token validation, linking, and the upstream's logout.

Every call out goes through the one outbound client (idp.core.outbound: SSRF rules, no
redirects, short timeouts, a size cap); every token is verified by the one JWT verifier
(idp.keys.jwt, kinds UPSTREAM_ID_TOKEN and UPSTREAM_LOGOUT_TOKEN). No Flask request objects
here: the views parse, call these functions and commit."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast
from urllib.parse import quote, urlencode, urlsplit

import requests
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import CursorResult, func, select, update
from sqlalchemy import delete as sql_delete
from sqlalchemy.exc import IntegrityError

from idp import clock
from idp.accounts.models import User
from idp.audit import service as audit
from idp.context import policy, settings
from idp.core import bounded_json, brokering, crypto, outbound
from idp.core.crypto import digest
from idp.extensions import db
from idp.federation.upstream.models import (
    Upstream,
    UpstreamFlow,
    UpstreamLink,
    UpstreamPending,
    UpstreamSession,
)
from idp.keys import jwt
from idp.oidc.models import UsedDpopProof
from idp.policy import UpstreamsPolicy
from idp.sessions import service as sessions
from idp.sessions.models import SsoSession

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
ENV_RE = re.compile(r"[A-Z_][A-Z0-9_]{0,99}")
LINK_BY = ("email", "upn", "npi")
DOMAIN_RE = re.compile(r"([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,63}")
PURGE_EVERY = 200  # about one write in this many also deletes the expired rows (idp.oidc.par)


class UpstreamError(Exception):
    """A sign-in at an upstream that cannot be accepted. `reason` is for the audit trail (no
    token data); the page shows one readable message."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConfigError(ValueError):
    """An upstream registration that cannot be saved; the message says why."""


def rules() -> UpstreamsPolicy:
    return policy().upstreams


# -- registration ------------------------------------------------------------------------------
def create(*, name: str, issuer: str, client_id: str, client_secret: str | None,
           secret_env: str | None = None, scope: str = "openid profile email",
           link_by: str = "email", allowed_domains: list[str] | tuple[str, ...] = (),
           actor: str, client_auth: str = "client_secret") -> Upstream:
    """A new upstream. `client_auth`: "client_secret" (the secret, or the environment
    variable holding it, is required), or the name of a feature's ClientAuth
    (idp.core.brokering) for an upstream that feature enrolls (no secret)."""
    name = (name or "").strip().lower()
    if not NAME_RE.fullmatch(name):
        raise ConfigError("name: 1-64 lowercase letters, digits, '-' or '_' (it is in the "
                          "redirect URI)")
    issuer = (issuer or "").strip().rstrip("/")
    parts = urlsplit(issuer)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or \
            parts.fragment:
        raise ConfigError("issuer: an https URL without query or fragment")
    if parts.scheme == "http" and settings().issuer.startswith("https://"):
        raise ConfigError("issuer: https is required (this IdP's issuer is https)")
    if not client_id or len(client_id) > 255:
        raise ConfigError("client-id: required, at most 255 characters")
    if client_auth != "client_secret":
        if client_secret or secret_env or brokering.client_auth(client_auth) is None:
            raise ConfigError(f"client auth {client_auth!r}: no such method, and no secret")
    elif bool(client_secret) == bool(secret_env):
        raise ConfigError("give the client secret (stored encrypted) or the name of the "
                          "environment variable that holds it, one of the two")
    if secret_env and not ENV_RE.fullmatch(secret_env):
        raise ConfigError("client-secret-env: an environment variable name")
    scopes = scope.split()
    if "openid" not in scopes or len(scope) > 500:
        raise ConfigError("scope: must include openid")
    if link_by not in LINK_BY:
        raise ConfigError(f"link-by: one of {', '.join(LINK_BY)}")
    domains = sorted({d.strip().lower().lstrip("@") for d in allowed_domains if d.strip()})
    for domain in domains:
        if not DOMAIN_RE.fullmatch(domain):
            raise ConfigError(f"allowed-domain: {domain!r} is not a domain name")
    if db.session.execute(select(Upstream.id).where(Upstream.name == name)).first():
        raise ConfigError(f"an upstream named {name!r} exists already")
    outbound.client().check_url(issuer + "/.well-known/openid-configuration")
    row = Upstream(name=name, issuer=issuer, client_id=client_id,
                   client_secret_encrypted=crypto.encrypt(client_secret) if client_secret
                   else None, secret_env=secret_env, scope=" ".join(scopes), link_by=link_by,
                   allowed_domains=domains, enabled=True, created_at=clock.now(),
                   client_auth=client_auth)
    db.session.add(row)
    db.session.flush()
    audit.record("upstream.created", actor=actor, upstream=name, issuer=issuer,
                 link_by=link_by, domains=domains, client_auth=client_auth)
    return row


def set_enabled(row: Upstream, enabled: bool, actor: str) -> None:
    row.enabled = enabled
    audit.record("upstream.enabled" if enabled else "upstream.disabled", actor=actor,
                 upstream=row.name)


def delete(row: Upstream, actor: str) -> None:
    audit.record("upstream.deleted", actor=actor, upstream=row.name, issuer=row.issuer)
    db.session.delete(row)


def redirect_uri(row: Upstream) -> str:
    return f"{settings().issuer}/upstream/{row.name}/callback"


def backchannel_logout_uri(row: Upstream) -> str:
    return f"{settings().issuer}/upstream/{row.name}/backchannel-logout"


def by_name(name: str) -> Upstream | None:
    if not NAME_RE.fullmatch(name or ""):
        return None
    return db.session.execute(select(Upstream).where(Upstream.name == name)).scalar_one_or_none()


def listing(enabled_only: bool = False) -> list[Upstream]:
    query = select(Upstream).order_by(Upstream.name)
    if enabled_only:
        query = query.where(Upstream.enabled.is_(True))
    return list(db.session.execute(query).scalars())


def client_secret(row: Upstream) -> str:
    if row.secret_env:
        value = os.environ.get(row.secret_env, "")
        if not value:
            raise UpstreamError(f"client secret: environment variable {row.secret_env} unset")
        return value
    assert row.client_secret_encrypted is not None
    return crypto.decrypt(row.client_secret_encrypted)


# -- discovery and keys ------------------------------------------------------------------------
def _get_json(url: str) -> dict[str, Any]:
    try:
        response = outbound.client().get(url, headers={"Accept": "application/json"})
    except outbound.OutboundRefused as exc:
        raise UpstreamError(f"outbound policy refused the upstream ({exc.reason})") from None
    except requests.RequestException as exc:
        raise UpstreamError(f"upstream unreachable ({type(exc).__name__})") from None
    if response.status_code != 200:
        raise UpstreamError(f"upstream answered {response.status_code}")
    try:
        data = bounded_json.loads(response.content)
    except ValueError:
        raise UpstreamError("upstream answered something that is not JSON") from None
    if not isinstance(data, dict):
        raise UpstreamError("upstream answered something that is not a JSON object")
    return data


def metadata(row: Upstream, *, force: bool = False) -> dict[str, Any]:
    """The upstream's discovery document, cached `discovery_cache_seconds`. Its issuer must be
    the registered one exactly (OIDC Discovery §4.3)."""
    now = clock.now()
    fresh = row.discovery_fetched_at is not None and \
        now - row.discovery_fetched_at < timedelta(seconds=rules().discovery_cache_seconds)
    if row.discovery and fresh and not force:
        return row.discovery
    data = _get_json(row.issuer + "/.well-known/openid-configuration")
    if data.get("issuer") != row.issuer:
        raise UpstreamError("discovery document names another issuer")
    for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        value = data.get(name)
        if not isinstance(value, str) or urlsplit(value).scheme not in ("https", "http"):
            raise UpstreamError(f"discovery document lacks {name}")
    row.discovery, row.discovery_fetched_at = data, now
    return data


def _keyset(data: dict[str, Any]) -> KeySet:
    try:
        return KeySet.import_key_set({"keys": [k for k in data.get("keys", [])
                                               if isinstance(k, dict) and "d" not in k]})
    except (JoseError, ValueError, TypeError, KeyError):
        raise UpstreamError("upstream JWKS unusable") from None


def keys(row: Upstream, kid: str | None) -> KeySet:
    """The upstream's keys; fetched again when `kid` is not among the cached ones, at most
    every `jwks_refetch_min_seconds` (random kids must not make us hammer the upstream)."""
    now = clock.now()
    cached = row.jwks or {}
    known = {k.get("kid") for k in cached.get("keys", []) if isinstance(k, dict)}
    stale = row.jwks_fetched_at is None or \
        now - row.jwks_fetched_at >= timedelta(seconds=rules().discovery_cache_seconds)
    unknown = kid is not None and kid not in known
    may_refetch = row.jwks_fetched_at is None or \
        now - row.jwks_fetched_at >= timedelta(seconds=rules().jwks_refetch_min_seconds)
    if not cached or stale or (unknown and may_refetch):
        cached = _get_json(metadata(row)["jwks_uri"])
        row.jwks, row.jwks_fetched_at = cached, now
    return _keyset(cached)


# -- the trip to the upstream ------------------------------------------------------------------
def _challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()
                                    ).rstrip(b"=").decode()


def begin(row: Upstream, next_url: str, *, login_hint: str | None = None) -> tuple[str, str]:
    """Record a flow and return (the upstream authorization URL, the state). The caller keeps
    the state in the browser's flow cookie too (the callback must come from this browser)."""
    if not row.enabled:
        raise UpstreamError("upstream disabled")
    meta = metadata(row)
    state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
    now = clock.now()
    if secrets.randbelow(PURGE_EVERY) == 0:
        purge_expired()
    db.session.add(UpstreamFlow(
        state_hash=digest(state), upstream_id=row.id, nonce=nonce,
        verifier_encrypted=crypto.encrypt(verifier), next_url=next_url, purpose="login",
        created_at=now, expires_at=now + timedelta(seconds=rules().flow_lifetime)))
    params = {"response_type": "code", "client_id": row.client_id,
              "redirect_uri": redirect_uri(row), "scope": row.scope, "state": state,
              "nonce": nonce, "code_challenge": _challenge(verifier),
              "code_challenge_method": "S256"}
    if login_hint:
        params["login_hint"] = login_hint
    endpoint = meta["authorization_endpoint"]
    separator = "&" if urlsplit(endpoint).query else "?"
    audit.record("upstream.redirected", upstream=row.name)
    return f"{endpoint}{separator}{urlencode(params)}", state


def purge_expired() -> dict[str, int]:
    """Delete the flows past their lifetime (used or not: a state that comes back after is
    "unknown", refused all the same) and the remembered jtis past their token's exp. Called
    from begin() and from the logout token's path, about one call in PURGE_EVERY, as
    idp.oidc.par and idp.oidc.dpop purge theirs; returns the counts."""
    now = clock.now()
    flows = cast(CursorResult, db.session.execute(
        sql_delete(UpstreamFlow).where(UpstreamFlow.expires_at <= now)
        .execution_options(synchronize_session=False)))
    jtis = cast(CursorResult, db.session.execute(
        sql_delete(UsedDpopProof).where(UsedDpopProof.expires_at <= now)
        .execution_options(synchronize_session=False)))
    return {"flows": flows.rowcount, "jtis": jtis.rowcount}


def claim_flow(row: Upstream, state: str, browser_state: str | None) -> UpstreamFlow:
    """The flow this callback ends, used once. Refused: no state, a state this browser did not
    start (login CSRF), one of another upstream (mix-up), expired or used (replay)."""
    if not state or len(state) > 128:
        raise UpstreamError("state missing")
    if not browser_state or not secrets.compare_digest(state, browser_state):
        raise UpstreamError("state not started by this browser")
    flow = db.session.get(UpstreamFlow, digest(state))
    if flow is None:
        raise UpstreamError("state unknown")
    if flow.upstream_id != row.id:
        raise UpstreamError("state belongs to another upstream (mix-up)")
    now = clock.now()
    if flow.expires_at <= now:
        raise UpstreamError("state expired")
    done = cast(CursorResult, db.session.execute(
        update(UpstreamFlow).where(UpstreamFlow.state_hash == flow.state_hash,
                                   UpstreamFlow.used_at.is_(None))
        .values(used_at=now).execution_options(synchronize_session=False)))
    if not done.rowcount:
        raise UpstreamError("state used already (replay)")
    return flow


def check_issuer_parameter(row: Upstream, iss: str | None) -> None:
    """RFC 9207: the authorization response's `iss` must be this upstream's issuer; an upstream
    that announces the parameter must send it."""
    meta = metadata(row)
    if iss is None:
        if meta.get("authorization_response_iss_parameter_supported") is True:
            raise UpstreamError("authorization response without iss (RFC 9207)")
        return
    if iss != row.issuer:
        raise UpstreamError("authorization response from another issuer (mix-up, RFC 9207)")


@dataclass(frozen=True)
class Upstreamed:
    """What a completed trip proved: the verified ID token's claims, and the token itself
    (kept encrypted as the id_token_hint of a later logout at the upstream)."""

    claims: dict[str, Any]
    id_token: str


def exchange(row: Upstream, flow: UpstreamFlow, code: str) -> Upstreamed:
    """Redeem the code (with the PKCE verifier) and verify the ID token (OIDC Core §3.1.3.7):
    signature by a key of the upstream's JWKS with an asymmetric alg, typ, iss, aud, azp, exp,
    iat, sub, and the nonce of this flow."""
    if not code or len(code) > 2048:
        raise UpstreamError("code missing")
    meta = metadata(row)
    data = {"grant_type": "authorization_code", "code": code,
            "redirect_uri": redirect_uri(row),
            "code_verifier": crypto.decrypt(flow.verifier_encrypted)}
    methods = meta.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    headers = {"Accept": "application/json"}
    if row.client_auth != "client_secret":
        auth = brokering.client_auth(row.client_auth)
        if auth is None:
            raise UpstreamError(f"client authentication {row.client_auth} not installed")
        try:
            data.update(auth(row.client_id, meta["token_endpoint"]))
        except brokering.BrokerRefused as exc:
            raise UpstreamError(f"client authentication: {exc}") from None
    elif "client_secret_basic" in methods:
        secret = client_secret(row)
        pair = f"{_form(row.client_id)}:{_form(secret)}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    else:
        data.update(client_id=row.client_id, client_secret=client_secret(row))
    try:
        response = outbound.client().post(meta["token_endpoint"], data=data, headers=headers)
    except outbound.OutboundRefused as exc:
        raise UpstreamError(f"outbound policy refused the token endpoint ({exc.reason})"
                            ) from None
    except requests.RequestException as exc:
        raise UpstreamError(f"token endpoint unreachable ({type(exc).__name__})") from None
    try:
        answer = bounded_json.loads(response.content)
    except ValueError:
        answer = None
    if response.status_code != 200 or not isinstance(answer, dict):
        error = answer.get("error") if isinstance(answer, dict) else None
        raise UpstreamError(f"token endpoint refused the code ({str(error)[:40]})")
    token = answer.get("id_token")
    if not isinstance(token, str):
        raise UpstreamError("no ID token in the token response")
    claims = verify_id_token(row, token)
    if not isinstance(claims.get("nonce"), str) or \
            not secrets.compare_digest(claims["nonce"], flow.nonce):
        raise UpstreamError("ID token nonce does not match")
    return Upstreamed(claims, token)


def _form(value: str) -> str:
    return quote(value, safe="")


def _kid(token: str) -> str | None:
    try:
        head = base64.urlsafe_b64decode(token.split(".")[0] + "==")
        kid = bounded_json.loads(head).get("kid")
    except (ValueError, AttributeError, IndexError):
        return None
    return kid if isinstance(kid, str) else None


def verify_id_token(row: Upstream, token: str) -> dict[str, Any]:
    try:
        verified = jwt.verify(token, jwt.Kind.UPSTREAM_ID_TOKEN, keys=keys(row, _kid(token)),
                              issuer=row.issuer, client_id=row.client_id)
    except jwt.InvalidJWT as exc:
        raise UpstreamError(f"ID token refused: {exc}") from None
    return verified.claims


# -- who is it ---------------------------------------------------------------------------------
def find_link(issuer: str, subject: str) -> UpstreamLink | None:
    return db.session.execute(select(UpstreamLink).where(
        UpstreamLink.issuer == issuer, UpstreamLink.subject == subject)).scalar_one_or_none()


def mfa_at_upstream(row: Upstream, claims: dict[str, Any]) -> bool:
    """The upstream says a second factor was used (amr or acr), and policy trusts it."""
    if not rules().rule(row.name).trust_upstream_mfa:
        return False
    amr = claims.get("amr")
    amr = amr if isinstance(amr, list) else []
    return bool(set(map(str, amr)) & set(rules().mfa_amr)) or \
        str(claims.get("acr", "")) in rules().mfa_acr


def _identifier(row: Upstream, claims: dict[str, Any]) -> str | None:
    """The claim the upstream links by (email, upn or npi), when the upstream vouches for it."""
    if row.link_by == "email":
        email = claims.get("email")
        return email.strip().lower() if isinstance(email, str) and \
            claims.get("email_verified") is True else None
    if row.link_by == "upn":
        upn = claims.get("upn") or claims.get("preferred_username")
        return upn.strip().lower() if isinstance(upn, str) else None
    npi = claims.get("npi")
    return npi if isinstance(npi, str) and re.fullmatch(r"[0-9]{10}", npi) else None


def auto_link_candidate(row: Upstream, claims: dict[str, Any]) -> User | None:
    """The one local account an unknown upstream identity may be linked to without proof:
    only when policy allows it for this upstream, the identifier is vouched for and in one of
    the upstream's allowed domains, and exactly one enabled account has it."""
    if not rules().rule(row.name).auto_link or not row.allowed_domains:
        return None
    value = _identifier(row, claims)
    if value is None:
        return None
    if row.link_by in ("email", "upn"):
        domain = value.rpartition("@")[2]
        if "@" not in value or domain not in row.allowed_domains:
            return None
        column = User.email if row.link_by == "email" else User.username
        found = list(db.session.execute(select(User).where(
            func.lower(column) == value, User.disabled.is_(False))).scalars())
    else:
        found = list(db.session.execute(select(User).where(
            User.npi == value, User.disabled.is_(False))).scalars())
    return found[0] if len(found) == 1 else None


def link(user: User, row: Upstream, claims: dict[str, Any], how: str, actor: str | None = None
         ) -> UpstreamLink:
    email = claims.get("email") if isinstance(claims.get("email"), str) else None
    made = UpstreamLink(user_id=user.id, upstream_id=row.id, issuer=row.issuer,
                        subject=str(claims["sub"]), email=(email or "")[:254] or None, how=how,
                        created_at=clock.now())
    db.session.add(made)
    db.session.flush()
    audit.record("upstream.linked", user_id=user.id, actor=actor, upstream=row.name, how=how,
                 link=made.id)
    return made


def links_of(user: User) -> list[tuple[UpstreamLink, Upstream]]:
    return [(lk, up) for lk, up in db.session.execute(
        select(UpstreamLink, Upstream).join(Upstream, Upstream.id == UpstreamLink.upstream_id)
        .where(UpstreamLink.user_id == user.id).order_by(UpstreamLink.id)).all()]


def unlink(user: User, link_id: int) -> None:
    """Remove one of the user's links; refused when it is the last way to sign in (no
    password and no other link)."""
    found = db.session.get(UpstreamLink, link_id)
    if found is None or found.user_id != user.id:
        raise ConfigError("no such linked identity")
    others = db.session.execute(select(func.count()).select_from(UpstreamLink).where(
        UpstreamLink.user_id == user.id, UpstreamLink.id != link_id)).scalar_one()
    if not user.password_hash and not others:
        raise ConfigError("this is your only way to sign in: set a password first")
    audit.record("upstream.unlinked", user_id=user.id, link=found.id,
                 upstream_id=found.upstream_id)
    db.session.delete(found)


# -- pending links -----------------------------------------------------------------------------
SHOWN_CLAIMS = ("email", "email_verified", "given_name", "family_name", "name",
                "preferred_username", "upn", "npi")


def hold(row: Upstream, done: Upstreamed, next_url: str) -> str:
    """Keep an unknown identity while the person proves an account or applies; returns the
    handle for the browser's flow cookie (stored as its SHA-256)."""
    handle = secrets.token_urlsafe(32)
    now = clock.now()
    shown = {k: done.claims[k] for k in SHOWN_CLAIMS
             if isinstance(done.claims.get(k), str | bool)}
    sid = done.claims.get("sid")
    db.session.add(UpstreamPending(
        id=digest(handle), upstream_id=row.id, issuer=row.issuer,
        subject=str(done.claims["sub"]), claims=shown,
        upstream_sid=sid if isinstance(sid, str) else None, next_url=next_url,
        created_at=now, expires_at=now + timedelta(seconds=rules().link_lifetime)))
    audit.record("upstream.unknown_identity", upstream=row.name)
    return handle


def pending(handle: str | None) -> UpstreamPending | None:
    if not isinstance(handle, str) or not handle or len(handle) > 128:
        return None
    item = db.session.get(UpstreamPending, digest(handle))
    if item is None or item.used_at is not None or item.expires_at <= clock.now():
        return None
    return item


def use_pending(item: UpstreamPending) -> bool:
    done = cast(CursorResult, db.session.execute(
        update(UpstreamPending).where(UpstreamPending.id == item.id,
                                      UpstreamPending.used_at.is_(None))
        .values(used_at=clock.now()).execution_options(synchronize_session=False)))
    return bool(done.rowcount)


def link_pending(item: UpstreamPending, user: User, how: str, actor: str | None = None
                 ) -> UpstreamLink | None:
    """Link a held identity (after the account was proven, or an application approved)."""
    row = db.session.get(Upstream, item.upstream_id)
    if row is None or find_link(item.issuer, item.subject) is not None:
        return None
    return link(user, row, {**item.claims, "sub": item.subject}, how, actor)


# -- sessions and logout -----------------------------------------------------------------------
def record_session(sso: SsoSession, row: Upstream, subject: str, sid: str | None,
                   id_token: str | None) -> None:
    db.session.add(UpstreamSession(
        sso_session_id=sso.id, upstream_id=row.id, subject=subject,
        upstream_sid=sid[:255] if isinstance(sid, str) else None,
        id_token_encrypted=crypto.encrypt(id_token) if id_token else None,
        created_at=clock.now()))


def backchannel_logout(row: Upstream, token: str) -> list[str]:
    """An upstream's logout token (Back-Channel Logout 1.0 §2.6): end our sessions its sid (or
    else its sub) started. Its jti is used once (§2.6, the jti check: a replayed token, which could
    end a later session of the same sub, is refused). Returns the ended sids; UpstreamError
    when refused."""
    try:
        verified = jwt.verify(token, jwt.Kind.UPSTREAM_LOGOUT_TOKEN,
                              keys=keys(row, _kid(token)), issuer=row.issuer,
                              client_id=row.client_id)
    except jwt.InvalidJWT as exc:
        raise UpstreamError(f"logout token refused: {exc}") from None
    claims = verified.claims
    _use_logout_jti(row, claims["jti"], claims["exp"])
    query = select(UpstreamSession.sso_session_id).where(UpstreamSession.upstream_id == row.id)
    if isinstance(claims.get("sid"), str):
        query = query.where(UpstreamSession.upstream_sid == claims["sid"])
    if isinstance(claims.get("sub"), str):
        query = query.where(UpstreamSession.subject == claims["sub"])
    ids = list(db.session.execute(query).scalars())
    ended = sessions.end_where(SsoSession.id.in_(ids), reason="upstream_logout") if ids else []
    audit.record("upstream.backchannel_logout", upstream=row.name, ended=len(ended))
    return ended


def _use_logout_jti(row: Upstream, jti: Any, exp: Any) -> None:
    """Remember the logout token's jti for this upstream until its exp (+ the verifier's clock
    skew: it is refused as expired after that). The store is the one of DPoP proof jtis
    (idp.oidc.models.UsedDpopProof: a hash per namespaced jti, and when it may go), under
    the prefix "upstream-logout:<upstream id>:". The verifier required jti and exp."""
    if not isinstance(jti, str) or not jti or len(jti) > 256:
        raise UpstreamError("logout token refused: no usable jti")
    try:
        expires = clock.from_timestamp(int(exp) + jwt.LEEWAY)
    except (OverflowError, ValueError, OSError, TypeError):
        raise UpstreamError("logout token refused: exp out of range") from None
    if secrets.randbelow(PURGE_EVERY) == 0:
        purge_expired()
    key = digest(f"upstream-logout:{row.id}:{jti}")
    if db.session.get(UsedDpopProof, key) is not None:
        raise UpstreamError("logout token replayed (jti seen before)")
    try:
        with db.session.begin_nested():
            db.session.add(UsedDpopProof(jti_hash=key, expires_at=expires))
    except IntegrityError:  # a concurrent delivery of the same token
        raise UpstreamError("logout token replayed (jti seen before)") from None


def logout_at_upstream(sso_session_id: str, post_logout_redirect_uri: str | None
                       ) -> tuple[Upstream, str] | None:
    """The upstream's RP-initiated logout URL for the upstream sign-in behind this session, or
    None (not an upstream sign-in, or the upstream offers no end_session_endpoint)."""
    found = db.session.get(UpstreamSession, sso_session_id)
    if found is None:
        return None
    row = db.session.get(Upstream, found.upstream_id)
    if row is None:
        return None
    try:
        endpoint = metadata(row).get("end_session_endpoint")
    except UpstreamError:
        return None
    if not isinstance(endpoint, str):
        return None
    params = {"client_id": row.client_id}
    if found.id_token_encrypted:
        params["id_token_hint"] = crypto.decrypt(found.id_token_encrypted)
    if post_logout_redirect_uri:
        params["post_logout_redirect_uri"] = post_logout_redirect_uri
    separator = "&" if urlsplit(endpoint).query else "?"
    return row, f"{endpoint}{separator}{urlencode(params)}"
