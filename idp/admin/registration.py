"""Dynamic client registration: RFC 7591 at /register (Bearer initial access token an admin
issued) and RFC 7592 client configuration at /register/<client_id> (Bearer registration access
token returned at registration). Thin JSON views over idp.oidc.clients: the metadata rules are
those of the CLI and the admin console.

Authlib's ClientRegistrationEndpoint generates and returns secrets it expects the storage to
keep, and validates metadata with its own claim classes; our secrets are stored only hashed and
our URI rules are stricter, so these views call create_client/update_client directly.
Registered clients are never first party (users see the consent page) and always use PKCE.

A registered client gets at once only what policies/scopes.toml [grants] allows anyone; the
rest of what it asks for waits for an admin (idp.admin.approval). The response's `scope` and
`grant_types` are what it holds; the extension members `approval_status: "pending"`,
`pending_scope`, `pending_grant_types` and `pending_introspect_any` say what waits."""

from __future__ import annotations

import functools
import hmac
import secrets
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import select

from idp import clock
from idp.admin import approval, service, software_statement
from idp.admin.models import RegistrationAccessToken
from idp.audit import service as audit
from idp.context import settings
from idp.core.crypto import digest
from idp.extensions import csrf, db
from idp.oidc import client_profile
from idp.oidc import clients as client_service
from idp.oidc.models import Client
from idp.oidc.registry import Refused, Registrar, registry

bp = Blueprint("registration", __name__)
csrf.exempt(bp)

URI_FIELDS = ("redirect-uri", "post-logout-redirect-uri", "backchannel-logout-uri")
LIST_FIELDS = ("redirect_uris", "post_logout_redirect_uris", "grant_types", "response_types")
# RFC 9126 §6 and RFC 9449 §5.2 client metadata
PROTOCOL_FLAGS = ("require_pushed_authorization_requests", "dpop_bound_access_tokens")
STRING_FIELDS = ("client_name", "scope", "token_endpoint_auth_method", "backchannel_logout_uri")


def _error(code: str, description: str, status: int = 400) -> Response:
    response = jsonify({"error": code, "error_description": description})
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def _invalid_token(description: str) -> Response:
    response = _error("invalid_token", description, 401)
    response.headers["WWW-Authenticate"] = f'Bearer error="invalid_token", ' \
                                           f'error_description="{description}"'
    return response


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip() or len(value) > 256:
        return None
    return value.strip()


class MetadataError(ValueError):
    def __init__(self, code: str, description: str) -> None:
        super().__init__(description)
        self.code = code


def _statement_body() -> tuple[dict[str, Any] | None, str | None]:
    """The request's JSON metadata with an accepted software statement's values applied over
    it (RFC 7591 §2.3), and the statement; MetadataError for a refused statement."""

    body = request.get_json(silent=True)
    if not isinstance(body, dict) or body.get("software_statement") is None:
        return body, None
    statement = body["software_statement"]
    try:
        issuer, asserted = software_statement.verify(statement)
    except software_statement.StatementError as exc:
        raise MetadataError("invalid_software_statement", str(exc)) from None

    audit.record("registration.software_statement_accepted", actor="registration",
                 issuer=issuer, software_id=str(asserted.get("software_id", ""))[:200])
    return {**body, **asserted}, statement


