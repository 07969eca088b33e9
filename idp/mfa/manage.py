"""Managing one's own factors: list, rename, remove, new recovery codes; and the operators'
reset. Removing the last factor is refused while policy requires MFA."""

from __future__ import annotations

from sqlalchemy import delete, func, select

from idp.accounts import notices
from idp.accounts.models import User
from idp.audit import service as audit
from idp.context import policy
from idp.core.i18n import gettext as _
from idp.extensions import db
from idp.mfa.factors import recovery
from idp.mfa.models import Factor, RecoveryCode


class FactorError(ValueError):
    """The change is not allowed; the message says why."""


def owned(user: User, factor_id: int) -> Factor:
    factor = db.session.get(Factor, factor_id)
    if factor is None or factor.user_id != user.id or factor.confirmed_at is None:
        raise FactorError(_("No such sign-in method."))
    return factor


def rename(user: User, factor_id: int, label: str) -> None:
    label = (label or "").strip()[:100]
    if not label:
        raise FactorError(_("Give it a name."))
    factor = owned(user, factor_id)
    factor.label = label
    audit.record("mfa.renamed", user_id=user.id, factor=factor.kind)


def remove(user: User, factor_id: int) -> None:
    factor = owned(user, factor_id)
    confirmed = db.session.execute(select(func.count()).select_from(Factor).where(
        Factor.user_id == user.id, Factor.confirmed_at.is_not(None))).scalar_one()
    if policy().mfa.required and confirmed <= 1:
        raise FactorError(_("This is your only way to verify your sign-in. Add another one "
                            "before removing it."))
    db.session.delete(factor)
    audit.record("mfa.removed", user_id=user.id, factor=factor.kind)
    notices.factor_changed(user, _("%(label)s was removed from your sign-in methods",
                                    label=factor.label))


def new_recovery_codes(user: User) -> list[str]:
    codes = recovery.generate(user)
    audit.record("mfa.recovery_codes_regenerated", user_id=user.id)
    notices.factor_changed(user, _("New recovery codes were created; the old ones stopped "
                                    "working"))
    return codes


def reset(user: User, actor: str) -> int:
    """Helpdesk: remove every factor and recovery code; the next sign-in enrolls again."""
    removed = db.session.execute(delete(Factor).where(Factor.user_id == user.id)).rowcount
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    audit.record("mfa.reset", user_id=user.id, actor=actor, removed=removed)
    return removed
