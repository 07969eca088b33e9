"""/scim/v2: the SCIM 2.0 endpoints (RFC 7644). Thin: authentication by bearer token (a
provisioning token, never a browser session: CSRF-exempt, on the gates' allow-list), a rate
limit per token, the body read through the bounded JSON parser, errors as SCIM error
documents; the work is in idp.scim.users, groups and lifecycle."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from flask import Blueprint, Response, g, request, url_for
from flask_limiter.errors import RateLimitExceeded
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import HTTPException

from idp import clock
from idp.accounts.models import User
from idp.context import policy
from idp.core.crypto import digest
from idp.extensions import csrf, db, limiter
from idp.scim import groups, query, quirks, tokens, users
from idp.scim.errors import ScimError
from idp.scim.models import ScimProfile
from idp.scim.schema import (
    CLINICIAN,
    CREATE,
    LIST_RESPONSE,
    MEDIA_TYPE,
    REPLACE,
    resource_types,
    schemas,
    service_provider_config,
)

bp = Blueprint("scim", __name__, url_prefix="/scim/v2")
csrf.exempt(bp)


def _bearer() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def _limit_key() -> str:
    """Per token (its digest); requests without one count per client address."""
    presented = _bearer()
    return f"scim:{digest(presented)}" if presented else f"scim-ip:{request.remote_addr}"


# One budget per token across every SCIM endpoint.
limiter.shared_limit(lambda: policy().scim.rate_limit, scope="scim", key_func=_limit_key)(bp)


@bp.before_request
def authenticate() -> Response | None:
    token = tokens.authenticate(_bearer())
    if token is None:
        return ScimError(401, "a valid bearer token is required (idp scim tokens create)",
                         headers={"WWW-Authenticate": 'Bearer realm="scim"'}).response()
    g.scim_token = token.name
    now = clock.now()
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        token.last_used_at = now
        db.session.commit()
    return None


def refuse_unusable_input() -> Response | None:
    """App-level before_request, ahead of idp.web.security's own check of the same things,
    so /scim/v2 answers them as SCIM errors: a query string that is not UTF-8, a NUL in a
    parameter or a header."""
    if not request.path.startswith(bp.url_prefix or "/scim/v2"):
        return None
    try:
        request.query_string.decode()
    except UnicodeDecodeError:
        return ScimError(400, "the query string is not valid UTF-8", "invalidSyntax").response()
    values = [*request.args.values(), *(v for _, v in request.headers.items())]
    if any("\x00" in value for value in values):
        return ScimError(400, "a parameter holds a NUL character", "invalidValue").response()
    return None


@bp.errorhandler(ScimError)
def scim_error(exc: ScimError) -> Response:
    db.session.rollback()
    return exc.response()


@bp.errorhandler(IntegrityError)
def concurrent_duplicate(exc: IntegrityError) -> Response:
    """Two creates of one userName (or NPI, or group name) at the same moment: both passed the
    check, the database's unique index refused the second."""
    db.session.rollback()
    return ScimError(409, "a resource with this userName, NPI or displayName was just "
                     "created", "uniqueness").response()


@bp.errorhandler(RateLimitExceeded)
def rate_limited(exc: RateLimitExceeded) -> Response:
    reset_at = getattr(limiter.current_limit, "reset_at", None)
    retry = max(1, int(reset_at - time.time())) if reset_at else 60
    return ScimError(429, "too many requests for this token: slow down",
                     headers={"Retry-After": str(retry)}).response()


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException) -> Response:
    db.session.rollback()
    status = exc.code or 400
    detail = {404: "no such SCIM endpoint", 405: "method not allowed on this endpoint",
              413: "the request body is too large"}.get(status, exc.description or "refused")
    return ScimError(status, detail, "invalidSyntax" if status == 400 else None).response()


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(data), status=status, mimetype=MEDIA_TYPE, headers=headers)


_NUL = re.compile(rb"\\u0000", re.IGNORECASE)