def _metadata(body: Any = None) -> dict[str, Any]:
    """The JSON metadata with the types RFC 7591 gives each field we use."""
    body = request.get_json(silent=True) if body is None else body
    if not isinstance(body, dict):
        raise MetadataError("invalid_client_metadata", "the body must be a JSON object")
    for name in LIST_FIELDS:
        value = body.get(name)
        if value is not None and (not isinstance(value, list) or
                                  not all(isinstance(v, str) for v in value)):
            raise MetadataError("invalid_client_metadata", f"{name} must be a list of strings")
    for name in STRING_FIELDS:
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            raise MetadataError("invalid_client_metadata", f"{name} must be a string")
    if "jwks_uri" in body:
        raise MetadataError("invalid_client_metadata", "jwks_uri is not supported; send jwks")
    if body.get("jwks") is not None and not isinstance(body["jwks"], dict):
        raise MetadataError("invalid_client_metadata", "jwks must be a JWK set object")
    for flag in ("introspect_any", *PROTOCOL_FLAGS):
        if body.get(flag) is not None and not isinstance(body[flag], bool):
            raise MetadataError("invalid_client_metadata", f"{flag} must be a boolean")
    if body.get("client_profile") is not None and not isinstance(body["client_profile"], str):
        raise MetadataError("invalid_client_metadata", "client_profile must be a string")
    grants = body.get("grant_types") or ["authorization_code"]
    responses = body.get("response_types")
    if responses is not None:
        expected = ["code"] if "authorization_code" in grants else []
        if sorted(set(responses)) != expected:
            raise MetadataError("invalid_client_metadata",
                                "response_types must be [\"code\"] with authorization_code "
                                "and empty otherwise")
    return {"name": body.get("client_name") or "Registered client",
            "redirect_uris": body.get("redirect_uris") or [],
            "post_logout_redirect_uris": body.get("post_logout_redirect_uris") or [],
            "backchannel_logout_uri": body.get("backchannel_logout_uri") or None,
            "grant_types": grants, "scope": body.get("scope") or None,
            "auth_method": body.get("token_endpoint_auth_method") or "client_secret_basic",
            "jwks": body.get("jwks"), "introspect_any": bool(body.get("introspect_any")),
            "profile": body.get("client_profile") or None,
            "require_par": bool(body.get("require_pushed_authorization_requests")),
            "dpop_bound": bool(body.get("dpop_bound_access_tokens"))}


def _client_error(exc: client_service.ClientError, actor: str) -> Response:
    """The RFC 7591 error for refused metadata. The caller rolled back; a URI the outbound
    policy forbids (an SSRF attempt) is audited, alone, in a transaction of its own."""
    if isinstance(exc, client_service.UriRefused):
        client_service.record_refusal(exc, actor)
        db.session.commit()
        return _error("invalid_client_metadata", str(exc))
    message = str(exc)
    field = message.split(":", 1)[0]
    return _error("invalid_redirect_uri" if field in URI_FIELDS else "invalid_client_metadata",
                  message)


def _document(client: Client, **extra: Any) -> dict[str, Any]:
    doc = {"client_id": client.client_id,
           "client_id_issued_at": int(clock.aware(client.created_at).timestamp()),
           "client_name": client.client_name, "redirect_uris": list(client.redirect_uris),
           "post_logout_redirect_uris": list(client.post_logout_redirect_uris or []),
           "grant_types": list(client.grant_types), "response_types": list(
               client.response_types), "scope": client.scope,
           "token_endpoint_auth_method": client.token_endpoint_auth_method,
           "registration_client_uri": f"{settings().issuer}/register/{client.client_id}"}
    if client.backchannel_logout_uri:
        doc["backchannel_logout_uri"] = client.backchannel_logout_uri
    if client.jwks:
        doc["jwks"] = client.jwks
    if client.software_statement:
        doc["software_statement"] = client.software_statement
    if client.client_secret_hash:
        doc["client_secret_expires_at"] = 0
    if client.introspect_any:
        doc["introspect_any"] = True
    if client.profile:
        doc["client_profile"] = client.profile
    for flag in PROTOCOL_FLAGS:
        if getattr(client, flag, False):
            doc[flag] = True
    if client.pending:
        doc.update({"approval_status": "pending", "pending_scope": client.pending_scope or "",
                    "pending_grant_types": list(client.pending_grant_types or []),
                    "pending_introspect_any": bool(client.pending_introspect_any)})
    doc.update({k: v for k, v in extra.items() if v is not None})
    return doc


