"""Authlib's AuthorizationServer wired to our storage: grants only answer storage questions.

The one request-scoped state: Authlib hands each grant its OAuth2Request, and the grant's
hooks (code storage, token generation, token-response extensions) see nothing else. Two
values ride on it, set through `carry()` and read through `carried_context()` /
`carried_values()`: how the user authenticated (an AuthContext: set by the authorize view from
the interaction's outcome, and by authenticate_user at the token endpoint from the code or
refresh token) and the values the interaction's feature checks settled (SMART's picked
patient). Nothing goes through flask.g.

The storage hooks commit, deliberately: a code or refresh token is claimed durably before
tokens are issued for it (a replay's revocation survives the refused request), and a code or
tokens are stored, with their audit event, before the response that carries them leaves.
"""

from __future__ import annotations

import base64
import secrets
from datetime import timedelta
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import (
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
    UnsupportedResponseTypeError,
)
from authlib.oauth2.rfc6749.requests import OAuth2Request
from authlib.oauth2.rfc6749.util import scope_to_list
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7523.client import ASSERTION_TYPE
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc9207 import IssuerParameter
from authlib.oidc.core import OpenIDCode
from authlib.oidc.core.grants.util import validate_nonce
from flask import Flask, Response, request
from flask import request as flask_request
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.exc import IntegrityError

from idp import clock
from idp.accounts import gates
from idp.accounts.models import User
from idp.audit import group_commit
from idp.audit import service as audit
from idp.context import keystore, policy, settings
from idp.core import request_log, session_memo
from idp.core.crypto import digest
from idp.extensions import db
from idp.keys import jwt
from idp.oidc import client_cache, client_profile, dpop, par, tokens
from idp.oidc.auth_context import AuthContext
from idp.oidc.authorize import RequestRules
from idp.oidc.claims import user_claims
from idp.oidc.clients import AUTH_METHODS, CONFIDENTIAL_METHODS
from idp.oidc.endpoints import Introspection, Revocation
from idp.oidc.models import AuthorizationCode, Client, RefreshToken, UsedAssertion
from idp.oidc.registry import AssertionCheck, BindingRefused, Refused, registry
from idp.sessions import service as sessions
from idp.sessions.models import SsoSession

ALL_AUTH_METHODS = list(AUTH_METHODS)
CONFIDENTIAL_AUTH_METHODS = list(CONFIDENTIAL_METHODS)

PURGE_EVERY = 200  # about one client assertion in this many also purges expired jtis


def carry(oauth_request: object, ctx: AuthContext | None,
          values: dict[str, object] | None = None) -> None:
    """Put how the user authenticated (and the interaction's settled values) on the grant's
    request, for the code storage, the token generator and the token-response hooks."""
    oauth_request.auth_context = ctx
    oauth_request.interaction_values = dict(values or {})


def carried_context(oauth_request: object) -> AuthContext | None:
    return getattr(oauth_request, "auth_context", None)


def carried_values(oauth_request: object) -> dict[str, object]:
    return getattr(oauth_request, "interaction_values", None) or {}