def _body() -> Any:
    raw = request.get_data(cache=True)
    if not raw:
        raise ScimError(400, "a JSON body is required", "invalidSyntax")
    if _NUL.search(raw):  # PostgreSQL text cannot hold it; no attribute needs it
        raise ScimError(400, "a value holds a NUL character", "invalidValue")
    try:
        return request.get_json(force=True, silent=False)
    except HTTPException:
        raise ScimError(400, "the body is not valid JSON (or nests too deep)",
                        "invalidSyntax") from None


def _check_if_match(current: dict[str, Any]) -> None:
    wanted = request.headers.get("If-Match")
    if wanted and wanted.strip() != "*" and current["meta"]["version"] not in \
            [v.strip() for v in wanted.split(",")]:
        raise ScimError(412, "the resource changed since you read it (meta.version); read it "
                        "again")


def _params() -> dict[str, str]:
    """The query parameters: the URL's, or a POST .search request's body (RFC 7644 §3.4.3)."""
    if request.method != "POST":
        return {k: v for k, v in request.args.items()}
    body = _body()
    if not isinstance(body, dict):
        raise ScimError(400, "a SearchRequest object is required", "invalidSyntax")
    found: dict[str, str] = {}
    for key in ("filter", "sortBy", "sortOrder", "startIndex", "count", "attributes",
                "excludedAttributes"):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = ",".join(value)
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ScimError(400, f"{key}: wrong type", "invalidValue")
        found[key] = str(value)
    return found


def _resource(data: dict[str, Any], status: int = 200) -> Response:
    data = _project(data)
    etag = data["meta"]["version"]
    return _json(data, status, {"ETag": etag, "Location": data["meta"]["location"]})


def _project(data: dict[str, Any], params: dict[str, str] | None = None) -> dict[str, Any]:
    """attributes / excludedAttributes (RFC 7644 §3.9), top-level and one level down."""
    given = params if params is not None else request.args

    def names(param: str) -> list[str]:
        return [a.strip() for a in (given.get(param) or "").split(",") if a.strip()]
    keep, drop = names("attributes"), names("excludedAttributes")
    data = _returned_on_request(data, keep)
    if not keep and not drop:
        return data
    index = {k.lower(): k for k in data}

    def split(path: str) -> tuple[str, str | None]:
        lowered = path.lower()
        for key in index:
            if key.startswith("urn:") and lowered.startswith(key):
                rest = path[len(key):].lstrip(":")
                return index[key], rest or None
        top, _, sub = path.partition(".")
        return index.get(top.lower(), top), sub or None
    if keep:
        out: dict[str, Any] = {k: data[k] for k in ("schemas", "id", "meta") if k in data}
        for path in keep:
            top, sub = split(path)
            if top not in data:
                continue
            if sub is None or not isinstance(data[top], dict):
                out[top] = data[top]
            else:
                match = {k: v for k, v in data[top].items() if k.lower() == sub.lower()}
                out.setdefault(top, {}).update(match)
        return out
    out = dict(data)
    for path in drop:
        top, sub = split(path)
        if top in ("schemas", "id") or top not in out:
            continue
        if sub is None:
            out.pop(top)
        elif isinstance(out[top], dict):
            out[top] = {k: v for k, v in out[top].items() if k.lower() != sub.lower()}
    return out


def _returned_on_request(data: dict[str, Any], keep: list[str]) -> dict[str, Any]:
    """epcsEligible is `returned: request` (RFC 7643 §7): there only when `attributes` names
    it. Added here, computed for the account the resource is."""
    wanted = any(a.lower().endswith("epcseligible") for a in keep)
    ext = data.get(CLINICIAN)
    if not wanted or data.get("meta", {}).get("resourceType") != "User":
        return data
    account = users.find(data["id"])[0]
    data = {**data, CLINICIAN: {**(ext or {}), "epcsEligible": users.epcs_eligible(account)}}
    if CLINICIAN not in data["schemas"]:
        data["schemas"] = [*data["schemas"], CLINICIAN]
    return data


def _base() -> str:
    return url_for("scim.service_provider_config_view", _external=True).rsplit("/", 1)[0]