def _json(doc: dict, status: int = 200) -> Response:
    response = jsonify(doc)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


@bp.post("/register")
def register() -> Response:
    body = request.get_json(silent=True)
    for registrar in registry().registrars:  # UDAP: trust from a certificate, not a token
        if isinstance(body, dict) and registrar.recognizes(body):
            return _trusted(registrar, body)
    token = _bearer()
    if token is None:
        return _invalid_token("an initial access token is required")
    token_id = service.use_initial_token(token)
    if token_id is None:
        db.session.rollback()
        return _invalid_token("the initial access token is unknown, used up or expired")
    try:
        body, statement = _statement_body()
        meta = _metadata(body)
        new = client_service.create_client(
            name=meta["name"], redirect_uris=meta["redirect_uris"],
            public=meta["auth_method"] == "none", grant_types=meta["grant_types"],
            scope=meta["scope"], post_logout_redirect_uris=meta["post_logout_redirect_uris"],
            backchannel_logout_uri=meta["backchannel_logout_uri"], first_party=False,
            auth_method=meta["auth_method"], jwks=meta["jwks"], require_pkce=True,
            actor=f"registration:{token_id}", profile=meta["profile"],
            require_par=meta["require_par"], dpop_bound=meta["dpop_bound"])
        approval.hold_back(new.client, introspect_any=meta["introspect_any"],
                           actor=f"registration:{token_id}")
    except MetadataError as exc:
        db.session.rollback()  # the token's use is given back
        return _error(exc.code, str(exc))
    except client_service.ClientError as exc:
        db.session.rollback()  # the token's use is given back
        return _client_error(exc, f"registration:{token_id}")
    new.client.software_statement = statement
    access = secrets.token_urlsafe(32)
    db.session.add(RegistrationAccessToken(client_id=new.client.client_id,
                                           token_hash=digest(access), created_at=clock.now()))
    db.session.commit()
    return _json(_document(new.client, client_secret=new.client_secret,
                           registration_access_token=access), 201)


def _trusted(registrar: Registrar, body: dict[str, Any]) -> Response:
    """A registration a feature vouches for (idp.oidc.registry Registrar: UDAP). The same
    metadata rules and admin approval as any registration; the same identity registering
    again modifies its client (200), with empty grant_types cancels it (200, grant_types [])."""
    try:
        accepted = registrar.verify(body)
    except Refused as exc:
        db.session.rollback()
        return _error(exc.error, str(exc))
    existing = None
    if accepted.client_id:
        existing = db.session.execute(select(Client).where(
            Client.client_id == accepted.client_id)).scalar_one_or_none()
    actor = "registration:trusted"
    if accepted.cancel:
        if existing is None:
            db.session.rollback()
            return _error("invalid_client_metadata", "no registration to cancel")
        doc = {**_document(existing), "grant_types": [], "scope": "",
               "software_statement": accepted.statement}
        doc.pop("registration_client_uri", None)
        accepted.bind(existing)
        client_service.delete_client(existing, actor=actor)
        db.session.commit()
        return _json(doc)
    try:
        meta = _metadata(accepted.metadata)
        if existing is None:
            client = client_service.create_client(
                name=meta["name"], redirect_uris=meta["redirect_uris"], public=False,
                grant_types=meta["grant_types"], scope=meta["scope"], first_party=False,
                auth_method="private_key_jwt", jwks=meta["jwks"], require_pkce=True,
                actor=actor).client
            approval.hold_back(client, introspect_any=False, actor=actor)
        else:
            client, before = existing, approval.Granted.of(existing)
            client_service.update_client(
                client, name=meta["name"], redirect_uris=meta["redirect_uris"],
                grant_types=meta["grant_types"], scope=meta["scope"],
                post_logout_redirect_uris=[], backchannel_logout_uri=None,
                auth_method="private_key_jwt", first_party=False, require_pkce=True,
                jwks=meta["jwks"], actor=actor)
            approval.hold_back(client, introspect_any=False, before=before, actor=actor)
        client.software_statement = accepted.statement
        accepted.bind(client)
    except MetadataError as exc:
        db.session.rollback()
        return _error(exc.code, str(exc))
    except client_service.ClientError as exc:
        db.session.rollback()
        return _client_error(exc, actor)
    db.session.commit()
    doc = _document(client)
    doc.pop("registration_client_uri", None)  # UDAP: modify by registering again
    return _json(doc, 200 if existing is not None else 201)


