"""RP-Initiated Logout 1.0 (end_session): validate the request, end the SSO session."""

from __future__ import annotations

from dataclasses import dataclass

from authlib.common.urls import add_params_to_uri

from idp.audit import service as audit
from idp.keys import jwt
from idp.oidc import client_cache
from idp.oidc.models import Client
from idp.oidc.server import server
from idp.oidc.tokens import revoke_session_tokens
from idp.sessions import service as sessions
from idp.sessions.models import SsoSession


class LogoutError(ValueError):
    """The logout request cannot be honoured as sent; shown on the IdP's own page."""


@dataclass(frozen=True)
class LogoutPlan:
    client: Client | None
    redirect_to: str | None
    needs_confirmation: bool


def _registered(client_id: str) -> bool:
    """A client registered here (a disabled one too: its users may still sign out)."""
    return isinstance(client_id, str) and 0 < len(client_id) <= 64 and \
        "\x00" not in client_id and client_cache.get(client_id) is not None


def _hint_claims(id_token_hint: str) -> dict:
    """An ID token we issued to a registered client (not an access or logout token signed by
    the same keys); expiry is not checked (logout comes after expiry too). An invalid hint is
    refused with a page and ends nothing (RP-Initiated Logout 1.0 §4: information that fails
    validation is not used; a silent sign-out must need a valid hint)."""
    try:
        return jwt.verify(id_token_hint, jwt.Kind.ID_TOKEN_HINT, is_client=_registered).claims
    except jwt.InvalidJWT:
        raise LogoutError("id_token_hint is not an ID token issued here") from None


def plan(*, id_token_hint: str | None, client_id: str | None,
         post_logout_redirect_uri: str | None, state: str | None,
         sso: SsoSession | None) -> LogoutPlan:
    claims = _hint_claims(id_token_hint) if id_token_hint else None
    client = None
    if claims is not None:
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if client_id and client_id not in audiences:
            raise LogoutError("client_id does not match id_token_hint")
        client = server.query_client(claims.get("azp") or audiences[0])
    elif client_id:
        client = server.query_client(client_id)
    redirect_to = None
    if post_logout_redirect_uri:
        if client is None or post_logout_redirect_uri not in client.post_logout_redirect_uris:
            raise LogoutError("post_logout_redirect_uri is not registered for this client")
        params = [("state", state)] if state else []
        redirect_to = add_params_to_uri(post_logout_redirect_uri, params)
    same_user = claims is not None and (
        sso is None or claims.get("sid") == sso.id or claims.get("sub") == sso.user.subject)
    return LogoutPlan(client=client, redirect_to=redirect_to,
                      needs_confirmation=sso is not None and not same_user)


def end(logout_plan: LogoutPlan, sso: SsoSession | None) -> None:
    if sso is None:
        return
    sessions.end(sso, "logout")
    revoke_session_tokens(sso.id, keep_offline=True)  # offline_access outlives a logout
    audit.record("logout", user_id=sso.user_id,
                 client_id=logout_plan.client.client_id if logout_plan.client else None)