class Server(AuthorizationServer):
    registered = False  # grants, extensions and endpoints (once per process: init_oauth)

    def query_client(self, client_id: str) -> Client | None:
        # A NUL cannot reach PostgreSQL (psycopg raises DataError: a 500); client_id also
        # arrives from Basic credentials and assertion claims, which no form check sees.
        if not isinstance(client_id, str) or not client_id or len(client_id) > 64 \
                or "\x00" in client_id:
            return None
        client = client_cache.get(client_id)  # in-process, invalidated on change
        if client is None or client.disabled:
            return None
        request_log.note(client_id=client.client_id)
        return client

    def authenticate_client(self, request: object, methods: list[str],
                            endpoint: str = "token") -> Client:
        # Authlib's Basic parser raises ValueError (a 500) on a scheme with no credentials
        # ("Basic ", "Bearer "), non-ASCII or non-UTF-8 Basic credentials: refuse such a header.
        header = request.headers.get("Authorization") or ""
        parts = header.split(None, 1)
        try:
            if " " in header and len(parts) != 2:
                raise ValueError("a scheme without credentials")
            if parts and parts[0].lower() == "basic":
                base64.b64decode(parts[1]).decode("utf-8")
        except (IndexError, ValueError):  # binascii.Error, UnicodeDecodeError are ValueErrors
            raise InvalidClientError(status_code=401,
                                     description="malformed Authorization header") from None
        client = super().authenticate_client(request, methods, endpoint)
        if endpoint == "token" and client_profile.requires_dpop(client) and \
                not getattr(request, "dpop_jkt", None):
            raise dpop.InvalidDpopProof("this client's tokens are DPoP-bound: send a DPoP proof")
        return client

    def create_oauth2_request(self, request: object) -> OAuth2Request:
        """An OAuth2Request already made is kept (with what was put on it); at /authorize a
        request by reference or value is read in (idp.oidc.par)."""
        if isinstance(request, OAuth2Request):
            return request
        oauth_request = super().create_oauth2_request(request)
        if flask_request.endpoint == "oidc.authorize":
            par.expand(oauth_request, self.query_client)
        return oauth_request

    def create_token_response(self, request: object = None) -> Response:
        """The DPoP proof (RFC 9449) is checked before any grant runs, so a refused proof
        uses up no code or refresh token; its key is then on the request (dpop_jkt)."""
        oauth_request = self.create_oauth2_request(request)
        try:
            oauth_request.dpop_jkt = dpop.token_request_key(flask_request.headers, "POST",
                                                            "/token")
        except OAuth2Error as error:
            return self.handle_error_response(oauth_request, error)
        return super().create_token_response(oauth_request)

    def validate_requested_scope(self, scope: str | None) -> None:
        """The app's scopes (features' included), plus the open scope families features
        define (SMART clinical scopes in valid v1/v2 syntax)."""
        reg = registry()
        supported = reg.supported_scopes(policy())
        unknown = [s for s in scope_to_list(scope) or []
                   if s not in supported and not reg.in_family(s)]
        if unknown:
            raise InvalidScopeError()

    def get_authorization_grant(self, request: object) -> grants.BaseGrant:
        try:
            return super().get_authorization_grant(request)
        except ValueError:
            # Authlib quotes an unsupported response_type in the error description and raises
            # ValueError (a 500) when it holds characters a description may not carry.
            raise UnsupportedResponseTypeError(
                "?", description="response_type is not supported") from None

    def save_token(self, token: dict, request: object) -> None:
        """Records were added by the token generator; commit them with the audit event."""
        oauth_request = request
        user = getattr(oauth_request, "user", None)
        request_log.note(sub=user.subject if user else None)
        record_issue(token, oauth_request.client, user,
                     oauth_request.payload.grant_type or "authorization_code", ip=_ip())
        try:  # staged (client_credentials, refresh_token): durable once the batch is
            group_commit.commit(db.session)
        except group_commit.Refused:  # the refresh token was used meanwhile
            raise InvalidGrantError() from None


def record_issue(token: dict, client: Client, user: User | None, grant_type: str,
                 ip: str | None, user_agent: str | None = None) -> None:
    """The token.issued audit event, in the transaction that wrote the token's records (also
    for tokens issued in front of Flask, idp.oidc.fast_lane)."""
    audit.record_staged("token.issued", user_id=user.id if user else None,
                 client_id=client.client_id, ip=ip, user_agent=user_agent,
                 grant_type=grant_type, scope=token.get("scope", ""),
                 refresh=bool(token.get("refresh_token")))


def _ip() -> str | None:
    return request.remote_addr


