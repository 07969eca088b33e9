"""SMART App Launch: the FHIR server's identity, fhirUser, launch registration and resolution,
the launch context bound to a grant, and the patient directory of the standalone picker.

EHR launch, back channel: the EHR (a client named in smart.toml `launch_registrars`)
authenticates at POST /smart/launch as itself and registers {app, patient, encounter, user};
the IdP answers an opaque, random launch value (stored hashed, single use, `launch_lifetime`
seconds, bound to that app and user). The app brings it to /authorize with scope `launch`; the
code issued consumes it atomically and the context is kept per grant (token family), so the
token response of the exchange and of every refresh carries `patient`/`encounter`. A
registered value needs no key distribution, cannot be replayed, and the IdP alone decides
what it means (a signed JWT from the EHR would be replayable until it expires unless the IdP
kept the same table anyway).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import requests
from authlib.oauth2.rfc6749 import OAuth2Request
from authlib.oauth2.rfc6749.errors import InvalidRequestError, InvalidScopeError
from authlib.oauth2.rfc6749.grants import BaseGrant
from authlib.oauth2.rfc6749.util import scope_to_list
from flask import current_app
from sqlalchemy import select, update

from idp import clock
from idp.accounts.models import User
from idp.audit import service as audit
from idp.context import policy, settings
from idp.core import bounded_json, outbound
from idp.core.crypto import digest
from idp.extensions import db
from idp.keys import jwt
from idp.oidc import tokens
from idp.oidc.clients import AUTH_METHODS, GRANT_TYPES
from idp.oidc.models import Client
from idp.oidc.registry import BindingRefused
from idp.policy import SmartPolicy
from idp.smart import scopes as smart_scopes
from idp.smart.models import SmartContext, SmartLaunch

PICKER_CLIENT_ID = "idp-patient-picker"  # client_id of the IdP's own directory token


@dataclass(frozen=True)
class OwnClient:
    """The IdP as the client of a token it issues for itself (a tokens.TokenClient)."""

    client_id: str
PATIENT = "smart.patient"  # interaction value: the patient picked for a standalone launch
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # FHIR id datatype


class LaunchError(BindingRefused):
    """A launch registration or launch value is not acceptable; str() is safe to show."""


def smart_policy() -> SmartPolicy:
    return policy().smart


def resource_audience() -> str:
    """The FHIR server's resource identifier (the `aud` of its access tokens)."""
    name = smart_policy().resource
    default = policy().resources[name]
    ehr = settings().ehr_audience
    return ehr if ehr and default == policy().resources.get("ehr") else default


def fhir_base() -> str:
    return resource_audience().rstrip("/") + smart_policy().fhir_path


def audiences(scopes: list[str]) -> list[str]:
    """Clinical scopes open the FHIR server: its audience."""
    return [resource_audience()] if smart_scopes.clinical(scopes) else []


def configuration() -> dict[str, Any]:
    """/.well-known/smart-configuration (SMART App Launch 2.x §Conformance)."""
    issuer = settings().issuer
    scopes = sorted(policy().scopes) + ["patient/*.rs", "patient/*.cruds", "user/*.rs",
                                        "user/*.cruds", "patient/*.read", "user/*.read"]
    return {
        "issuer": issuer,
        "jwks_uri": f"{issuer}/jwks.json",
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "userinfo_endpoint": f"{issuer}/userinfo",
        "introspection_endpoint": f"{issuer}/introspect",
        "revocation_endpoint": f"{issuer}/revoke",
        "registration_endpoint": f"{issuer}/register",
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "token_endpoint_auth_signing_alg_values_supported": list(jwt.ALGORITHMS),
        "grant_types_supported": list(GRANT_TYPES),
        "response_types_supported": ["code"],
        "scopes_supported": scopes,
        "code_challenge_methods_supported": ["S256"],
        "capabilities": [
            "launch-ehr", "launch-standalone",
            "client-public", "client-confidential-symmetric", "client-confidential-asymmetric",
            "context-ehr-patient", "context-ehr-encounter", "context-standalone-patient",
            "context-passthrough-banner", "context-passthrough-style",
            "permission-offline", "permission-patient", "permission-user", "permission-v1",
            "permission-v2", "sso-openid-connect",
        ],
        "fhir_base_url": fhir_base(),
    }


# -- launch registration (the EHR's back channel) --------------------------------------------
def _fhir_id(value: object, field: str, required: bool) -> str | None:
    if value in (None, ""):
        if required:
            raise LaunchError(f"{field} is required")
        return None
    if not isinstance(value, str) or not FHIR_ID.fullmatch(value):
        raise LaunchError(f"{field} must be a FHIR id (letters, digits, '-', '.'; 1-64)")
    return value


