"""The PostgreSQL grants of idp/audit/grants.py (printed by `idp audit grants`, quoted in the
README) make the audit trail append-only for the application's role: as that role the
application appends events (idp.audit.service.record, the real code), while UPDATE, DELETE and
TRUNCATE of audit rows are refused by the database.

Runs in both suite runs: on PostgreSQL directly (DATABASE_URL when it is PostgreSQL, else the
local test server), in a schema and role of its own, dropped afterwards."""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import Session

from idp.audit import grants
from idp.audit import service as audit
from idp.audit.models import AuditEvent, AuditHead
from idp.extensions import db

LOCAL_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _postgres_url() -> str:
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith(("postgresql", "postgres:")):
        return url.replace("postgresql://", "postgresql+psycopg://", 1).split("?")[0]
    return LOCAL_POSTGRES


@pytest.fixture
def pg(ctx):
    """(engine bound to a fresh schema holding the audit tables, app role name)."""
    suffix = uuid.uuid4().hex[:12]
    schema, role = f"t_audit_{suffix}", f"idp_app_{suffix}"
    admin = sa.create_engine(_postgres_url())
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        conn.execute(sa.text(f'CREATE ROLE "{role}" NOLOGIN'))
    engine = sa.create_engine(f"{_postgres_url()}?options=-csearch_path%3D{schema}")
    db.metadata.create_all(engine, tables=[AuditEvent.__table__, AuditHead.__table__])
    with engine.begin() as conn:
        for statement in grants.statements(role, schema):
            conn.execute(sa.text(statement))
    try:
        yield engine, role
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            conn.execute(sa.text(f'DROP OWNED BY "{role}"'))
            conn.execute(sa.text(f'DROP ROLE "{role}"'))
        admin.dispose()


def _as_app(session: Session, role: str) -> None:
    session.execute(sa.text(f'SET LOCAL ROLE "{role}"'))


def test_the_app_role_appends_but_cannot_change_or_remove_audit_rows(pg):
    engine, role = pg
    with Session(engine) as session:
        _as_app(session, role)
        assert session.execute(sa.text("SELECT current_user")).scalar() == role
        for n in range(3):
            audit.record("test.appended", actor="app", session=session, n=n)
        session.commit()

    with Session(engine) as session:
        _as_app(session, role)
        assert [e.event for e in session.execute(sa.select(AuditEvent)).scalars()] == \
            ["test.appended"] * 3
        assert audit.verify(session) == (True, 3, None)
        session.rollback()

    refused = [
        "UPDATE audit_events SET detail = '{}' WHERE seq = 2",
        "UPDATE audit_events SET hash = prev_hash",
        "DELETE FROM audit_events WHERE seq = 3",
        "TRUNCATE audit_events",
        "DELETE FROM audit_head",
    ]
    for statement in refused:
        with Session(engine) as session:
            _as_app(session, role)
            with pytest.raises(ProgrammingError, match="permission denied"):
                session.execute(sa.text(statement))
            session.rollback()

    with Session(engine) as session:  # nothing changed; the schema owner still sees 3 events
        assert audit.verify(session) == (True, 3, None)
        _as_app(session, role)
        audit.record("test.appended", actor="app", session=session, n=3)  # still appends
        session.commit()
    with Session(engine) as session:
        assert audit.verify(session) == (True, 4, None)


def test_grant_statements_refuse_odd_names():
    with pytest.raises(ValueError, match="plain lower-case"):
        grants.statements('app"; DROP TABLE users; --')
    assert grants.statements("idp_app")[0] == 'GRANT USAGE ON SCHEMA "public" TO "idp_app"'