class TokenGenerator:
    """Authlib token generator: RFC 9068 JWT access token, opaque refresh token. `ctx` is how
    the user authenticated (the grants for a user pass it; a client's own token has none)."""

    def __call__(self, grant_type: str, client: Client, user: User | None = None,
                 scope: str | None = None, expires_in: int | None = None,
                 include_refresh_token: bool = True, *, ctx: AuthContext | None = None,
                 previous: RefreshToken | None = None, jkt: str | None = None,
                 extra: dict | None = None) -> dict:
        """`jkt`: the DPoP key the tokens are bound to (access tokens always; a public
        client's refresh token too, RFC 9449 §5); `extra`: claims a feature accepted from the
        client's assertion (UDAP hl7-b2b) for the access token."""
        scope = scope or ""
        access, _ = tokens.issue_access_token(client, user, scope, ctx, jkt=jkt, extra=extra)
        token = {"token_type": "DPoP" if jkt else "Bearer", "access_token": access,
                 "expires_in": tokens.lifetime(client, "access_token"), "scope": scope}
        if include_refresh_token and user is not None and ctx is not None:
            refresh = _new_refresh_token(client, user, scope, ctx, previous,
                                         jkt if client.is_public else None)
            if refresh:
                token["refresh_token"] = refresh
        return token


def _new_refresh_token(client: Client, user: User, scope: str, ctx: AuthContext,
                       previous: RefreshToken | None, jkt: str | None = None) -> str | None:
    """The refresh token of a grant for a client registered for refresh_token (Authlib asks
    only then), or None (docs/refresh-tokens.md). A rotation keeps the kind of the token it
    replaces; otherwise offline_access gives an offline token, and policies/refresh.toml
    `session_bound` a token bound to the SSO session behind the grant (never past the
    session's absolute end)."""
    offline = previous is not None and not previous.session_bound or \
        previous is None and "offline_access" in (scope_to_list(scope) or [])
    if offline:
        return tokens.issue_refresh_token(client, user, scope, ctx, jkt=jkt)
    if previous is None and not policy().refresh.session_bound:
        return None
    sso = db.session.get(SsoSession, ctx.sid) if ctx.sid else None
    if sso is None or sessions.unusable(sso) is not None:
        return None  # no live sign-in to bind to (a grant without a session)
    end = sso.created_at + timedelta(seconds=policy().session.absolute_timeout)
    return tokens.issue_refresh_token(client, user, scope, ctx, session_bound=True,
                                      not_after=end, jkt=jkt)


token_generator = TokenGenerator()


class UserGrant:
    """Mixin of the grants that issue for a signed-in user: their tokens carry the
    AuthContext authenticate_user put on the request."""

    request: Any  # Authlib's OAuth2Request, set by the grant

    def generate_token(self, user: User | None = None, scope: str | None = None,
                       grant_type: str | None = None, expires_in: int | None = None,
                       include_refresh_token: bool = True) -> dict:
        return token_generator(grant_type or self.GRANT_TYPE, self.request.client, user,
                               scope, expires_in, include_refresh_token,
                               ctx=carried_context(self.request),
                               previous=getattr(self.request, "refresh_token", None),
                               jkt=_dpop_key(self))


def _dpop_key(grant: Any) -> str | None:
    """The DPoP key the token request proved (Server.create_token_response), if any."""
    return getattr(grant.request, "dpop_jkt", None)


