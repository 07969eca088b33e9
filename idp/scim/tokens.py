"""Provisioning tokens: random 256-bit bearer tokens, shown once, kept as SHA-256
(idp.core.crypto.digest), named (the name is the actor of every SCIM write in the audit
trail), optionally expiring, revocable. The caller commits."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update

from idp import clock
from idp.audit import service as audit
from idp.context import policy
from idp.core.crypto import digest
from idp.extensions import db
from idp.scim.models import ScimToken

PREFIX = "scim_"  # recognisable in a secret scanner; not part of what is checked
MAX_TOKEN_LENGTH = 128
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}")


class TokenError(ValueError):
    """A token that cannot be made; the message says why."""


@dataclass(frozen=True)
class NewToken:
    row: ScimToken
    token: str  # the secret, never stored


def create(name: str, expires_days: int | None = None, *, actor: str = "cli") -> NewToken:
    name = (name or "").strip()
    if not NAME_RE.fullmatch(name):
        raise TokenError("name: 1-100 letters, digits, spaces, '.', '_' or '-'")
    limit = policy().scim.max_token_days
    if expires_days is not None and not 1 <= expires_days <= limit:
        raise TokenError(f"expires-days: between 1 and {limit} (policies/scim.toml)")
    if db.session.execute(select(ScimToken.id).where(ScimToken.name == name)).first():
        raise TokenError(f"a token named {name!r} exists already (names stay unique, even "
                         "once revoked, so the audit trail names one token)")
    secret = PREFIX + secrets.token_urlsafe(32)
    now = clock.now()
    row = ScimToken(name=name, token_hash=digest(secret), created_at=now,
                    expires_at=now + timedelta(days=expires_days) if expires_days else None)
    db.session.add(row)
    db.session.flush()
    audit.record("scim.token_created", actor=actor, token_name=name,
                 expires_at=row.expires_at.isoformat() if row.expires_at else None)
    return NewToken(row, secret)


def listing() -> list[ScimToken]:
    return list(db.session.execute(select(ScimToken).order_by(ScimToken.id)).scalars())


def revoke(name: str, *, actor: str = "cli") -> bool:
    """Revoke the live token of that name; False when there is none."""
    done = db.session.execute(update(ScimToken).where(
        ScimToken.name == name, ScimToken.revoked_at.is_(None)).values(revoked_at=clock.now())
        .execution_options(synchronize_session=False))
    if getattr(done, "rowcount", 0):
        audit.record("scim.token_revoked", actor=actor, token_name=name)
    return bool(getattr(done, "rowcount", 0))


def authenticate(presented: str) -> ScimToken | None:
    """The live token a bearer value names, or None (unknown, revoked, expired)."""
    if not presented or len(presented) > MAX_TOKEN_LENGTH:
        return None
    row = db.session.execute(select(ScimToken).where(
        ScimToken.token_hash == digest(presented))).scalar_one_or_none()
    now = clock.now()
    if row is None or row.revoked_at is not None or \
            (row.expires_at is not None and row.expires_at <= now):
        return None
    return row


def state(row: ScimToken) -> str:
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= clock.now():
        return "expired"
    return "active"
