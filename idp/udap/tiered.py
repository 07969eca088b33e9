"""Tiered OAuth for User Authentication (HL7 FAST Security IG STU2 §6, profile `udap_to`), the
data holder's side: a client's /authorize asking `openid udap` with `idp=<upstream base URL>`
sends the user to sign in at that upstream IdP.

This module decides whether the upstream may be used and makes us its client: its UDAP
metadata (`{idp}/.well-known/udap`) must carry `signed_metadata` whose certificate chains to
a trust community here (idp.udap.trust) and whose iss is the `idp` asked for; we register
with it by UDAP dynamic registration (a software statement signed with our server
certificate, x5c) unless registered already. The trip itself, the ID token's verification
(the one JWT verifier, kind UPSTREAM_ID_TOKEN: iss, aud = our client_id there, nonce, exp),
linking the person to a local account, our second factor and the gates belong to the broker
(idp.core.brokering; idp.federation.upstream provides it); this module lends it the way our
token requests authenticate there: private_key_jwt with x5c (`assertion`).

Every call out goes through the one outbound client (idp.core.outbound): an `idp` on an
internal address is refused like any other fetch."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import urlsplit

import requests
from authlib.oauth2.rfc6749.errors import OAuth2Error
from authlib.oidc.core.errors import InteractionRequiredError

from idp import clock
from idp.audit import service as audit
from idp.context import policy, settings
from idp.core import bounded_json, brokering, outbound
from idp.keys import jwt
from idp.oidc.interaction import pipeline
from idp.oidc.interaction.pipeline import Interaction, Outcome
from idp.udap import service, trust

CLIENT_AUTH = "udap"                 # the name our ClientAuth is registered under
SCOPE = "openid udap"                # what we ask at the upstream (IG §6.2)
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
METADATA_MAX_LIFETIME = 366 * 86400  # IG §2.3: signed_metadata expires within a year


class InvalidIdpError(OAuth2Error):
    """IG §6.2: the data holder cannot use the IdP the client named."""

    error = "invalid_idp"


class TieredError(Exception):
    """The upstream cannot be used; `reason` is for the audit trail only."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def requested(ix: Interaction) -> str | None:
    """The `idp` of a Tiered OAuth request (`udap` in scope), or None."""
    idp = ix.params.get("idp")
    if not isinstance(idp, str) or not idp:
        return None
    if "udap" not in ix.scope.split():  # IG §6.1: idp means nothing without udap
        return None
    return idp


def check(ix: Interaction) -> Outcome | None:
    """The /authorize check (before `session`): a Tiered OAuth request goes to its upstream
    unless this browser's session was signed in there; an upstream that cannot be used gets
    the client invalid_idp (or, by policy, lets the user sign in here)."""
    idp = requested(ix)
    if idp is None or "udap_to" not in policy().udap.profiles:
        return None
    broker = brokering.broker()
    failed = brokering.take_failure(idp) if broker is not None else None
    if failed is not None:  # the trip to this upstream failed: the IG's error to the client
        audit.record("udap.tiered_failed", client_id=ix.client.client_id, idp=idp[:200],
                     error=failed)
        return Outcome.fail("udap_to", OAuth2Error(
            error=failed, description="signing in at the identity provider named by idp "
            "did not succeed", redirect_uri=ix.redirect_uri))
    if ix.sso is not None and broker is not None and broker.signed_in_by(ix.sso.id) == idp:
        return None
    if "none" in ix.prompts:
        return Outcome.fail("udap_to", InteractionRequiredError(redirect_uri=ix.redirect_uri))
    try:
        if broker is None:
            raise TieredError("upstream sign-in (federation) is switched off")
        prepare(idp, broker)
        url = broker.start_url(idp, ix.return_to)
    except TieredError as exc:
        audit.record("udap.tiered_refused", client_id=ix.client.client_id, idp=idp[:200],
                     reason=exc.reason[:200])
        if policy().udap.tiered_fallback == "local":
            return None
        return Outcome.fail("udap_idp", InvalidIdpError(
            description="the identity provider named by idp cannot be used",
            redirect_uri=ix.redirect_uri))
    audit.record("udap.tiered_redirected", client_id=ix.client.client_id, idp=idp[:200])
    return Outcome(pipeline.REDIRECT, "udap_to", url=url)


def prepare(idp: str, broker: brokering.Broker) -> None:
    """The upstream's metadata checked (always: trust may have been withdrawn), then our
    registration there (once; again when it did not grant `openid udap` yet)."""
    endpoints = upstream_metadata(idp)
    try:
        if broker.registered(idp, CLIENT_AUTH) is not None:
            return
        client_id = register(idp, endpoints["registration_endpoint"], broker.redirect_uri(idp))
        broker.enrol(brokering.Enrolment(idp, client_id, CLIENT_AUTH, SCOPE, "udap"))
    except brokering.BrokerRefused as exc:
        raise TieredError(str(exc)) from None