class Pkce(CodeChallenge):
    """PKCE, S256 only; required for public clients and clients flagged require_pkce."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant: grants.BaseGrant, redirect_uri: str) -> None:
        data = grant.request.payload.data
        client: Client = grant.request.client
        challenge, method = data.get("code_challenge"), data.get("code_challenge_method")
        if not challenge and (client.is_public or client.require_pkce
                              or client_profile.requires_pkce(client)):
            raise InvalidRequestError("PKCE is required: send code_challenge with method S256",
                                      redirect_uri=redirect_uri)
        if challenge and method != "S256":
            raise InvalidRequestError("code_challenge_method must be S256 (plain is refused)",
                                      redirect_uri=redirect_uri)
        super().validate_code_challenge(grant, redirect_uri)


class CodeGrant(UserGrant, grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ALL_AUTH_METHODS

    @staticmethod
    def validate_authorization_redirect_uri(request: object, client: Client) -> str:
        # Authlib quotes an unregistered redirect_uri in the error description and raises
        # ValueError (a 500) when it holds a control character, quote, backslash or non-ASCII.
        asked = request.payload.redirect_uri
        if asked and not client.check_redirect_uri(asked):
            raise InvalidRequestError("redirect_uri is not registered for this client")
        return grants.AuthorizationCodeGrant.validate_authorization_redirect_uri(request, client)

    def save_authorization_code(self, code: str, oauth_request: object) -> None:
        # The session's sign-in, or an EPCS ceremony's own acr, amr and auth_time.
        ctx = carried_context(oauth_request)
        data = oauth_request.payload.data
        family_id = secrets.token_urlsafe(16)
        try:
            for bind in registry().code_binders:  # e.g. SMART's launch context
                bind(oauth_request, family_id, oauth_request.user,
                     carried_values(oauth_request))
        except BindingRefused as exc:
            db.session.rollback()
            raise InvalidRequestError(str(exc), redirect_uri=oauth_request.payload.redirect_uri
                                      ) from None
        item = AuthorizationCode(
            code_hash=digest(code), client_id=oauth_request.client.client_id,
            user_id=oauth_request.user.id, sid=ctx.sid if ctx else None,
            family_id=family_id,
            redirect_uri=oauth_request.payload.redirect_uri, scope=oauth_request.scope or "",
            nonce=data.get("nonce"), code_challenge=data.get("code_challenge"),
            code_challenge_method=data.get("code_challenge_method"),
            dpop_jkt=data.get("dpop_jkt"),
            auth_time=ctx.auth_time if ctx else clock.now(), acr=ctx.acr if ctx else None,
            amr=list(ctx.amr) if ctx else [],
            expires_at=clock.now() + timedelta(
                seconds=client_profile.code_lifetime(self.request.client)))
        db.session.add(item)
        audit.record("authorization.code_issued", user_id=oauth_request.user.id,
                     client_id=oauth_request.client.client_id, ip=_ip(),
                     scope=item.scope)
        db.session.commit()

    def query_authorization_code(self, code: str, client: Client) -> AuthorizationCode | None:
        """Find and consume the code in one atomic step; a second use revokes its tokens."""
        if not isinstance(code, str) or not code or len(code) > 256:
            return None
        # The code with its user (joined) and its sign-in's SSO session, which
        # authenticate_user checks next (found in the identity map then, not read again).
        row = db.session.execute(
            select(AuthorizationCode, SsoSession)
            .outerjoin(SsoSession, SsoSession.id == AuthorizationCode.sid)
            .where(AuthorizationCode.code_hash == digest(code))).first()
        item = row[0] if row is not None else None
        self._code_sso: SsoSession | None = row[1] if row is not None else None
        if item is None or item.client_id != client.client_id:
            return None
        if item.dpop_jkt and item.dpop_jkt != _dpop_key(self):  # before the code is used up
            raise dpop.InvalidDpopProof("the code is bound to another DPoP key (dpop_jkt)")
        claimed = db.session.execute(
            update(AuthorizationCode)
            .where(AuthorizationCode.id == item.id, AuthorizationCode.used_at.is_(None))
            .values(used_at=clock.now())).rowcount
        if not claimed:
            tokens.revoke_family(item.family_id)
            audit.record("authorization.code_replayed", user_id=item.user_id,
                         client_id=client.client_id, ip=_ip())
            db.session.commit()
            return None
        db.session.commit()
        if item.expires_at <= clock.now():
            return None
        return item

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        """Already consumed in query_authorization_code; kept to detect replays."""

    def authenticate_user(self, authorization_code: AuthorizationCode) -> User | None:
        user = db.session.get(User, authorization_code.user_id)
        if user is None or user.disabled:
            return None
        if authorization_code.sid:
            sso = getattr(self, "_code_sso", None)  # read with the code
            if sso is None or sso.id != authorization_code.sid:
                sso = db.session.get(SsoSession, authorization_code.sid)
            if sso is None or sso.ended_at is not None:
                return None  # the sign-in behind this code ended (logout) before the exchange
        carry(self.request, AuthContext(
            sid=authorization_code.sid, auth_time=authorization_code.auth_time,
            acr=authorization_code.acr, amr=authorization_code.get_amr(),
            family_id=authorization_code.family_id))
        return user


class RefreshGrant(UserGrant, grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ALL_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> object | None:
        """Rotate on use: the token is consumed atomically; presenting a consumed one again
        means it leaked, so its whole family is revoked (RFC 9700 §4.14.2)."""
        item = tokens.find_refresh_token(refresh_token)
        client: Client | None = getattr(self.request, "client", None)
        if item is None or client is None or item.client_id != client.client_id:
            return None
        if item.revoked_at is not None:
            return None
        if item.session_bound and not _session_stands(item, client):
            return None  # checked before expiry: a token at its session's absolute end too
        if item.expires_at <= clock.now():
            return None
        if item.jkt and item.jkt != _dpop_key(self):
            raise dpop.InvalidDpopProof("the refresh token is bound to another DPoP key")
        owner = db.session.get(User, item.user_id)
        if owner is None or owner.disabled or gates.pending(owner):
            # A forced password change or today's acknowledgment needs the user at the
            # authorization endpoint; the token stays unused for after that.
            return None
        ip = _ip()

        def reused() -> None:
            tokens.revoke_family(item.family_id)
            audit.record("token.refresh_reused", user_id=item.user_id,
                         client_id=client.client_id, ip=ip)

        if item.rotated_at is not None:  # used before: no need to issue and then refuse
            reused()
            db.session.commit()
            return None
        # Staged under group commit: the committer runs the compare-and-set in the batch that
        # writes the new tokens, and a reuse found there is handled as below (save_token).
        if not group_commit.check(db.session, _CLAIM_REFRESH,
                                  {"token_id": item.id, "now": clock.now()}, reused):
            reused()
            db.session.commit()
            return None
        if item.session_bound and item.sid and policy().refresh.refresh_keeps_session_alive:
            sessions.keep_alive(item.sid)  # the clinician is at work in the relying party
        # No commit here: the claim commits with the new tokens and their audit event in
        # save_token (one transaction: the request's, or its group-commit batch). Until then
        # the claimed row stays locked, so a concurrent use of the same token waits and then
        # finds it rotated (reuse).
        return item

    def authenticate_user(self, refresh_token: tokens.RefreshToken) -> User | None:
        user = db.session.get(User, refresh_token.user_id)
        if user is None or user.disabled:
            return None
        carry(self.request, AuthContext(
            sid=refresh_token.sid, auth_time=refresh_token.auth_time, acr=refresh_token.acr,
            amr=list(refresh_token.amr or []), family_id=refresh_token.family_id))
        return user

    def revoke_old_credential(self, refresh_token: tokens.RefreshToken) -> None:
        """Already marked rotated in authenticate_refresh_token."""


def _session_stands(item: RefreshToken, client: Client) -> bool:
    """A session-bound refresh token is good only while its SSO session lives. One whose
    session is over is refused and its family revoked; a session found past a timeout but not
    yet ended is ended here (announced: back-channel logouts, the event's revocations)."""
    sso = db.session.get(SsoSession, item.sid) if item.sid else None
    reason = sessions.unusable(sso)
    if reason is None:
        return True
    if sso is not None and sso.ended_at is None:
        sessions.end_where(SsoSession.id == sso.id, reason=reason)
    tokens.revoke_family(item.family_id)
    audit.record("token.refresh_session_over", user_id=item.user_id,
                 client_id=client.client_id, ip=_ip(), reason=reason)
    db.session.commit()
    return False


_REFRESH = tokens.RefreshToken.__table__
# Built once, executed on the session's connection (no ORM bulk-update bookkeeping): the
# compare-and-set that makes a refresh token single use.
_CLAIM_REFRESH = (update(_REFRESH)
                  .where(_REFRESH.c.id == bindparam("token_id"), _REFRESH.c.rotated_at.is_(None),
                         _REFRESH.c.revoked_at.is_(None))
                  .values(rotated_at=bindparam("now")))


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = CONFIDENTIAL_AUTH_METHODS

    def validate_token_request(self) -> None:
        """Authlib checks that a scope exists, not that it is the client's: a service could
        have asked for any scope (SMART system/ scopes included) and got it."""
        super().validate_token_request()
        check_userless_scope(self.request.client, self.request.payload.scope)

    def generate_token(self, user: User | None = None, scope: str | None = None,
                       grant_type: str | None = None, expires_in: int | None = None,
                       include_refresh_token: bool = True) -> dict:
        return token_generator(grant_type or self.GRANT_TYPE, self.request.client, user,
                               scope, expires_in, False, jkt=_dpop_key(self),
                               extra=getattr(self.request, "assertion_token_claims", None))


def check_userless_scope(client: Client, scope: str | None) -> None:
    """The scope rule of a token without a user (client_credentials), for this grant and the
    fast lane alike: only scopes the client is registered for, and never a user-level clinical
    scope (policies/scopes.toml [grants] user_level_scopes), whatever the registration says."""
    user_level = [s for s in scope_to_list(scope) or [] if policy().grants.user_level(s)]
    if user_level:
        raise InvalidScopeError(f"scope {user_level[0]} acts for a signed-in user; a token "
                                "without a user cannot carry it (ask for system/ scopes)")
    refuse_unregistered(client, scope)


def refuse_unregistered(client: Client, scope: str | None, redirect_uri: str | None = None
                        ) -> None:
    """invalid_scope for a scope the client is not registered for (RFC 6749 §3.3: refused,
    never silently narrowed, so the client learns its registration is wrong)."""
    unregistered = client.unregistered_scopes(scope)
    if unregistered:
        raise InvalidScopeError(f"scope {unregistered[0]} is not registered for this client",
                                redirect_uri=redirect_uri)


class IdToken(OpenIDCode):
    """ID token: signed with the active key of the client's algorithm, with sid and azp."""

    def __call__(self, grant: grants.BaseGrant) -> None:
        # Prompt handling lives in the authorize view (it needs the SSO session).
        grant.register_hook("after_create_token_response", self.process_token)
        if "openid" in (scope_to_list(grant.request.payload.scope) or []):
            grant.register_hook("after_validate_authorization_request_payload",
                                self.validate_openid_authorization_request)

    def validate_openid_authorization_request(self, grant: grants.BaseGrant,
                                              redirect_uri: str) -> None:
        try:
            validate_nonce(grant.request, self.exists_nonce, self.require_nonce)
        except InvalidRequestError as error:
            error.redirect_uri = redirect_uri
            raise

    def exists_nonce(self, nonce: str, oauth_request: object) -> bool:
        if getattr(oauth_request, "user", None) is None:
            # No one is signed in: nothing can be issued by this request; the nonce is checked
            # when the request comes back signed in, before its code is stored.
            return False
        client_id = oauth_request.payload.client_id
        return session_memo.remembered(  # Authlib asks twice per authorization request
            db.session, ("nonce", client_id, nonce),
            lambda: db.session.execute(select(AuthorizationCode.id).where(
                AuthorizationCode.client_id == client_id,
                AuthorizationCode.nonce == nonce).limit(1)).first() is not None)

    def get_client_algorithm(self, client: Client) -> str:
        return client.id_token_signed_response_alg or policy().tokens.id_token_default_alg

    def resolve_client_private_key(self, client: Client) -> object:
        return keystore().signing_key(self.get_client_algorithm(client)).key

    def get_encode_header(self, client: Client) -> dict:
        return jwt.header(self.get_client_algorithm(client), jwt.ID_TOKEN_TYP)

    def get_client_claims(self, client: Client) -> dict:
        now = clock.timestamp()
        return {"iss": settings().issuer, "aud": [client.client_id], "azp": client.client_id,
                "iat": now, "exp": now + tokens.lifetime(client, "id_token")}

    def get_authorization_code_claims(self, authorization_code: AuthorizationCode) -> dict:
        claims = super().get_authorization_code_claims(authorization_code)
        if authorization_code.sid:
            claims["sid"] = authorization_code.sid
        return claims

    def generate_user_info(self, user: User, scope: str) -> dict:
        return user_claims(user, scope)


class RefreshIdToken(IdToken):
    """A fresh ID token in every refresh response of a grant with `openid` (OIDC Core §12.2):
    the same iss, sub, aud, azp and sid, the auth_time, acr and amr of the original
    authentication (the refresh token's), a new iat and exp, at_hash of the new access token,
    and no nonce."""

    def __call__(self, grant: grants.BaseGrant) -> None:
        grant.register_hook("after_create_token_response", self.process_token)

    def get_compatible_claims(self, oauth_request: object) -> dict:
        claims = super().get_compatible_claims(oauth_request)
        ctx = carried_context(oauth_request)
        if ctx is not None:
            claims["auth_time"] = int(ctx.auth_time.timestamp())
            if ctx.acr:
                claims["acr"] = ctx.acr
            if ctx.amr:
                claims["amr"] = list(ctx.amr)
            if ctx.sid:
                claims["sid"] = ctx.sid
        return claims


class ClientAssertion(JWTBearerClientAssertion):
    """private_key_jwt (RFC 7523): keys from the client's registered JWKS, verified as a client
    assertion by idp.keys.jwt (so none of our own tokens passes, even for a client that
    registered our JWKS); jti single use."""

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __call__(self, query_client: object, request: object) -> Client | None:
        """Authlib's steps, with the assertion verified for the client its `sub` names.
        Authlib raises a failed assertion (bad signature, replayed jti, ...) as a 400; answer
        401 like every other failed client authentication (RFC 6749 §5.2)."""
        data = request.form
        assertion = data.get("client_assertion")
        if data.get("client_assertion_type") != ASSERTION_TYPE or not assertion:
            return None
        try:
            try:
                # Features' assertions (UDAP) carry a certificate chain in x5c: read the sub
                # within their bound; each kind's own bounds apply at verification.
                kind = jwt.Kind.UDAP_CLIENT_ASSERTION if registry().assertion_sources \
                    else jwt.Kind.CLIENT_ASSERTION
                subject = jwt.unverified_claims(assertion, kind).get("sub")
            except jwt.InvalidJWT as exc:
                raise InvalidClientError(description=str(exc)) from None
            if not isinstance(subject, str):
                raise InvalidClientError(description="Invalid claim: 'sub'")
            client = query_client(subject)
            if not client:
                raise InvalidClientError(description="The client does not exist on this server.")
            request.client = client
            check = _feature_check(client, assertion)
            if check is not None:  # a client a feature manages (UDAP: x5c, community)
                claims = self.process_assertion_claims(assertion, check.keys, client.client_id,
                                                       kind=check.kind)
                oauth_request: Any = request
                try:
                    oauth_request.assertion_token_claims = dict(
                        check.accept(claims, oauth_request.payload.grant_type))
                except Refused as exc:
                    if exc.error == "invalid_client":
                        raise InvalidClientError(description=str(exc)) from None
                    raise InvalidGrantError(description=str(exc)) from None
                return self.authenticate_client(client)
            keys = self.resolve_client_public_key(client)
            self.process_assertion_claims(assertion, keys, client.client_id)
            return self.authenticate_client(client)
        except InvalidClientError as error:
            error.status_code = 401
            raise

    def process_assertion_claims(self, assertion: str, keys: KeySet, client_id: str,
                                 kind: jwt.Kind = jwt.Kind.CLIENT_ASSERTION) -> dict:
        """The verified claims of an assertion by `client_id`, its jti now used."""
        try:
            verified = jwt.verify(assertion, kind, keys=keys,
                                  client_id=client_id, audiences=self.get_audiences(),
                                  max_lifetime=policy().tokens.client_assertion_max_lifetime)
        except jwt.InvalidJWT as exc:
            raise InvalidClientError(description=str(exc)) from None
        claims = verified.claims
        client = client_cache.get(client_id)
        if client is not None and not client_profile.allows_alg(client, verified.header["alg"]):
            raise InvalidClientError(description="this client's profile does not allow the "
                                     "assertion's alg")
        if not self.validate_jti(claims, claims["jti"]):
            raise InvalidClientError(description="JWT ID is used before.")
        return claims

    def get_audiences(self) -> list[str]:
        issuer = settings().issuer
        return [issuer, f"{issuer}/token", f"{issuer}/introspect", f"{issuer}/revoke"]

    def resolve_client_public_key(self, client: Client) -> KeySet:
        if not client.jwks:
            raise InvalidClientError(description="the client has no registered keys")
        try:
            return KeySet.import_key_set(client.jwks)
        except (JoseError, ValueError, TypeError, KeyError):
            raise InvalidClientError(description="the client's registered keys are not "
                                     "usable") from None

    def validate_jti(self, claims: dict, jti: str) -> bool:
        key = digest(f"{claims.get('iss')}:{jti}")
        if db.session.get(UsedAssertion, key) is not None:
            return False
        if secrets.randbelow(PURGE_EVERY) == 0:
            purge_used_assertions()
        exp = claims.get("exp")  # at most client_assertion_max_lifetime ahead (idp.keys.jwt)
        expires = clock.now() + timedelta(
            seconds=policy().tokens.client_assertion_jti_retention)
        if isinstance(exp, int):
            try:
                expires = max(expires, clock.from_timestamp(exp))
            except (OverflowError, ValueError, OSError):  # beyond what a datetime can hold
                raise InvalidClientError(description="the assertion's exp is out of range") \
                    from None
        try:
            with db.session.begin_nested():
                db.session.add(UsedAssertion(jti_hash=key, client_id=str(claims.get("iss")),
                                             expires_at=expires))
        except IntegrityError:
            return False  # a concurrent request used the same assertion
        return True


def purge_used_assertions() -> None:
    """Forget the client assertions' jtis past their retention (their replay window is over:
    the verifier refuses such an assertion as expired). About one assertion in PURGE_EVERY
    does it, as PAR and DPoP purge theirs."""
    db.session.execute(delete(UsedAssertion).where(UsedAssertion.expires_at <= clock.now()))


def _feature_check(client: Client, assertion: str) -> AssertionCheck | None:
    """The check of the feature that manages `client` (idp.oidc.registry assertion_sources),
    if one does; a refusal there is a failed client authentication."""
    for source in registry().assertion_sources:
        try:
            check = source(client, assertion)
        except Refused as exc:
            raise InvalidClientError(description=str(exc)) from None
        if check is not None:
            return check
    return None


class FeatureHooks:
    """Grant extension: the features' authorization-request rules (idp.oidc.registry
    request_rules, at /authorize) and the parameters they put beside the tokens of the code
    exchange and of refreshes (token_response: SMART's launch context)."""

    def __call__(self, grant: grants.BaseGrant) -> None:
        if isinstance(grant, grants.AuthorizationCodeGrant):
            grant.register_hook("after_validate_authorization_request_payload", self.validate)
        grant.register_hook("after_create_token_response", self.add_to_response)

    def validate(self, grant: grants.BaseGrant, redirect_uri: str) -> None:
        for rule in registry().request_rules:
            rule(grant, redirect_uri)

    def add_to_response(self, grant: grants.BaseGrant, response: tuple) -> None:
        _, token, _ = response
        ctx = carried_context(grant.request)
        if ctx is not None and isinstance(token, dict) and "access_token" in token:
            token.update(registry().extra_token_response(
                scope_to_list(token.get("scope")) or [], ctx))


class Issuer(IssuerParameter):
    def get_issuer(self) -> str:
        return settings().issuer


server = Server()


def init_oauth(app: Flask) -> None:
    """Bind the Authlib server to `app`. The server is one object for the process; what
    differs between apps (scopes, features' hooks) is read per request from the app's policy
    and idp.oidc.registry, so its grants and endpoints are registered once."""
    server.init_app(app)
    server.register_token_generator("default", token_generator)  # init_app set Authlib's
    if server.registered:  # by an earlier app of this process
        return
    server.registered = True
    server.register_client_auth_method(ClientAssertion.CLIENT_AUTH_METHOD, ClientAssertion())
    server.register_grant(CodeGrant, [RequestRules(), Pkce(required=True),
                                      IdToken(require_nonce=False), FeatureHooks()])
    server.register_grant(RefreshGrant, [FeatureHooks(), RefreshIdToken()])
    server.register_grant(ClientCredentialsGrant)
    server.register_extension(Issuer())
    server.register_endpoint(Revocation)
    server.register_endpoint(Introspection)