def register_launch(registrar: Client, *, app_client_id: object, patient: object,
                    encounter: object = None, subject: object = None) -> tuple[str, int]:
    """Register an EHR launch context; returns (launch value, lifetime in seconds)."""
    if registrar.client_id not in smart_policy().launch_registrars:
        raise LaunchError("this client may not register launch contexts")
    if not isinstance(app_client_id, str) or not app_client_id or len(app_client_id) > 64:
        raise LaunchError("app_client_id is required")
    app = db.session.execute(select(Client).where(
        Client.client_id == app_client_id)).scalar_one_or_none()
    if app is None or app.disabled:
        raise LaunchError("app_client_id names no active client")
    if "launch" not in (app.scope or "").split():
        raise LaunchError("that client is not registered for the launch scope")
    patient_id = _fhir_id(patient, "patient", required=True)
    encounter_id = _fhir_id(encounter, "encounter", required=False)
    if subject not in (None, "") and (not isinstance(subject, str) or len(subject) > 64):
        raise LaunchError("sub is malformed")
    value = secrets.token_urlsafe(32)
    now = clock.now()
    lifetime = smart_policy().launch_lifetime
    db.session.add(SmartLaunch(
        launch_hash=digest(value), client_id=app.client_id, registered_by=registrar.client_id,
        subject=subject or None, patient=patient_id, encounter=encounter_id, created_at=now,
        expires_at=now + timedelta(seconds=lifetime)))
    audit.record("smart.launch_registered", client_id=app.client_id,
                 actor=registrar.client_id, patient=patient_id, encounter=encounter_id)
    return value, lifetime


def find_launch(value: object, client_id: str) -> SmartLaunch:
    """The unused, unexpired launch registered for this app; LaunchError otherwise."""
    if not isinstance(value, str) or not value or len(value) > 128:
        raise LaunchError("launch is missing or malformed")
    item = db.session.execute(select(SmartLaunch).where(
        SmartLaunch.launch_hash == digest(value))).scalar_one_or_none()
    if item is None or item.client_id != client_id or item.used_at is not None \
            or item.expires_at <= clock.now():
        raise LaunchError("launch is unknown, expired, already used or for another app")
    return item


# -- the authorization request -----------------------------------------------------------------
def requested(oauth_request: OAuth2Request) -> list[str]:
    return scope_to_list(oauth_request.payload.scope) or []


def validate_request(grant: BaseGrant, redirect_uri: str) -> None:
    """Grant hook: SMART scopes must be registered for the client (RFC 6749 §3.3: refused,
    not silently narrowed), PKCE is required of every app asking for one, `aud` must name our
    FHIR server, scope `launch` needs a valid launch value."""
    oauth_request = grant.request
    client: Client = oauth_request.client
    data = oauth_request.payload.data
    registered = (client.scope or "").split()
    for name in ("launch", "aud"):
        if len(oauth_request.payload.datalist.get(name, [])) > 1:
            raise InvalidRequestError(f"'{name}' given more than once", redirect_uri=redirect_uri)
    for scope in requested(oauth_request):
        if scope.startswith("system/"):
            # SMART Backend Services: system scopes act without a user, so only the
            # client_credentials grant (the client as itself) may carry them.
            raise InvalidScopeError(f"scope {scope} is for backend services "
                                    "(client_credentials), not a user's sign-in",
                                    redirect_uri=redirect_uri)
        if smart_scopes.is_smart(scope) and not smart_scopes.covered(scope, registered):
            raise InvalidScopeError(f"scope {scope} is not registered for this client",
                                    redirect_uri=redirect_uri)
    if any(smart_scopes.is_smart(s) for s in requested(oauth_request)) and \
            not data.get("code_challenge"):
        # SMART App Launch 2.x: PKCE for every app, confidential ones included.
        raise InvalidRequestError("PKCE is required for SMART apps: send code_challenge with "
                                  "method S256", redirect_uri=redirect_uri)
    aud = data.get("aud")
    if aud is not None and aud.rstrip("/") != fhir_base():
        raise InvalidRequestError("aud does not name a FHIR server of this provider",
                                  redirect_uri=redirect_uri)
    if "launch" in requested(oauth_request):
        try:
            find_launch(data.get("launch"), client.client_id)
        except LaunchError as exc:
            raise InvalidRequestError(str(exc), redirect_uri=redirect_uri) from None


def needs_patient_pick(oauth_request: OAuth2Request) -> bool:
    """Standalone launch asking for a patient (launch/patient without an EHR launch)."""
    scopes = requested(oauth_request)
    return "launch/patient" in scopes and "launch" not in scopes