def _check_url(idp: str) -> None:
    parts = urlsplit(idp)
    if len(idp) > 500 or parts.scheme not in ("https", "http") or not parts.hostname or \
            parts.query or parts.fragment or parts.username or parts.password:
        raise TieredError("idp is not a base URL")
    if parts.scheme == "http" and settings().issuer.startswith("https://"):
        raise TieredError("idp must be https")


def _call(method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    try:
        response = outbound.client().request(method, url, **kwargs)
    except outbound.OutboundRefused as exc:
        raise TieredError(f"outbound policy refused the upstream ({exc.reason})") from None
    except requests.RequestException as exc:
        raise TieredError(f"upstream unreachable ({type(exc).__name__})") from None
    try:
        return response.status_code, bounded_json.loads(response.content)
    except ValueError:
        return response.status_code, None


def upstream_metadata(idp: str) -> dict[str, str]:
    """IG §6.2 / §2.3: the upstream's UDAP metadata, trusted only through its signed_metadata
    (x5c chaining to a community here, SAN URI = iss = sub = idp); returns its signed
    endpoints."""
    _check_url(idp)
    status, doc = _call("GET", idp.rstrip("/") + "/.well-known/udap",
                        headers={"Accept": "application/json"})
    if status != 200 or not isinstance(doc, dict):
        raise TieredError(f"no UDAP metadata at the upstream ({status})")
    signed = doc.get("signed_metadata")
    kind = jwt.Kind.UDAP_SIGNED_METADATA
    if not isinstance(signed, str):
        raise TieredError("the upstream's metadata is not signed")
    try:
        head = jwt.unverified_header(signed, kind)
        if head.get("alg") not in jwt.ALGORITHMS:
            raise TieredError("signed_metadata alg not accepted")
        trusted = trust.validate(head.get("x5c"), idp)
        claims = jwt.verify(signed, kind, keys=trusted.keys, issuer=idp,
                            max_lifetime=METADATA_MAX_LIFETIME).claims
    except trust.Untrusted as exc:
        raise TieredError(f"upstream certificate not trusted: {exc}") from None
    except jwt.InvalidJWT as exc:
        raise TieredError(f"signed_metadata refused: {exc}") from None
    scopes = doc.get("scopes_supported")
    if not isinstance(scopes, list) or not {"openid", "udap"} <= set(scopes):
        raise TieredError("the upstream does not support the openid and udap scopes")
    endpoints = {}
    for name in ("authorization_endpoint", "token_endpoint", "registration_endpoint"):
        value = claims.get(name)
        if not isinstance(value, str) or urlsplit(value).scheme not in ("https", "http"):
            raise TieredError(f"signed_metadata lacks {name}")
        endpoints[name] = value
    return endpoints


def register(idp: str, endpoint: str, redirect_uri: str) -> str:
    """IG §3.1 as the client: our software statement (iss = sub = our certificate's URI,
    aud = their registration endpoint, 5 minutes, a fresh jti), signed with our server
    certificate; returns our client_id there. Refused unless `openid udap` is granted."""
    now = int(clock.timestamp())
    me = service.server_uri()
    claims = {
        "iss": me, "sub": me, "aud": endpoint, "iat": now,
        "exp": now + policy().udap.statement_max_lifetime, "jti": secrets.token_urlsafe(24),
        "client_name": settings().issuer, "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code"], "response_types": ["code"],
        "token_endpoint_auth_method": "private_key_jwt", "scope": SCOPE,
        "logo_uri": policy().udap.tiered_logo_uri or None}
    statement = service.sign_as_server({k: v for k, v in claims.items() if v is not None})
    if statement is None:
        raise TieredError("no server certificate (IDP_UDAP_CERTIFICATE) to register with")
    status, answer = _call("POST", endpoint, json={"software_statement": statement,
                                                   "udap": service.VERSION},
                           headers={"Accept": "application/json"})
    if status not in (200, 201) or not isinstance(answer, dict) or \
            not isinstance(answer.get("client_id"), str) or not answer["client_id"]:
        said = [str(answer.get(k))[:80] for k in ("error", "error_description")
                if isinstance(answer, dict) and answer.get(k)]
        raise TieredError(f"the upstream refused our registration ({status} {' '.join(said)})")
    granted = str(answer.get("scope") or "").split()
    if not {"openid", "udap"} <= set(granted):
        raise TieredError("the upstream has not granted openid udap (awaiting its approval?)")
    client_id = str(answer["client_id"])[:255]
    audit.record("udap.tiered_registered", idp=idp[:200], upstream_client_id=client_id)
    return client_id


def assertion(client_id: str, token_endpoint: str) -> dict[str, str]:
    """Our token request's authentication at the upstream (IG §4.2.1): a client assertion
    signed with the server certificate's key, x5c in its header."""
    now = int(clock.timestamp())
    token = service.sign_as_server({
        "iss": client_id, "sub": client_id, "aud": token_endpoint, "iat": now,
        "exp": now + policy().udap.assertion_max_lifetime, "jti": secrets.token_urlsafe(24)})
    if token is None:
        raise brokering.BrokerRefused("no server certificate to authenticate with")
    return {"client_assertion_type": ASSERTION_TYPE, "client_assertion": token,
            "udap": service.VERSION}
