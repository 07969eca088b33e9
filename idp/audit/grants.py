"""PostgreSQL grants that make the audit trail append-only for the application.

The schema is owned by a migration role (`idp db upgrade` runs as it); the application runs
as another role that may read and write every table except that it can only SELECT and INSERT
audit events: no UPDATE, DELETE or TRUNCATE. The chain head (`audit_head`: next seq and last
hash, one row) must stay updatable, since every append advances it; a rewritten head is caught
by `idp audit verify` (head and chain disagree) and by anchors (`idp audit anchor`).
"""

from __future__ import annotations

import re

_NAME = re.compile(r"[a-z_][a-z0-9_$]{0,62}")


def _ident(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a plain lower-case SQL identifier")
    return f'"{name}"'


def statements(role: str, schema: str = "public") -> list[str]:
    """The GRANT/REVOKE statements, in order, for application role `role` on `schema`
    (run them as the schema owner after every migration that adds tables)."""
    r, s = _ident(role), _ident(schema)
    return [
        f"GRANT USAGE ON SCHEMA {s} TO {r}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO {r}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {s} TO {r}",
        f"REVOKE UPDATE, DELETE, TRUNCATE ON {s}.audit_events FROM {r}",
        f"REVOKE DELETE, TRUNCATE ON {s}.audit_head FROM {r}",
    ]
