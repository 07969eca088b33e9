"""What Entra ID and Okta send that RFC 7644 does not say, turned into what it says before a
PATCH is validated (the rest of their quirks, capitalised ops and boolean strings, are
accepted by scim2-models as they are):

- Entra ID removes group members with `{"op": "Remove", "path": "members", "value":
  [{"value": "<id>"}]}`: read as one `members[value eq "<id>"]` removal per member (a bare
  remove of `members` would empty the group).
- Entra ID sets the manager with a string or a one-element list as the value of
  `...:enterprise:2.0:User:manager`, without `$ref`: read as `{"value": "<id>", "$ref":
  "<its location>"}`.
- Okta renames a group with `{"op": "replace", "value": {"id": "<its id>", "displayName":
  ...}}`: the resource's own id is dropped (another id stays, and is refused as immutable).
"""

from __future__ import annotations

import json
from typing import Any

from flask import url_for

MANAGER = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:user:manager"


def normalize_patch(body: Any, resource_id: str) -> Any:
    if not isinstance(body, dict) or not isinstance(body.get("Operations"), list):
        return body
    operations: list[Any] = []
    for op in body["Operations"]:
        if not isinstance(op, dict):
            operations.append(op)
            continue
        kind = str(op.get("op", "")).lower()
        path = op.get("path")
        value = op.get("value")
        lowered = path.strip().lower() if isinstance(path, str) else None
        if kind == "remove" and lowered == "members" and isinstance(value, list) and value:
            for member in value:
                if isinstance(member, dict) and isinstance(member.get("value"), str):
                    operations.append({"op": "remove", "path":
                                       f"members[value eq {json.dumps(member['value'])}]"})
                else:
                    operations.append(op)  # refused by validation, as sent
            continue
        if lowered == MANAGER and kind in ("add", "replace"):
            if isinstance(value, list) and len(value) == 1:
                value = value[0]
            if isinstance(value, str):
                value = {"value": value}
            if isinstance(value, dict) and isinstance(value.get("value"), str) and \
                    not value.get("$ref"):
                value = {**value, "$ref": url_for("scim.user", user_id=value["value"],
                                                  _external=True)}
            op = {**op, "value": value}
        elif path is None and isinstance(value, dict) and value.get("id") == resource_id:
            op = {**op, "value": {k: v for k, v in value.items() if k != "id"}}
        operations.append(op)
    return {**body, "Operations": operations}