# -- discovery -------------------------------------------------------------------------------
@bp.get("/ServiceProviderConfig")
def service_provider_config_view() -> Response:
    return _json(service_provider_config(_base(), policy().scim.max_page_size))


@bp.get("/ResourceTypes")
def resource_types_view() -> Response:
    found = resource_types(_base())
    return _json({"schemas": [LIST_RESPONSE], "totalResults": len(found), "startIndex": 1,
                  "itemsPerPage": len(found), "Resources": found})


@bp.get("/ResourceTypes/<name>")
def resource_type_view(name: str) -> Response:
    for item in resource_types(_base()):
        if item["id"] == name:
            return _json(item)
    raise ScimError(404, f"no resource type {name[:64]!r}")


def _schemas() -> list[dict[str, Any]]:
    return schemas(_base(), sorted(policy().roles), users.facilities())


@bp.get("/Schemas")
def schemas_view() -> Response:
    found = _schemas()
    return _json({"schemas": [LIST_RESPONSE], "totalResults": len(found), "startIndex": 1,
                  "itemsPerPage": len(found), "Resources": found})


@bp.get("/Schemas/<path:urn>")
def schema_view(urn: str) -> Response:
    for item in _schemas():
        if item["id"] == urn:
            return _json(item)
    raise ScimError(404, f"no schema {urn[:200]!r}")


# -- users -----------------------------------------------------------------------------------
@bp.get("/Users")
@bp.post("/Users/.search")
def users_list() -> Response:
    rules = policy().scim
    params = _params()
    offset, limit = query.page(params.get("startIndex"), params.get("count"),
                               rules.default_page_size, rules.max_page_size)
    where = [db.or_(ScimProfile.deleted_at.is_(None), ScimProfile.user_id.is_(None))]
    text = params.get("filter")
    if text:
        where.append(query.condition(query.parse(text, rules.max_filter_length,
                                                 rules.max_filter_depth)))
    base = db.select(User, ScimProfile).outerjoin(ScimProfile, ScimProfile.user_id == User.id) \
        .where(*where)
    total = db.session.execute(db.select(db.func.count()).select_from(base.subquery())) \
        .scalar_one()
    order = query.sort_column(params.get("sortBy"))
    descending = (params.get("sortOrder") or "").lower() == "descending"
    ordered = base.order_by((order.desc() if descending else order.asc())
                            if order is not None else User.id, User.id)
    rows = db.session.execute(ordered.offset(offset).limit(limit)).all() if limit else []
    found = [_project(users.render(user, profile), params) for user, profile in rows]
    return _json({"schemas": [LIST_RESPONSE], "totalResults": total,
                  "startIndex": offset + 1, "itemsPerPage": len(found), "Resources": found})


@bp.get("/Users/<user_id>")
def user(user_id: str) -> Response:
    found = users.render(*users.find(user_id))
    if request.headers.get("If-None-Match") == found["meta"]["version"]:
        return Response(status=304, headers={"ETag": found["meta"]["version"]})
    return _resource(found)


@bp.post("/Users")
def users_create() -> Response:
    model = users.validate(_body(), CREATE)
    created, profile = users.create(model, g.scim_token)
    db.session.commit()
    return _resource(users.render(created, profile), 201)


@bp.put("/Users/<user_id>")
def users_replace(user_id: str) -> Response:
    body = _body()
    account, profile = users.find(user_id)
    current = users.render(account, profile)
    _check_if_match(current)
    if isinstance(body, dict) and "id" in body and body["id"] != account.subject:
        raise ScimError(400, "id is immutable: it does not match this resource", "mutability")
    model = users.validate(body, REPLACE)
    profile = users.replace(account, profile, model, g.scim_token)
    db.session.commit()
    return _resource(users.render(account, profile))


