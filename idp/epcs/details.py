"""The prescriptions an EHR sends to be signed: RFC 9396 `authorization_details` entries of the
policy's type (`epcs_prescription`), each valid against the policy's JSON Schema
(policies/epcs_prescription.schema.json), the whole parameter bounded in bytes and entries.

Accepted only from a request the client vouches for (idp.oidc.par: pushed by the
authenticated client, or a request object signed with its registered key); a plain query could
be forged by anyone who can send the prescriber's browser a link.

The hash: SHA-256 over the RFC 8785 (JCS) form of the JSON, lowercase hex. The schema admits
only objects, strings and integers with ASCII member names, for which JCS is exactly
`json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)` in UTF-8.
`sha256` is over the whole array (what the token carries), `entry_hashes` one per prescription
(what the audit trail records).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import jsonschema_rs
from authlib.oauth2.rfc6749.errors import InvalidRequestError, OAuth2Error

from idp.context import policy
from idp.core import bounded_json
from idp.oidc import par

PARAM = "authorization_details"


class InvalidAuthorizationDetails(OAuth2Error):
    """RFC 9396 §5: the authorization_details are malformed, of an unknown type, or not
    allowed."""

    error = "invalid_authorization_details"
    status_code = 400


def canonical(value: Any) -> bytes:
    """RFC 8785 form of schema-valid details (see the module docstring)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def sha256(value: Any) -> str:
    return hashlib.sha256(canonical(value)).hexdigest()


def entry_hashes(details: list[dict[str, Any]]) -> list[str]:
    return [sha256(entry) for entry in details]


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError("a member is given twice")
    return dict(pairs)


_validators: dict[str, Any] = {}  # by the schema's text (policies differ between apps)


def _validator() -> Any:
    schema = policy().epcs.details.schema
    key = json.dumps(schema, sort_keys=True)
    if key not in _validators:
        _validators[key] = jsonschema_rs.validator_for(schema)
    return _validators[key]


def parse(raw: object) -> list[dict[str, Any]]:
    """The prescriptions of an authorization_details value, or InvalidAuthorizationDetails
    saying what is wrong (never echoing the value)."""
    rules = policy().epcs.details
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidAuthorizationDetails("authorization_details must be a JSON array")
    if len(raw.encode("utf-8")) > rules.max_bytes:
        raise InvalidAuthorizationDetails(
            f"authorization_details is larger than {rules.max_bytes} bytes")
    try:
        bounded_json.check(raw, max_depth=4, max_values=64 * rules.max_prescriptions)
        value = json.loads(raw, object_pairs_hook=_no_duplicates,
                           parse_constant=_refuse_constant,
                           parse_float=_refuse_constant)
    except ValueError:
        raise InvalidAuthorizationDetails("authorization_details is not valid JSON (or "
                                          "repeats a member)") from None
    if not isinstance(value, list) or not value:
        raise InvalidAuthorizationDetails("authorization_details must be a non-empty JSON array")
    if len(value) > rules.max_prescriptions:
        raise InvalidAuthorizationDetails(
            f"at most {rules.max_prescriptions} prescriptions can be signed at once")
    validator = _validator()
    for number, entry in enumerate(value, 1):
        if not isinstance(entry, dict) or entry.get("type") != rules.type:
            raise InvalidAuthorizationDetails(
                f"authorization_details entry {number}: the only type accepted is {rules.type}")
        errors = list(validator.iter_errors(entry))
        if errors:
            where = "/".join(str(p) for p in errors[0].instance_path) or "(entry)"
            raise InvalidAuthorizationDetails(
                f"authorization_details entry {number}: {where} does not match the "
                f"{rules.type} schema")
    ids = [entry["prescription_id"] for entry in value]
    if len(set(ids)) != len(ids):
        raise InvalidAuthorizationDetails("authorization_details: a prescription_id is given "
                                          "twice")
    return value


def _refuse_constant(text: str) -> None:
    """NaN, Infinity and fractions: the schema's numbers are integers (and JCS would write
    a fraction differently from Python)."""
    raise ValueError("not an integer")


def discovery() -> dict[str, Any]:
    """RFC 9396 §10: the authorization_details types this provider accepts."""
    return {"authorization_details_types_supported": [policy().epcs.details.type]}


def requested(params: Any) -> bool:
    return PARAM in params


def validate_request(grant: Any, redirect_uri: str) -> None:
    """idp.oidc.registry request rule (at /authorize and /par): authorization_details only
    through a channel the client vouches for, only with the EPCS acr, well formed."""
    data = grant.request.payload.data
    if PARAM not in data:
        return
    if getattr(grant.request, "request_channel", None) not in (par.PUSHED, par.SIGNED):
        raise InvalidRequestError(
            "authorization_details are accepted only in a pushed authorization request of an "
            "authenticated client or in a signed request object", redirect_uri=redirect_uri)
    if policy().epcs.acr not in (data.get("acr_values") or "").split():
        raise InvalidRequestError("epcs_prescription authorization_details need the EPCS "
                                  "acr_values", redirect_uri=redirect_uri)
    try:
        parse(data[PARAM])
    except InvalidAuthorizationDetails as exc:
        exc.redirect_uri = redirect_uri
        raise
