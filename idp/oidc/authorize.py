"""Authorization-request rules beyond Authlib's (unsupported parameters, prompt and max_age
syntax, scopes) and stored consent. What the request then needs from the user (sign-in,
step-up, gates, consent) is decided by the checks of idp.oidc.interaction."""

from __future__ import annotations

import hashlib
import re

from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc6749.util import scope_to_list
from sqlalchemy import select

from idp import clock
from idp.accounts.models import User
from idp.audit import service as audit
from idp.extensions import db
from idp.oidc import response_mode
from idp.oidc.models import Client, Consent

PROMPTS = {"none", "login", "consent"}
# request and request_uri are read in before (idp.oidc.par): a parameter of that name left
# here came inside a request object or a pushed request, where it may not be.
UNSUPPORTED = {
    "request": "invalid_request_object",
    "request_uri": "invalid_request_object",
    "registration": "registration_not_supported",
}
SINGLE_VALUED = ("response_type", "client_id", "redirect_uri", "scope", "state", "nonce",
                 "prompt", "max_age", "code_challenge", "code_challenge_method", "acr_values",
                 "login_hint", "response_mode", "dpop_jkt")
# RFC 9449 §10: a JWK SHA-256 thumbprint, base64url without padding
DPOP_JKT = re.compile(r"[A-Za-z0-9_-]{43}")


class AuthorizationRequestError(InvalidRequestError):
    """invalid_request or a more specific code, sent back to the validated redirect_uri."""

    def __init__(self, description: str, redirect_uri: str, error: str = "invalid_request"
                 ) -> None:
        super().__init__(description, redirect_uri=redirect_uri)
        self.error = error


class RequestRules:
    """Grant extension: refuse what discovery does not advertise, with the spec's error."""

    def __call__(self, grant: grants.BaseGrant) -> None:
        grant.register_hook("after_validate_authorization_request_payload", self.validate)

    def validate(self, grant: grants.BaseGrant, redirect_uri: str) -> None:
        payload = grant.request.payload
        for name, error in UNSUPPORTED.items():
            if name in payload.data:
                raise AuthorizationRequestError(f"'{name}' is not supported", redirect_uri,
                                                error)
        for name in SINGLE_VALUED:
            if len(payload.datalist.get(name, [])) > 1:
                raise AuthorizationRequestError(f"'{name}' given more than once", redirect_uri)
        jkt = payload.data.get("dpop_jkt")
        if jkt is not None and not DPOP_JKT.fullmatch(jkt):
            raise AuthorizationRequestError("dpop_jkt must be a JWK SHA-256 thumbprint",
                                            redirect_uri)
        mode = payload.data.get("response_mode")
        if mode is not None and mode not in response_mode.MODES:
            raise AuthorizationRequestError("response_mode must be query or form_post",
                                            redirect_uri)
        # (the hook's redirect_uri argument is None: Authlib's hooked() passes the return
        # value; the error gets the validated one from Authlib's except clause)
        target = payload.redirect_uri or grant.request.client.get_default_redirect_uri()
        if mode is not None and not response_mode.usable(mode, target or ""):
            raise AuthorizationRequestError("form_post needs an http(s) redirect_uri",
                                            redirect_uri)
        prompts = set((payload.data.get("prompt") or "").split())
        if prompts - PROMPTS:
            raise AuthorizationRequestError("unsupported prompt value", redirect_uri)
        if "none" in prompts and len(prompts) > 1:
            raise AuthorizationRequestError("prompt=none cannot be combined", redirect_uri)
        max_age = payload.data.get("max_age")
        # isdigit() alone admits "²" (int() refuses it: a 500) and other non-ASCII digits.
        if max_age is not None and (not (max_age.isascii() and max_age.isdigit())
                                    or len(max_age) > 9):
            raise AuthorizationRequestError("max_age must be a non-negative integer",
                                            redirect_uri)
        if "openid" not in (scope_to_list(payload.scope) or []):
            raise AuthorizationRequestError("scope must include openid", redirect_uri,
                                            "invalid_scope")
        unregistered = grant.request.client.unregistered_scopes(payload.scope)
        if unregistered:
            raise AuthorizationRequestError(
                f"scope {unregistered[0]} is not registered for this client", redirect_uri,
                "invalid_scope")


def request_key(query: str) -> str:
    """Identifies one authorization request (its query string): login markers, SMART patient
    picks and EPCS ceremonies are kept per request."""
    return hashlib.sha256(query.encode()).hexdigest()[:32]


def has_consent(user: User, client: Client, scope: str) -> bool:
    wanted = set(scope_to_list(scope) or [])
    rows = db.session.execute(select(Consent.scope).where(
        Consent.user_id == user.id, Consent.client_id == client.client_id,
        Consent.revoked_at.is_(None))).scalars()
    return any(wanted <= set(s.split()) for s in rows)


def remember_consent(user: User, client: Client, scope: str) -> None:
    db.session.add(Consent(user_id=user.id, client_id=client.client_id,
                           scope=" ".join(sorted(set(scope.split()))), granted_at=clock.now()))
    audit.record("consent.granted", user_id=user.id, client_id=client.client_id, scope=scope)


def revoke_consent(user: User, consent_id: int) -> bool:
    consent = db.session.get(Consent, consent_id)
    if consent is None or consent.user_id != user.id or consent.revoked_at is not None:
        return False
    consent.revoked_at = clock.now()
    audit.record("consent.revoked", user_id=user.id, client_id=consent.client_id)
    return True


def active_consents(user: User) -> list[Consent]:
    return list(db.session.execute(select(Consent).where(
        Consent.user_id == user.id, Consent.revoked_at.is_(None))
        .order_by(Consent.granted_at.desc())).scalars())