def _managed_client(client_id: str) -> Client | Response:
    """The client the registration access token manages, or a 401."""
    token = _bearer()
    if token is None:
        return _invalid_token("a registration access token is required")
    row = db.session.execute(select(RegistrationAccessToken).where(
        RegistrationAccessToken.token_hash == digest(token))).scalar_one_or_none()
    # bytes: compare_digest refuses str holding non-ASCII (a TypeError, then a 500)
    if row is None or not hmac.compare_digest(row.client_id.encode(),
                                              client_id[:64].encode()):
        return _invalid_token("the registration access token is not valid for this client")
    client = db.session.execute(select(Client).where(Client.client_id == row.client_id)
                                ).scalar_one_or_none()
    if client is None:
        return _invalid_token("the client no longer exists")
    return client


def _managed(view: Callable[[Client], Response]) -> Callable[[str], Response]:
    """Run the view as `view(client)` for the client the bearer's registration access token
    manages; anyone else gets the 401."""

    @functools.wraps(view)
    def guarded(client_id: str) -> Response:
        client = _managed_client(client_id)
        return client if isinstance(client, Response) else view(client)

    return guarded


@bp.get("/register/<client_id>")
@_managed
def read(client: Client) -> Response:
    return _json(_document(client))


@bp.put("/register/<client_id>")
@_managed
def replace(client: Client) -> Response:
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or body.get("client_id") != client.client_id:
        return _error("invalid_client_metadata", "client_id must be the client's own")
    secret = body.get("client_secret")
    if secret is not None and not client.check_client_secret(secret):
        return _error("invalid_client_metadata", "client_secret does not match")
    before = approval.Granted.of(client)
    try:
        body, statement = _statement_body()
        meta = _metadata(body)
        new_secret = client_service.update_client(
            client, name=meta["name"], redirect_uris=meta["redirect_uris"],
            grant_types=meta["grant_types"], scope=meta["scope"],
            post_logout_redirect_uris=meta["post_logout_redirect_uris"],
            backchannel_logout_uri=meta["backchannel_logout_uri"],
            auth_method=meta["auth_method"], first_party=False, require_pkce=True,
            jwks=meta["jwks"], actor=f"client:{client.client_id}")
        try:  # RFC 9126 / RFC 9449 metadata and the client profile (fapi.toml)
            client_profile.apply(client, profile=meta["profile"],
                                 require_par=meta["require_par"], dpop_bound=meta["dpop_bound"])
        except client_profile.ProfileError as exc:
            raise client_service.ClientError(str(exc)) from None
        # no escalation: what an admin approved stays only while still asked for
        approval.hold_back(client, introspect_any=meta["introspect_any"], before=before,
                           actor=f"client:{client.client_id}")
        client.software_statement = statement
    except MetadataError as exc:
        db.session.rollback()
        return _error(exc.code, str(exc))
    except client_service.ClientError as exc:
        db.session.rollback()
        return _client_error(exc, f"client:{client.client_id}")
    db.session.commit()
    return _json(_document(client, client_secret=new_secret))


@bp.delete("/register/<client_id>")
@_managed
def remove(client: Client) -> Response:
    db.session.query(RegistrationAccessToken).filter_by(client_id=client.client_id).delete()
    client_service.delete_client(client, actor=f"client:{client.client_id}")
    db.session.commit()
    return Response(status=204, headers={"Cache-Control": "no-store"})
