"""What SCIM resources look like here: scim2-models' User with the enterprise extension and the
clinician extension (`urn:healthidp:scim:schemas:extension:clinician:2.0:User`), and the
discovery documents (/ServiceProviderConfig, /ResourceTypes, /Schemas) that advertise only
what this server does."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from scim2_models import (
    URN,
    ComplexAttribute,
    Context,
    EnterpriseUser,
    Extension,
    Group,
    Mutability,
    Returned,
    User,
)

CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
CORE_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
CLINICIAN = "urn:healthidp:scim:schemas:extension:clinician:2.0:User"
LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
MEDIA_TYPE = "application/scim+json"


class License(ComplexAttribute):
    """A state license: the issuing state or territory, its number, the day it expires."""

    state: str | None = None
    number: str | None = None
    expires: date | None = None


class Clinician(Extension):
    """A clinician's credentials: the NPI (check digit validated), state licenses, the
    facility and role (canonical values published in /Schemas), and whether the account may be
    granted EPCS (read-only, computed)."""

    __schema__ = URN(CLINICIAN)

    npi: str | None = None
    licenses: list[License] | None = None
    facility: str | None = None
    role: str | None = None
    epcs_eligible: Annotated[bool | None, Mutability.read_only, Returned.request] = None


ScimUser = User[EnterpriseUser | Clinician]  # type: ignore[misc]
ScimGroup = Group

CREATE = Context.RESOURCE_CREATION_REQUEST
REPLACE = Context.RESOURCE_REPLACEMENT_REQUEST
PATCH = Context.RESOURCE_PATCH_REQUEST


def _schema_doc(model: Any, base: str, canonical: dict[str, list[str]]) -> dict[str, Any]:
    doc = model.to_schema().model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
    for attribute in doc.get("attributes", []):
        if attribute["name"] in canonical:
            attribute["canonicalValues"] = canonical[attribute["name"]]
        if attribute["name"] == "licenses":
            for sub in attribute.get("subAttributes", []):
                if sub["name"] == "expires":
                    sub["description"] = ("The day the license expires, a full-date "
                                          "(RFC 3339, YYYY-MM-DD); a time part must be "
                                          "midnight.")
    doc["meta"] = {"resourceType": "Schema", "location": f"{base}/Schemas/{doc['id']}"}
    return doc


def schemas(base: str, roles: list[str], facilities: list[str]) -> list[dict[str, Any]]:
    clinician = {"role": roles}
    if facilities:
        clinician["facility"] = facilities
    return [_schema_doc(User, base, {}), _schema_doc(EnterpriseUser, base, {}),
            _schema_doc(Clinician, base, clinician), _schema_doc(Group, base, {})]


def resource_types(base: str) -> list[dict[str, Any]]:
    return [
        {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"], "id": "User",
         "name": "User", "endpoint": "/Users", "description": "User accounts",
         "schema": CORE_USER,
         "schemaExtensions": [{"schema": ENTERPRISE, "required": False},
                              {"schema": CLINICIAN, "required": False}],
         "meta": {"resourceType": "ResourceType", "location": f"{base}/ResourceTypes/User"}},
        {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"], "id": "Group",
         "name": "Group", "endpoint": "/Groups",
         "description": "Groups; those named in policies/scim.toml [groups] give a role",
         "schema": CORE_GROUP, "schemaExtensions": [],
         "meta": {"resourceType": "ResourceType", "location": f"{base}/ResourceTypes/Group"}},
    ]


def service_provider_config(base: str, max_results: int) -> dict[str, Any]:
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "patch": {"supported": True},
        "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": True, "maxResults": max_results},
        "changePassword": {"supported": False},
        "sort": {"supported": True},
        "etag": {"supported": True},
        "authenticationSchemes": [{
            "type": "oauthbearertoken", "name": "Bearer token", "primary": True,
            "description": "A token from `idp scim tokens create`, in Authorization: Bearer"}],
        "meta": {"resourceType": "ServiceProviderConfig",
                 "location": f"{base}/ServiceProviderConfig"},
    }
