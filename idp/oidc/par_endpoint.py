"""POST /par (RFC 9126 §2): the client authenticates as at the token endpoint, its request is
validated as /authorize validates one (Authlib's grant with this provider's rules), kept, and
answered 201 with its request_uri and expires_in."""

from __future__ import annotations

from authlib.oauth2.rfc6749.errors import OAuth2Error
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload, OAuth2Request
from flask import Response, jsonify, request

from idp.context import policy
from idp.extensions import db
from idp.oidc import dpop, par
from idp.oidc.server import ALL_AUTH_METHODS, server


def _error(error: OAuth2Error) -> Response:
    error.redirect_uri = None  # answered to the client here, never sent to a redirect_uri
    status, body, headers = error()
    response = jsonify(body)
    response.status_code = 401 if error.error == "invalid_client" else status
    for name, value in headers:
        response.headers[name] = value
    response.headers["Cache-Control"] = "no-store"
    return response


def push() -> Response:
    if request.content_length is not None and \
            request.content_length > policy().fapi.par.max_body:
        return _error(par.PushRefused("the pushed request is too large"))
    try:
        oauth_request = server.create_oauth2_request(request)
        client = server.authenticate_client(oauth_request, ALL_AUTH_METHODS, "par")
        params = par.pushed_parameters(client, request.form.to_dict(flat=False))
        _bind_to_proof(params)
        _validate(params, None if client.is_public else par.PUSHED)
    except OAuth2Error as error:
        db.session.rollback()
        return _error(error)
    uri, expires_in = par.store(client, params)
    db.session.commit()
    response = jsonify(request_uri=uri, expires_in=expires_in)
    response.status_code = 201
    response.headers["Cache-Control"] = "no-store"
    return response


def _bind_to_proof(params: dict[str, str]) -> None:
    """RFC 9449 §10.1: a DPoP proof sent with the push binds the code to its key (dpop_jkt;
    one given as a parameter too must name the same key)."""
    jkt = dpop.token_request_key(request.headers, "POST", "/par")
    if jkt is None:
        return
    if params.get("dpop_jkt", jkt) != jkt:
        raise dpop.InvalidDpopProof("dpop_jkt is not the DPoP proof's key")
    params["dpop_jkt"] = jkt


def _validate(params: dict[str, str], channel: str | None) -> None:
    """The authorization request's checks, as /authorize would run them (redirect_uri,
    response_type, scope, PKCE, nonce, the features' rules)."""
    # Authlib's transport check reads the URI: the push's own (https in production).
    candidate = OAuth2Request("GET", request.url)
    candidate.payload = BasicOAuth2Payload(params)
    candidate.user = None
    if channel is not None:
        candidate.request_channel = channel
    grant = server.get_authorization_grant(candidate)
    grant.validate_authorization_request()