@bp.patch("/Users/<user_id>")
def users_patch(user_id: str) -> Response:
    body = _body()
    account, profile = users.find(user_id)
    current = users.render(account, profile)
    _check_if_match(current)
    model = users.patched(current, quirks.normalize_patch(body, account.subject))
    profile = users.replace(account, profile, model, g.scim_token)
    db.session.commit()
    return _resource(users.render(account, profile))


@bp.delete("/Users/<user_id>")
def users_delete(user_id: str) -> Response:
    account, profile = users.find(user_id)
    _check_if_match(users.render(account, profile))
    users.delete(account, profile, g.scim_token)
    db.session.commit()
    return Response(status=204)


# -- groups ----------------------------------------------------------------------------------
@bp.get("/Groups")
@bp.post("/Groups/.search")
def groups_list() -> Response:
    rules = policy().scim
    params = _params()
    offset, limit = query.page(params.get("startIndex"), params.get("count"),
                               rules.default_page_size, rules.max_page_size)
    found = groups.search(params.get("filter"), rules.max_filter_length,
                          rules.max_filter_depth)
    if (params.get("sortOrder") or "").lower() == "descending":
        found.reverse()
    page = [_project(groups.render(item, not _excludes_members(params)), params)
            for item in found[offset:offset + limit]]
    return _json({"schemas": [LIST_RESPONSE], "totalResults": len(found),
                  "startIndex": offset + 1, "itemsPerPage": len(page), "Resources": page})


def _excludes_members(params: dict[str, str] | None = None) -> bool:
    given = params if params is not None else request.args
    excluded = (given.get("excludedAttributes") or "").lower()
    attributes = (given.get("attributes") or "").lower()
    return "members" in excluded or (bool(attributes) and "members" not in attributes)


@bp.get("/Groups/<group_id>")
def group(group_id: str) -> Response:
    found = groups.render(groups.find(group_id))
    if request.headers.get("If-None-Match") == found["meta"]["version"]:
        return Response(status=304, headers={"ETag": found["meta"]["version"]})
    return _resource(found)


@bp.post("/Groups")
def groups_create() -> Response:
    made = groups.create(groups.validate(_body(), CREATE), g.scim_token)
    db.session.commit()
    return _resource(groups.render(made), 201)


@bp.put("/Groups/<group_id>")
def groups_replace(group_id: str) -> Response:
    body = _body()
    item = groups.find(group_id)
    _check_if_match(groups.render(item))
    if isinstance(body, dict) and "id" in body and body["id"] != item.id:
        raise ScimError(400, "id is immutable: it does not match this resource", "mutability")
    groups.replace(item, groups.validate(body, REPLACE), g.scim_token)
    db.session.commit()
    return _resource(groups.render(item))


@bp.patch("/Groups/<group_id>")
def groups_patch(group_id: str) -> Response:
    body = _body()
    item = groups.find(group_id)
    current = groups.render(item)
    _check_if_match(current)
    groups.replace(item, groups.patched(current, quirks.normalize_patch(body, item.id)),
                   g.scim_token)
    db.session.commit()
    return _resource(groups.render(item))


@bp.delete("/Groups/<group_id>")
def groups_delete(group_id: str) -> Response:
    item = groups.find(group_id)
    _check_if_match(groups.render(item))
    groups.remove(item, g.scim_token)
    db.session.commit()
    return Response(status=204)


_READ_ONLY = {"ServiceProviderConfig", "ResourceTypes", "Schemas"}


@bp.route("/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def unknown(rest: str) -> Response:
    first = rest.split("/", 1)[0]
    if first in _READ_ONLY or (first in ("Users", "Groups") and request.method != "GET"):
        raise ScimError(405, f"{request.method} is not allowed on /{first[:40]}",
                        headers={"Allow": "GET" if first in _READ_ONLY else
                                 "GET, POST, PUT, PATCH, DELETE"})
    if rest == ".search" and request.method == "POST":
        raise ScimError(501, "search one resource type at a time: POST /Users/.search or "
                        "/Groups/.search")
    if first == "Bulk":
        raise ScimError(501, "/Bulk is not supported (see /ServiceProviderConfig)")
    raise ScimError(404, "no such SCIM endpoint")