def bind_code(oauth_request: OAuth2Request, family_id: str, user: User,
              values: dict[str, Any] | None = None) -> None:
    """At code issuance (an idp.oidc.registry code binder): consume the EHR launch (or take
    the patient picked in the interaction, values[PATIENT]) and keep the context for the
    grant. Raises LaunchError when the launch was consumed meanwhile or belongs to another
    user."""
    scopes = requested(oauth_request)
    client_id = oauth_request.client.client_id
    now = clock.now()
    if "launch" in scopes:
        item = find_launch(oauth_request.payload.data.get("launch"), client_id)
        if item.subject and item.subject != user.subject:
            raise LaunchError("this launch was made for another user")
        claimed = db.session.execute(
            update(SmartLaunch).where(SmartLaunch.id == item.id, SmartLaunch.used_at.is_(None))
            .values(used_at=now)).rowcount
        if not claimed:
            raise LaunchError("launch is unknown, expired, already used or for another app")
        db.session.add(SmartContext(family_id=family_id, client_id=client_id,
                                    patient=item.patient, encounter=item.encounter,
                                    fhir_context=[], created_at=now))
        audit.record("smart.launch_used", user_id=user.id, client_id=client_id,
                     patient=item.patient, encounter=item.encounter)
        return
    picked = (values or {}).get(PATIENT)
    if picked and needs_patient_pick(oauth_request):
        db.session.add(SmartContext(family_id=family_id, client_id=client_id, patient=picked,
                                    encounter=None, fhir_context=[], created_at=now))
        audit.record("smart.patient_selected", user_id=user.id, client_id=client_id,
                     patient=picked)


def wants_context(scopes: list[str]) -> bool:
    return any(s in smart_scopes.LAUNCH_SCOPES for s in scopes)


def token_context(family_id: str | None) -> dict[str, Any]:
    """The launch context parameters of a grant's token responses (and access tokens)."""
    if not family_id:
        return {}
    item = db.session.get(SmartContext, family_id)
    if item is None:
        return {}
    context: dict[str, Any] = {}
    if item.patient:
        context["patient"] = item.patient
    if item.encounter:
        context["encounter"] = item.encounter
    return context


def style() -> dict[str, str]:
    """The SMART style document (policies/smart.toml [style])."""
    return dict(smart_policy().style)


def token_response_context(family_id: str | None) -> dict[str, Any]:
    """What a launch's token responses carry beside the tokens: the context of token_context,
    and with a patient the banner and style pass-through (SMART 2.x capabilities
    context-passthrough-banner and context-passthrough-style)."""
    context = token_context(family_id)
    if "patient" in context:
        context["need_patient_banner"] = smart_policy().need_patient_banner
        context["smart_style_url"] = f"{settings().issuer}/smart/style.json"
    return context


# -- the standalone patient picker -------------------------------------------------------------
class DirectoryUnavailable(Exception):
    """The FHIR server's patient directory cannot be read now."""


def fhir_search(client: OwnClient, user: User | None, scope: str, grant_type: str, url: str,
                http_get: Callable[..., Any], timeout: float,
                failure: type[Exception], **audit_fields: Any) -> Any:
    """GET `url` on the FHIR server as the IdP's own `client`, and the answer's parsed JSON.

    The access token is the IdP's own, revoked right after the call. It commits twice,
    deliberately: the token is stored before it is sent (the FHIR server introspects it), and
    its revocation is committed whatever the call's outcome. Every failure (status, outbound
    policy, network, not JSON) raises `failure` with a short reason."""
    token, jti = tokens.issue_access_token(client, user, scope, None)
    audit.record("token.issued", user_id=user.id if user else None, client_id=client.client_id,
                 grant_type=grant_type, scope=scope, refresh=False, **audit_fields)
    db.session.commit()
    try:
        response = http_get(url, headers={"Authorization": f"Bearer {token}",
                                          "Accept": "application/fhir+json"}, timeout=timeout)
        if response.status_code != 200:
            raise failure(f"HTTP {response.status_code}")
        return bounded_json.loads(response.content)
    except outbound.OutboundRefused as exc:
        raise failure(f"refused by the outbound policy: {exc.reason}") from None
    except (requests.RequestException, ValueError) as exc:
        raise failure(type(exc).__name__) from None
    finally:
        tokens.revoke_access_token(jti)
        db.session.commit()


def patient_directory(user: User, http_get: Callable[..., Any] | None = None
                      ) -> list[dict[str, str]]:
    """The patients the FHIR server lets this user see: [{id, name, birth_date}].

    The IdP asks as the user (an access token of its own for the user, scope user/Patient.rs
    with the user's roles, revoked right after the call), so the EHR applies its own rules.
    It commits twice, deliberately: the token is stored before it is sent (the FHIR server
    introspects it), and its revocation is committed whatever the call's outcome."""
    http_get = http_get or current_app.extensions.get("smart.http_get") or outbound.client().get
    bundle = fhir_search(OwnClient(PICKER_CLIENT_ID), user, "user/Patient.rs roles",
                         "smart_patient_directory", f"{fhir_base()}/Patient", http_get,
                         smart_policy().directory_timeout, DirectoryUnavailable)
    patients = []
    for entry in (bundle or {}).get("entry") or []:
        resource = (entry or {}).get("resource") or {}
        pid = resource.get("id")
        if resource.get("resourceType") != "Patient" or not isinstance(pid, str) \
                or not FHIR_ID.fullmatch(pid):
            continue
        names = resource.get("name") or [{}]
        patients.append({"id": pid, "name": str(names[0].get("text") or pid),
                         "birth_date": str(resource.get("birthDate") or "")})
    return patients
