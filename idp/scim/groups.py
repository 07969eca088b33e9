"""SCIM Groups: the groups a connector pushes (Entra ID and Okta push the groups assigned to
the application). A group whose displayName scim.toml [groups] maps to a role gives its
members that role (a mover, through idp.scim.lifecycle); leaving it gives back
scim.toml default_role unless another mapped group holds the account. Any other group is
kept as sent and changes nothing. The caller commits."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from flask import url_for
from pydantic import ValidationError
from scim2_models import Context, Group, PatchOp, SCIMException, ScimFilter
from sqlalchemy import delete, func, select, update

from idp import clock
from idp.accounts.models import User
from idp.context import policy
from idp.extensions import db
from idp.scim import lifecycle
from idp.scim.errors import ScimError
from idp.scim.models import GroupMember, ProvisionedGroup, ScimProfile
from idp.scim.query import paren_depth
from idp.scim.schema import CORE_GROUP

MAX_MEMBERS = 10_000


def _mapping(display_name: str) -> tuple[str | None, str | None]:
    key = (display_name or "").strip().lower()
    for item in policy().scim.groups.values():
        if item.display.lower() == key:
            return item.role, item.facility
    return None, None


def mapped_role(display_name: str) -> str | None:
    return _mapping(display_name)[0]


def mapped_facility(display_name: str) -> str | None:
    return _mapping(display_name)[1]


def find(group_id: str) -> ProvisionedGroup:
    found = db.session.get(ProvisionedGroup, group_id[:36]) if group_id else None
    if found is None:
        raise ScimError(404, f"no Group with id {group_id[:64]!r}")
    return found


def _members(group: ProvisionedGroup) -> list[User]:
    return [user for user, _ in _member_rows(group)]


def _member_rows(group: ProvisionedGroup) -> list[tuple[User, str | None]]:
    """The members (not soft-deleted) and the display each was sent with."""
    return [(row[0], row[1]) for row in db.session.execute(
        select(User, GroupMember.display).join(
            GroupMember, GroupMember.user_id == User.id).outerjoin(
            ScimProfile, ScimProfile.user_id == User.id).where(
            GroupMember.group_id == group.id, ScimProfile.deleted_at.is_(None))
        .order_by(User.id)).all()]


def of_user(user: User) -> list[ProvisionedGroup]:
    return list(db.session.execute(select(ProvisionedGroup).join(
        GroupMember, GroupMember.group_id == ProvisionedGroup.id).where(
        GroupMember.user_id == user.id).order_by(ProvisionedGroup.display_name)).scalars())


def _iso(when: Any) -> str:
    return when.isoformat().replace("+00:00", "Z")


def render(group: ProvisionedGroup, with_members: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"schemas": [CORE_GROUP], "id": group.id,
                           "displayName": group.display_name}
    if group.external_id:
        out["externalId"] = group.external_id
    members = [{"value": u.subject, "display": shown or u.username, "type": "User",
                "$ref": url_for("scim.user", user_id=u.subject, _external=True)}
               for u, shown in _member_rows(group)]
    if members and with_members:
        out["members"] = members
    body = json.dumps([out, members], sort_keys=True, default=str)
    out["meta"] = {"resourceType": "Group", "created": _iso(group.created_at),
                   "lastModified": _iso(group.updated_at),
                   "location": url_for("scim.group", group_id=group.id, _external=True),
                   "version": f'W/"{hashlib.sha256(body.encode()).hexdigest()[:20]}"'}
    return out


def search(text: str | None, max_length: int, max_depth: int) -> list[ProvisionedGroup]:
    found = list(db.session.execute(select(ProvisionedGroup).order_by(
        ProvisionedGroup.display_key)).scalars())
    if not text:
        return found
    if len(text) > max_length or paren_depth(text) > max_depth:
        raise ScimError(400, "filter too long or nested too deep", "invalidFilter")
    try:
        wanted = ScimFilter[Group](text)  # type: ignore[index]
        deep = "member" in text.lower()
        return [g for g in found if wanted.match(Group.model_validate(
            {k: v for k, v in render(g, deep).items() if k != "meta"}))]
    except (SCIMException, ValueError) as exc:
        raise ScimError(400, f"filter: {str(exc)[:300]}", "invalidFilter") from None


def validate(body: Any, ctx: Context) -> Any:
    if not isinstance(body, dict):
        raise ScimError(400, "the body must be a JSON object", "invalidSyntax")
    try:
        return Group.model_validate(body, scim_ctx=ctx)
    except ValidationError as exc:
        raise ScimError.from_validation(exc) from None


def patched(current: dict[str, Any], body: Any) -> Any:
    if not isinstance(body, dict):
        raise ScimError(400, "the body must be a JSON object", "invalidSyntax")
    try:
        patch = PatchOp[Group].model_validate(  # type: ignore[index]
            body, scim_ctx=Context.RESOURCE_PATCH_REQUEST)
        model = Group.model_validate({k: v for k, v in current.items() if k != "meta"},
                                     scim_ctx=Context.RESOURCE_REPLACEMENT_REQUEST)
        patch.patch(model)
        return Group.model_validate(model.model_dump(scim_ctx=Context.DEFAULT),
                                    scim_ctx=Context.RESOURCE_REPLACEMENT_REQUEST)
    except ValidationError as exc:
        raise ScimError.from_validation(exc) from None
    except SCIMException as exc:
        raise ScimError(400, str(exc)[:300],
                        getattr(exc, "scim_type", None) or "invalidValue") from None


def _wanted_members(model: Any) -> list[tuple[User, str | None]]:
    shown = {str(m.value): (str(m.display)[:256] if m.display else None)
             for m in model.members or [] if m.value}
    subjects = list(shown)
    if len(subjects) > MAX_MEMBERS:
        raise ScimError.invalid_value(f"members: at most {MAX_MEMBERS}")
    users: list[tuple[User, str | None]] = []
    for subject in subjects:
        user = db.session.execute(select(User).where(User.subject == subject[:64])) \
            .scalar_one_or_none()
        profile = db.session.get(ScimProfile, user.id) if user is not None else None
        if user is None or (profile is not None and profile.deleted_at is not None):
            raise ScimError.invalid_value(f"members: no User with id {subject[:64]!r}")
        users.append((user, shown[subject]))
    return users


def _display(model: Any, group: ProvisionedGroup | None) -> str:
    name = str(model.display_name or "").strip()
    if not name or len(name) > 256:
        raise ScimError.invalid_value("displayName: 1-256 characters, required")
    clash = select(ProvisionedGroup.id).where(ProvisionedGroup.display_key == name.lower())
    if group is not None:
        clash = clash.where(ProvisionedGroup.id != group.id)
    if db.session.execute(clash).first():
        raise ScimError(409, f"a Group named {name!r} exists", "uniqueness")
    return name


def _external_id(model: Any) -> str | None:
    value = model.external_id
    if value is not None and len(value) > 255:
        raise ScimError.invalid_value("externalId: 255 characters at most")
    return value


def create(model: Any, token_name: str) -> ProvisionedGroup:
    name = _display(model, None)
    external_id = _external_id(model)
    members = _wanted_members(model)
    now = clock.now()
    group = ProvisionedGroup(id=str(uuid.uuid4()), display_name=name, display_key=name.lower(),
                             external_id=external_id, created_at=now, updated_at=now)
    db.session.add(group)
    db.session.flush()
    lifecycle.group_changed(group.id, name, "created", token_name)
    _set_members(group, members, None, token_name)
    return group


def replace(group: ProvisionedGroup, model: Any, token_name: str) -> None:
    name = _display(model, group)
    external_id = _external_id(model)
    members = _wanted_members(model)
    old_role = mapped_role(group.display_name)
    group.display_name, group.display_key = name, name.lower()
    group.external_id = external_id
    group.updated_at = clock.now()
    lifecycle.group_changed(group.id, name, "updated", token_name)
    _set_members(group, members, old_role, token_name)


def remove(group: ProvisionedGroup, token_name: str) -> None:
    role, facility = _mapping(group.display_name)
    leaving = _members(group)
    db.session.execute(delete(GroupMember).where(GroupMember.group_id == group.id))
    lifecycle.group_changed(group.id, group.display_name, "deleted", token_name)
    db.session.delete(group)
    db.session.flush()
    for user in leaving:
        _left(user, role, token_name)
        if facility:
            _left_facility(user, facility, token_name)


def _set_members(group: ProvisionedGroup, sent: list[tuple[User, str | None]],
                 old_role: str | None, token_name: str) -> None:
    current = {u.id: u for u in _members(group)}
    wanted = [u for u, _ in sent]
    wanted_ids = {u.id for u in wanted}
    added = [u for u in wanted if u.id not in current]
    removed = [u for uid, u in current.items() if uid not in wanted_ids]
    for user, shown in sent:
        if user.id not in current:
            db.session.add(GroupMember(group_id=group.id, user_id=user.id, display=shown))
        else:
            db.session.execute(update(GroupMember).where(
                GroupMember.group_id == group.id, GroupMember.user_id == user.id)
                .values(display=shown))
    if removed:
        db.session.execute(delete(GroupMember).where(
            GroupMember.group_id == group.id,
            GroupMember.user_id.in_([u.id for u in removed])))
    db.session.flush()
    role = mapped_role(group.display_name)
    for user in added + removed:
        lifecycle.membership_changed(user, group.display_name, user in added, token_name)
    if role is not None:
        stayed = [u for u in wanted if u.id in current] if role != old_role else []
        for user in added + stayed:
            lifecycle.role_wanted(user, _profile(user), role, token_name)
    for user in removed:
        _left(user, role, token_name)
    facility = mapped_facility(group.display_name)
    if facility:
        for user in added:
            lifecycle.facility_wanted(user, facility, token_name)
        for user in removed:
            _left_facility(user, facility, token_name)
    if old_role is not None and old_role != role:  # renamed away from a mapped name
        for user in wanted:
            if user.id in current:
                _left(user, old_role, token_name)


def _profile(user: User) -> ScimProfile:
    found = db.session.get(ScimProfile, user.id)
    if found is None:
        now = clock.now()
        found = ScimProfile(user_id=user.id, document={}, created_at=now, updated_at=now)
        db.session.add(found)
    return found


def _left(user: User, role: str | None, token_name: str) -> None:
    """Out of a group mapped to `role`: another mapped group's role, else default_role."""
    profile = _profile(user)
    if role is None or (user.role != role and profile.requested_role != role):
        return
    others = [r for r in (mapped_role(g.display_name) for g in of_user(user)) if r]
    lifecycle.role_wanted(user, profile, others[0] if others else policy().scim.default_role,
                          token_name)


def _left_facility(user: User, facility: str, token_name: str) -> None:
    """Out of a group giving `facility`: another mapped group's facility, else none."""
    if user.facility != facility:
        return
    others = [f for f in (mapped_facility(g.display_name) for g in of_user(user)) if f]
    lifecycle.facility_wanted(user, others[0] if others else None, token_name)


def count() -> int:
    return db.session.execute(select(func.count()).select_from(ProvisionedGroup)).scalar_one()
