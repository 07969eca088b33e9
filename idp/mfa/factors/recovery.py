"""The recovery-code factor: codes shown once, stored hashed, each usable once; regenerating
replaces all. Not a row of mfa_factors: every account gets codes with its first factor, and
they are used on their own page (/mfa/recovery), not offered among "another way"."""

from __future__ import annotations

import base64
import hmac
import secrets
from collections.abc import Mapping

from sqlalchemy import delete, func, select, update

from idp import clock
from idp.accounts.models import User
from idp.context import policy
from idp.core.crypto import digest
from idp.extensions import db
from idp.mfa.factors.base import FactorType
from idp.mfa.factors.registry import builtin
from idp.mfa.models import Factor, LoginAttempt, RecoveryCode

KIND = "recovery"


def _normalise(code: str) -> str:
    return (code or "").strip().replace("-", "").replace(" ", "").upper()


def generate(user: User) -> list[str]:
    """New codes (80 bits each, so a plain hash is safe at rest); earlier codes stop working."""
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    codes = []
    for _ in range(policy().mfa.recovery_code_count):
        raw = base64.b32encode(secrets.token_bytes(10)).decode()
        codes.append("-".join(raw[i:i + 4] for i in range(0, 16, 4)))
        db.session.add(RecoveryCode(user_id=user.id, code_hash=digest(_normalise(codes[-1])),
                                    created_at=clock.now()))
    return codes


def remaining(user: User) -> int:
    return db.session.execute(select(func.count()).select_from(RecoveryCode).where(
        RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))).scalar_one()


def use(user: User, code: str) -> bool:
    wanted = digest(_normalise(code))
    rows = db.session.execute(select(RecoveryCode).where(
        RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))).scalars().all()
    for row in rows:
        if hmac.compare_digest(row.code_hash, wanted):
            return bool(db.session.execute(
                update(RecoveryCode).where(RecoveryCode.id == row.id,
                                           RecoveryCode.used_at.is_(None))
                .values(used_at=clock.now()).execution_options(synchronize_session=False)
            ).rowcount)
    return False


@builtin
class RecoveryFactor(FactorType):
    kind = KIND
    icon = "list"
    category = "knowledge"
    stored = False

    def verify(self, attempt: LoginAttempt, user: User, factor: Factor | None,
               response: Mapping[str, str]) -> bool:
        return use(user, response.get("code", "")[:64])
