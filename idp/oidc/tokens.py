"""Issuing, finding and revoking tokens: JWT access tokens (RFC 9068), opaque refresh tokens."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from authlib.oauth2.rfc6749.util import scope_to_list
from sqlalchemy import and_, bindparam, insert, select, update

from idp import clock
from idp.accounts.models import User
from idp.audit import group_commit
from idp.context import policy, settings
from idp.core.crypto import digest
from idp.extensions import db
from idp.keys import jwt
from idp.keys.jwt import sign  # noqa: F401 - re-exported: callers and tests sign through here
from idp.oidc import revocation_cache
from idp.oidc.auth_context import AuthContext
from idp.oidc.claims import roles_of
from idp.oidc.models import AccessTokenRecord, Client, RefreshToken
from idp.oidc.registry import registry


def audiences(scopes: list[str]) -> list[str]:
    """RFC 9068 `aud`: the resources the scopes name; the IdP itself (userinfo) otherwise."""
    resources = policy().audiences_for(scopes)
    ehr = settings().ehr_audience
    if ehr:
        default = policy().resources.get("ehr")
        resources = [ehr if r == default else r for r in resources]
    for extra in registry().extra_audiences(scopes):  # features' resources (SMART's FHIR)
        if extra not in resources:
            resources.append(extra)
    return resources or [settings().issuer]


class TokenClient(Protocol):
    """What issuing an access token reads of its client: a registered Client, or the IdP
    acting for itself (idp.smart's patient directory), which has no lifetimes of its own."""

    @property
    def client_id(self) -> str: ...


def lifetime(client: TokenClient, kind: str) -> int:
    """Seconds a token of `kind` (access_token, id_token, refresh_token) lives for this
    client: its own value (bounded when saved by the policy maximum) or the policy default."""
    own = getattr(client, f"{kind}_lifetime", None)
    return own if own else getattr(policy().tokens, f"{kind}_lifetime")


def issue_access_token(client: TokenClient, user: User | None, scope: str,
                       ctx: AuthContext | None, *, jkt: str | None = None,
                       extra: dict[str, Any] | None = None) -> tuple[str, str]:
    """The signed JWT access token and its jti; its record is written in this transaction.
    `jkt`: the DPoP key it is bound to (cnf, RFC 9449 §6.1); `extra`: claims a feature
    accepted from the client's assertion (UDAP `extensions`), never overriding ours."""
    now = clock.now()
    lifetime_ = lifetime(client, "access_token")
    jti = secrets.token_urlsafe(18)
    scopes = scope_to_list(scope) or []
    aud = audiences(scopes)
    claims: dict[str, Any] = {
        "iss": settings().issuer,
        "sub": user.subject if user else client.client_id,
        "aud": aud[0] if len(aud) == 1 else aud,
        "exp": int(now.timestamp()) + lifetime_,
        "iat": int(now.timestamp()),
        "jti": jti,
        "client_id": client.client_id,
        "scope": scope or "",
    }
    for name, value in (extra or {}).items():
        claims.setdefault(name, value)
    if jkt:
        claims["cnf"] = {"jkt": jkt}
    if user is not None and ctx is not None:
        claims["auth_time"] = int(ctx.auth_time.timestamp())
        if ctx.acr:
            claims["acr"] = ctx.acr
        if ctx.amr:
            claims["amr"] = ctx.amr
        if ctx.sid:
            claims["sid"] = ctx.sid
    if user is not None:
        if "roles" in scopes:
            claims["roles"] = roles_of(user)  # without a suspended clinical role
        # Features' claims: EPCS entitlements, SMART launch context (the FHIR server's
        # patient check).
        claims.update(registry().extra_token_claims(user, scopes, ctx))
    if db.session.new:
        db.session.flush()  # the record's user row first, should it be pending
    # A Core INSERT in the session's transaction (or the request's group-commit stage,
    # idp.audit.group_commit): the record is never read back here, and the unit of work cost
    # more than the statement (profiled on the token endpoint).
    group_commit.write(db.session, _INSERT_RECORD, {
        "jti": jti, "client_id": client.client_id, "user_id": user.id if user else None,
        "family_id": ctx.family_id if ctx else None, "sid": ctx.sid if ctx else None,
        "scope": scope or "", "issued_at": now,
        "expires_at": now + timedelta(seconds=lifetime_)})
    return jwt.sign(claims, policy().tokens.access_token_alg, typ=jwt.ACCESS_TOKEN_TYP), jti


_INSERT_RECORD = insert(AccessTokenRecord.__table__)


def issue_refresh_token(client: Client, user: User, scope: str, ctx: AuthContext, *,
                        session_bound: bool = False, not_after: datetime | None = None,
                        jkt: str | None = None) -> str:
    """A new opaque refresh token. `session_bound`: valid only while the SSO session ctx.sid
    lives; `not_after` caps its expiry (the session's absolute end); `jkt`: the DPoP key it is
    bound to (RFC 9449 §5)."""
    token = secrets.token_urlsafe(32)
    now = clock.now()
    expires = now + timedelta(seconds=lifetime(client, "refresh_token"))
    if not_after is not None:
        expires = min(expires, not_after)
    if db.session.new:
        db.session.flush()  # the row's user first, should it be pending
    # A Core INSERT in the session's transaction (or the group-commit stage), like the
    # access-token record: the row is not read back in this request, and the unit of work
    # cost more than the statement.
    group_commit.write(db.session, _INSERT_REFRESH, {
        "token_hash": digest(token), "family_id": ctx.family_id or secrets.token_urlsafe(16),
        "client_id": client.client_id, "user_id": user.id, "sid": ctx.sid, "scope": scope,
        "auth_time": ctx.auth_time, "acr": ctx.acr, "amr": list(ctx.amr), "issued_at": now,
        "revoked_at": None, "rotated_at": None, "expires_at": expires,
        "session_bound": session_bound, "jkt": jkt})
    return token


_INSERT_REFRESH = insert(RefreshToken.__table__)


# The token is malformed, forged, expired, revoked, not an access token or not ours; str()
# says which, safely.
InvalidToken = jwt.InvalidJWT


def verify_access_token(token: str, check_revoked: bool = True, *, with_user: bool = True
                        ) -> tuple[dict, Any]:
    """Check an access token (idp.keys.jwt: signature, typ at+jwt, issuer, expiry) and its
    revocation record.

    The record is the ORM object with its user loaded; with_user=False gives a read-only row
    of the record's columns and the user's `username` instead, one Core statement without the
    ORM's loading cost (introspection, userinfo, revocation), answered from the node-local
    cache while the revocation epoch has not moved (idp.oidc.revocation_cache: no database
    read in the common case; a revocation on any node is seen within its stated bound).
    """
    claims = jwt.verify(token, jwt.Kind.ACCESS_TOKEN).claims
    jti = claims.get("jti")
    if not isinstance(jti, str):
        record = None
    elif with_user:
        record = db.session.get(AccessTokenRecord, jti)
    else:
        record = revocation_cache.record(jti, lambda: db.session.connection().execute(
            _RECORD_ROW, {"jti": jti}).first())
    if record is None:
        raise InvalidToken("unknown token")
    if check_revoked and record.revoked_at is not None:
        raise InvalidToken("token revoked")
    return claims, record


_RECORD_ROW = (select(AccessTokenRecord.__table__, User.__table__.c.username)
               .outerjoin(User.__table__, User.__table__.c.id == AccessTokenRecord.user_id)
               .where(AccessTokenRecord.jti == bindparam("jti")))


def find_refresh_token(token: str) -> RefreshToken | None:
    if not token or len(token) > 512:
        return None
    return db.session.execute(_FIND_REFRESH, {"hash": digest(token)}).scalar_one_or_none()


_FIND_REFRESH = select(RefreshToken).where(RefreshToken.token_hash == bindparam("hash"))


def revoke_where(condition: Callable[[Any], Any]) -> None:
    """Revoke every live refresh token and access-token record for which `condition(model)`
    holds: the one mechanism behind family, session, account and client revocation."""
    now = clock.now()
    for model in (RefreshToken, AccessTokenRecord):
        db.session.execute(update(model).where(condition(model), model.revoked_at.is_(None))
                           .values(revoked_at=now)
                           .execution_options(synchronize_session=False))
    revocation_cache.bump()


def revoke_family(family_id: str) -> None:
    """Revoke every access and refresh token descended from one grant."""
    revoke_where(lambda model: model.family_id == family_id)


def revoke_access_token(jti: str) -> None:
    db.session.execute(update(AccessTokenRecord).where(
        AccessTokenRecord.jti == jti, AccessTokenRecord.revoked_at.is_(None))
        .values(revoked_at=clock.now()))
    revocation_cache.bump()


def revoke_session_tokens(sid: str, *, keep_offline: bool = False) -> None:
    """Every token issued in this SSO session stops working (a session ended from the account
    page or the console). `keep_offline`: but for offline refresh tokens (logout: offline_access
    outlives the session by design, docs/refresh-tokens.md)."""
    if not keep_offline:
        revoke_where(lambda model: model.sid == sid)
        return
    revoke_where(lambda model: and_(model.sid == sid, model.session_bound.is_(True))
                 if model is RefreshToken else model.sid == sid)


def revoke_session_bound(sids: list[str]) -> None:
    """The SSO sessions `sids` ended (idp.core.events SESSION_ENDED: logout, idle or absolute
    timeout, sign-out everywhere, a disabled account): the families of their session-bound
    refresh tokens, access tokens included, are revoked."""
    if not sids:
        return
    families = select(RefreshToken.family_id).where(
        RefreshToken.sid.in_(sids), RefreshToken.session_bound.is_(True))
    revoke_where(lambda model: model.family_id.in_(families))
