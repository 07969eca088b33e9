"""/Users queries: a SCIM filter (parsed by scim2-models' RFC 7644 grammar) turned into a
SQLAlchemy condition, sorting and pagination. Only attributes with a column are filterable;
anything else is a 400 invalidFilter, never a scan. Comparisons of strings are
case-insensitive except `id` (caseExact), as the schema says."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scim2_models import SCIMException, ScimFilter
from scim2_models.path import (
    AttrPath,
    CompareOperator,
    Comparison,
    FilterNode,
    LogicalExpr,
    LogicalOperator,
    Not,
    Present,
    ValuePath,
)
from sqlalchemy import ColumnElement, and_, false, func, not_, or_, true

from idp.accounts.models import User
from idp.scim.errors import ScimError
from idp.scim.models import ScimProfile
from idp.scim.schema import CLINICIAN, CORE_USER, ENTERPRISE, ScimUser


@dataclass(frozen=True)
class Column:
    expr: Any
    kind: str  # "ci" (case-insensitive string), "exact" (string), "bool", "time"


_ACTIVE = not_(User.disabled)
# (schema, attribute, sub-attribute) -> the column it reads, all names lower-case.
COLUMNS: dict[tuple[str, str, str | None], Column] = {
    (CORE_USER, "id", None): Column(User.subject, "exact"),
    (CORE_USER, "username", None): Column(User.username, "ci"),
    (CORE_USER, "externalid", None): Column(ScimProfile.external_id, "exact"),
    (CORE_USER, "name", "givenname"): Column(User.given_name, "ci"),
    (CORE_USER, "name", "familyname"): Column(User.family_name, "ci"),
    (CORE_USER, "active", None): Column(_ACTIVE, "bool"),
    (CORE_USER, "emails", None): Column(User.email, "ci"),
    (CORE_USER, "emails", "value"): Column(User.email, "ci"),
    (CORE_USER, "meta", "created"): Column(User.created_at, "time"),
    (CORE_USER, "meta", "lastmodified"): Column(
        func.coalesce(ScimProfile.updated_at, User.created_at), "time"),
    (ENTERPRISE, "employeenumber", None): Column(ScimProfile.employee_number, "exact"),
    (ENTERPRISE, "department", None): Column(User.department, "ci"),
    (CLINICIAN, "npi", None): Column(User.npi, "exact"),
    (CLINICIAN, "facility", None): Column(User.facility, "ci"),
    (CLINICIAN, "role", None): Column(User.role, "exact"),
}
# emails: one address per account, the work one and primary.
_EMAIL_CONSTANTS = {"type": "work", "primary": True}
_SCHEMAS = {CORE_USER.lower(): CORE_USER, ENTERPRISE.lower(): ENTERPRISE,
            CLINICIAN.lower(): CLINICIAN}
_EXTENSION_ATTRS = {(ENTERPRISE, "employeenumber"), (ENTERPRISE, "department"),
                    (CLINICIAN, "npi"), (CLINICIAN, "facility"), (CLINICIAN, "role")}


def _schema_of(path: AttrPath) -> str:
    if path.uri is None:
        for schema, attr in _EXTENSION_ATTRS:
            if attr == path.attr.lower():
                return schema
        return CORE_USER
    found = _SCHEMAS.get(path.uri.lower())
    if found is None:
        raise ScimError(400, f"unknown schema {path.uri!r} in filter", "invalidFilter")
    return found


def depth(node: FilterNode) -> int:
    if isinstance(node, LogicalExpr):
        return 1 + max(depth(t) for t in node.terms)
    if isinstance(node, Not):
        return 1 + depth(node.expr)
    if isinstance(node, ValuePath):
        return 1 + depth(node.val_filter)
    return 1


def parse(text: str, max_length: int, max_depth: int) -> FilterNode:
    if len(text) > max_length:
        raise ScimError(400, f"filter longer than {max_length} characters", "invalidFilter")
    if paren_depth(text) > max_depth:
        raise ScimError(400, f"filter nested deeper than {max_depth} levels", "invalidFilter")
    try:
        node = ScimFilter[ScimUser](text).ast  # type: ignore[index]
    except (SCIMException, ValueError) as exc:
        raise ScimError(400, f"filter: {str(exc)[:300]}", "invalidFilter") from None
    if depth(node) > max_depth:
        raise ScimError(400, f"filter nested deeper than {max_depth} levels", "invalidFilter")
    return node


def paren_depth(text: str) -> int:
    """The deepest nesting of parentheses and brackets outside string literals."""
    deepest = level = 0
    quoted = escaped = False
    for char in text:
        if quoted:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
            continue
        if char == '"':
            quoted = True
        elif char in "([":
            level += 1
            deepest = max(deepest, level)
        elif char in ")]":
            level -= 1
    return deepest


def condition(node: FilterNode) -> ColumnElement[bool]:
    """The SQL condition of a parsed filter (never NULL, so `not` means not)."""
    return _Translator().visit(node, None)


class _Translator:
    def visit(self, node: FilterNode, within: AttrPath | None) -> ColumnElement[bool]:
        if isinstance(node, LogicalExpr):
            terms = [self.visit(t, within) for t in node.terms]
            return and_(*terms) if node.op == LogicalOperator.and_ else or_(*terms)
        if isinstance(node, Not):
            return not_(self.visit(node.expr, within))
        if isinstance(node, ValuePath):
            if within is not None:
                raise ScimError(400, "nested value filters", "invalidFilter")
            return self.visit(node.val_filter, node.attr_path)
        if isinstance(node, Present):
            return self._present(self._column_or_constant(node.attr_path, within))
        if isinstance(node, Comparison):
            return self._compare(self._column_or_constant(node.attr_path, within), node)
        raise ScimError(400, "unsupported filter expression", "invalidFilter")

    def _column_or_constant(self, path: AttrPath, within: AttrPath | None) -> Column | Any:
        key: tuple[str, str, str | None]
        if within is not None:  # emails[type eq "work" and value co "x"]
            schema = _schema_of(within)
            key = (schema, within.attr.lower(), path.attr.lower())
            if key[1] == "emails" and key[2] in _EMAIL_CONSTANTS:
                return _EMAIL_CONSTANTS[key[2]]
        else:
            schema = _schema_of(path)
            key = (schema, path.attr.lower(), path.sub_attr.lower() if path.sub_attr else None)
            if key[1] == "emails" and key[2] in _EMAIL_CONSTANTS:
                return _EMAIL_CONSTANTS[key[2]]
        found = COLUMNS.get(key)
        if found is None:
            name = f"{within}.{path}" if within is not None else str(path)
            raise ScimError(400, f"cannot filter on {name!r}: filterable attributes are "
                            "id, userName, externalId, name.givenName, name.familyName, "
                            "active, emails(.value/.type/.primary), meta.created, "
                            "meta.lastModified, employeeNumber, department, npi, facility, "
                            "role", "invalidFilter")
        return found

    @staticmethod
    def _present(target: Column | Any) -> ColumnElement[bool]:
        if not isinstance(target, Column):
            return true()
        if target.kind == "bool":
            return true()
        if target.kind in ("ci", "exact"):
            return and_(target.expr.isnot(None), target.expr != "")
        return target.expr.isnot(None)

    def _compare(self, target: Column | Any, node: Comparison) -> ColumnElement[bool]:
        op, value = node.op, node.value
        if not isinstance(target, Column):  # a constant: decided here
            return true() if _constant_matches(target, op, value) else false()
        if target.kind == "bool":
            if not isinstance(value, bool) or op not in (CompareOperator.eq, CompareOperator.ne):
                raise ScimError(400, f"{node.attr_path} is a boolean: eq or ne true/false",
                                "invalidFilter")
            return target.expr if (op == CompareOperator.eq) == value else not_(target.expr)
        if target.kind == "time":
            return self._compare_time(target.expr, op, value)
        if not isinstance(value, str):
            if value is None and op in (CompareOperator.eq, CompareOperator.ne):
                present = self._present(target)
                return not_(present) if op == CompareOperator.eq else present
            raise ScimError(400, f"{node.attr_path} is a string: compare it with a string",
                            "invalidFilter")
        column = func.lower(target.expr) if target.kind == "ci" else target.expr
        value = value.lower() if target.kind == "ci" else value
        known = target.expr.isnot(None)
        if op == CompareOperator.ne:
            return or_(target.expr.is_(None), column != value)
        compare = {
            CompareOperator.eq: lambda: column == value,
            CompareOperator.co: lambda: column.contains(value, autoescape=True),
            CompareOperator.sw: lambda: column.startswith(value, autoescape=True),
            CompareOperator.ew: lambda: column.endswith(value, autoescape=True),
            CompareOperator.gt: lambda: column > value,
            CompareOperator.ge: lambda: column >= value,
            CompareOperator.lt: lambda: column < value,
            CompareOperator.le: lambda: column <= value,
        }.get(op)
        if compare is None:
            raise ScimError(400, f"operator {op.value!r} is not supported", "invalidFilter")
        return and_(known, compare())

    @staticmethod
    def _compare_time(expr: Any, op: CompareOperator, value: Any) -> ColumnElement[bool]:
        try:
            when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise ScimError(400, f"{value!r} is not a dateTime", "invalidFilter") from None
        if when.tzinfo is None:
            raise ScimError(400, "a dateTime needs its offset (Z or +hh:mm)", "invalidFilter")
        compare = {CompareOperator.eq: expr == when, CompareOperator.ne: expr != when,
                   CompareOperator.gt: expr > when, CompareOperator.ge: expr >= when,
                   CompareOperator.lt: expr < when, CompareOperator.le: expr <= when}.get(op)
        if compare is None:
            raise ScimError(400, f"operator {op.value!r} does not apply to a dateTime",
                            "invalidFilter")
        return and_(expr.isnot(None), compare)


def _constant_matches(constant: Any, op: CompareOperator, value: Any) -> bool:
    if isinstance(constant, bool):
        return (op == CompareOperator.eq) == (value is constant) \
            if op in (CompareOperator.eq, CompareOperator.ne) else False
    if not isinstance(value, str):
        return False
    left, right = str(constant).lower(), value.lower()
    return {CompareOperator.eq: left == right, CompareOperator.ne: left != right,
            CompareOperator.co: right in left, CompareOperator.sw: left.startswith(right),
            CompareOperator.ew: left.endswith(right), CompareOperator.gt: left > right,
            CompareOperator.ge: left >= right, CompareOperator.lt: left < right,
            CompareOperator.le: left <= right}[op]


SORTABLE = {"id": User.subject, "username": User.username, "externalid": ScimProfile.external_id,
            "name.givenname": User.given_name, "name.familyname": User.family_name,
            "emails": User.email, "emails.value": User.email, "meta.created": User.created_at}


def sort_column(sort_by: str | None) -> Any:
    if not sort_by:
        return None
    key = sort_by.strip().lower().removeprefix(CORE_USER.lower() + ":")
    column = SORTABLE.get(key)
    if column is None:
        raise ScimError(400, f"cannot sort by {sort_by[:100]!r}: sortable attributes are "
                        "id, userName, externalId, name.givenName, name.familyName, emails, "
                        "meta.created", "invalidValue")
    return column


MAX_START_INDEX = 2**31 - 1


def page(start_index: str | None, count: str | None, default: int, maximum: int
         ) -> tuple[int, int]:
    """(offset, limit) from startIndex (1-based; below 1 is 1) and count (negative is 0,
    above the maximum is the maximum), RFC 7644 §3.4.2.4."""
    def number(raw: str | None, name: str, fallback: int) -> int:
        if raw is None or raw == "":
            return fallback
        try:
            return int(raw)
        except ValueError:
            raise ScimError(400, f"{name} must be an integer", "invalidValue") from None
    # Beyond any result set, and within a 32-bit OFFSET: 99999999999999999999 made SQLite raise
    # OverflowError (a 500) and would overflow PostgreSQL's bigint.
    start = min(max(1, number(start_index, "startIndex", 1)), MAX_START_INDEX)
    limit = min(max(0, number(count, "count", default)), maximum)
    return start - 1, limit
