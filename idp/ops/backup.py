"""Backup and restore: the database and the key directory, together, with a manifest.

A backup is a directory (mode 0700) holding:
- `database.dump` (PostgreSQL, `pg_dump -Fc`, only the configured schema when DATABASE_URL
  sets a search_path) or `database.sqlite3` (SQLite's online backup API: consistent while the
  IdP runs);
- `keys/`: every file of IDP_KEYS_DIR (signing keys and the data-encryption key that TOTP
  seeds are encrypted with), mode 0600;
- `manifest.json`: when, the migration revision(s), the key ids, the audit chain's head.

The keys are copied first, then the database: a key made by a rotation in between is then in
neither (the restored database's tokens were all signed by keys the backup holds), while a key
copied but rotated away before the dump does no harm.

Restore puts the keys in place first, then the database, into an empty target only; then
`idp audit verify` checks the chain and the manifest's head is compared with the restored one.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from idp import clock
from idp.config import Settings

MANIFEST = "manifest.json"
FORMAT = 1


class BackupError(Exception):
    """The backup or restore cannot go on; the message says why."""


@dataclass(frozen=True)
class PgTarget:
    url: URL
    schema: str | None

    def args(self) -> list[str]:
        u = self.url
        out = ["-h", u.host or "127.0.0.1", "-p", str(u.port or 5432), "-U", u.username or "",
               "-d", u.database or ""]
        return out

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.url.password:
            env["PGPASSWORD"] = str(self.url.password)
        return env


def _pg(database_url: str) -> PgTarget:
    url = make_url(database_url)
    options = url.query.get("options")
    options = options[-1] if isinstance(options, tuple) else options
    schema = None
    for part in unquote(options or "").split():
        if part.startswith("-csearch_path="):
            schema = part.split("=", 1)[1].split(",")[0].strip('"') or None
    return PgTarget(url, schema)


def _sqlite_path(database_url: str) -> Path:
    database = make_url(database_url).database
    if not database or database == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up")
    return Path(database)


def _run(cmd: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise BackupError(f"{cmd[0]} failed: {result.stderr.strip()[:500]}")


def _copy_keys(source: Path, target: Path) -> list[str]:
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    target.chmod(0o700)
    copied = []
    for path in sorted(source.iterdir()) if source.is_dir() else []:
        if not path.is_file() or path.name.startswith("."):
            continue  # the lock file and half-written temporaries
        fd = os.open(target / path.name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(path.read_bytes())
        copied.append(path.name)
    return copied


def _state(engine: sa.Engine) -> dict:
    with engine.connect() as conn:
        revisions = sorted(r[0] for r in conn.execute(sa.text(
            "SELECT version_num FROM alembic_version")))
        head = conn.execute(sa.text(
            "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")).first()
    return {"revisions": revisions,
            "audit_head": {"seq": head[0], "hash": head[1]} if head else None}


def backup(settings: Settings, engine: sa.Engine, target: Path) -> dict:
    """Write a backup into `target` (new or empty directory); return the manifest."""
    if target.exists() and any(target.iterdir()):
        raise BackupError(f"{target} is not empty")
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    target.chmod(0o700)
    keys = _copy_keys(settings.keys_dir, target / "keys")
    url = settings.database_url
    if url.startswith("sqlite"):
        source = sqlite3.connect(_sqlite_path(url))
        dest = sqlite3.connect(target / "database.sqlite3")
        try:
            source.backup(dest)
        finally:
            dest.close()
            source.close()
        (target / "database.sqlite3").chmod(0o600)
        kind, schema = "sqlite", None
    else:
        pg = _pg(url)
        cmd = ["pg_dump", "-Fc", "--no-owner", "--no-privileges", *pg.args(),
               "-f", str(target / "database.dump")]
        if pg.schema:
            cmd += ["-n", pg.schema]
        _run(cmd, pg.env())
        (target / "database.dump").chmod(0o600)
        kind, schema = "postgresql", pg.schema
    manifest = {"format": FORMAT, "created_at": clock.now().isoformat(), "database": kind,
                "schema": schema, "keys": keys, **_state(engine)}
    fd = os.open(target / MANIFEST, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(manifest, handle, indent=2)
    return manifest


def _empty(engine: sa.Engine, schema: str | None = None) -> bool:
    inspector = sa.inspect(engine)
    if schema is not None and schema not in inspector.get_schema_names():
        return True
    return "alembic_version" not in inspector.get_table_names(schema=schema)


def restore(settings: Settings, engine: sa.Engine, source: Path) -> dict:
    """Restore `source` into the configured database (must hold no tables of the IdP) and key
    directory (must hold no keys, or exactly the backup's). Keys first, then the database."""
    try:
        manifest = json.loads((source / MANIFEST).read_text())
    except (OSError, ValueError):
        raise BackupError(f"{source} holds no readable {MANIFEST}") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"backup format {manifest.get('format')!r} is not {FORMAT}")
    url = settings.database_url
    kind = "sqlite" if url.startswith("sqlite") else "postgresql"
    if manifest["database"] != kind:
        raise BackupError(f"the backup holds a {manifest['database']} database; "
                          f"DATABASE_URL is {kind}")
    if not _empty(engine, None if kind == "sqlite" else _pg(url).schema):
        raise BackupError("the target database is not empty: restore into a new one")
    keys_dir = settings.keys_dir
    present = {p.name for p in keys_dir.glob("*") if p.is_file() and not p.name.startswith(".")} \
        if keys_dir.is_dir() else set()
    for name in present:
        backed = source / "keys" / name
        if not backed.exists() or backed.read_bytes() != (keys_dir / name).read_bytes():
            raise BackupError(f"{keys_dir} already holds other keys ({name}): restore into an "
                              "empty key directory")
    _copy_keys(source / "keys", keys_dir)
    engine.dispose()
    if kind == "sqlite":
        path = _sqlite_path(url)
        src = sqlite3.connect(source / "database.sqlite3")
        dest = sqlite3.connect(path)
        try:
            src.backup(dest)
        finally:
            dest.close()
            src.close()
        path.chmod(0o600)
    else:
        pg = _pg(url)
        if manifest.get("schema") and pg.schema != manifest["schema"]:
            raise BackupError(f"the backup is of schema {manifest['schema']!r}: set its "
                              "search_path in DATABASE_URL (a new database, same schema name)")
        _run(["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error", *pg.args(),
              str(source / "database.dump")], pg.env())
    restored = _state(engine)
    if restored != {k: manifest[k] for k in ("revisions", "audit_head")}:
        raise BackupError("the restored database does not match the manifest")
    return manifest
