"""What provisioning means for an account beyond its attributes: joiners (welcome mail, a
clinical role only with credentials), movers (role change: sessions end, EPCS withdrawn when
the role is not clinical, as the console's role change does), leavers (every session ended
with back-channel logout, every token revoked, pending mails and reset links cancelled,
audited as a termination). Every write is audited with the token's name as the actor.
In the caller's transaction."""

from __future__ import annotations

from sqlalchemy import update

from idp import clock
from idp.accounts import licenses, reset
from idp.accounts import settings as account_settings
from idp.accounts.models import User
from idp.audit import service as audit
from idp.context import policy
from idp.core import events
from idp.extensions import db
from idp.notify import outbox
from idp.notify.models import MailOutbox
from idp.scim.models import ScimProfile


def actor(token_name: str) -> str:
    return f"scim:{token_name}"


def joined(user: User, profile: ScimProfile, role: str | None, token_name: str, *,
           welcome: bool) -> None:
    audit.record("scim.user_created", user_id=user.id, actor=actor(token_name),
                 token_name=token_name, username=user.username)
    if role is not None:
        role_wanted(user, profile, role, token_name, joining=True)
    if welcome and policy().scim.welcome_mail:
        send_welcome(user)


def send_welcome(user: User) -> None:
    """A link to choose the first password (the reset machinery: single use, hashed); the
    mail leaves after the response, through the outbox (retried when SMTP fails)."""
    link = reset.issue_link(user)
    hours = policy().password.reset_link_lifetime // 3600
    row = outbox.enqueue(
        user.email, "Your account is ready: choose your password",
        f"Hello {user.name or user.username},\n\nYour organisation created an account for "
        f"you: {user.username}.\n\nChoose your password with this link within {hours} "
        f"hours (it works once):\n\n{link.url}\n\nAt your first sign-in you will also set "
        "up a second factor (an authenticator app or a security key).\n")
    outbox.deliver_after_response([row.id])


def role_wanted(user: User, profile: ScimProfile, role: str, token_name: str, *,
                joining: bool = False) -> None:
    """The role the connector asks for. A clinical one without credentials is held (the
    account keeps scim.toml pending_role) until they arrive in a later write."""
    if role == user.role:  # already held (verified before, perhaps in onboarding): kept
        profile.requested_role = None
        return
    target = role
    if policy().is_clinical(role) and not licenses.credentials_complete(user):
        if profile.requested_role != role:
            audit.record("scim.clinician_pending", user_id=user.id, actor=actor(token_name),
                         token_name=token_name, requested_role=role)
        profile.requested_role = role
        target = policy().scim.pending_role
    else:
        profile.requested_role = None
    if target != user.role:
        change_role(user, target, token_name, joining=joining)


def change_role(user: User, role: str, token_name: str, *, joining: bool = False) -> None:
    """A mover: audited as the console does (`user.role_changed`), EPCS withdrawn when the new
    role is not clinical, every session ended so the new role only reaches relying parties in
    new tokens."""
    old = user.role
    user.role = role
    moved: dict[str, str] = {"from": old, "to": role}
    audit.record("user.role_changed", user_id=user.id, actor=actor(token_name),
                 token_name=token_name, **moved)  # type: ignore[arg-type]
    events.emit(events.ROLE_CHANGED, user_id=user.id, role=role,
                clinical=policy().is_clinical(role), actor=actor(token_name))
    if not joining:
        account_settings.sign_out_everywhere(user, "role_changed", actor=actor(token_name))


def terminate(user: User, profile: ScimProfile, token_name: str, *, reason: str) -> None:
    """A leaver: disabled, signed out everywhere (back-channel logout to every relying party),
    every token revoked, reset links and mails not yet sent cancelled."""
    now = clock.now()
    user.disabled = True
    ended = account_settings.sign_out_everywhere(user, f"scim_{reason}",
                                                 actor=actor(token_name))
    reset.revoke_links(user.id, now)
    cancelled = db.session.execute(update(MailOutbox).where(
        MailOutbox.recipient == user.email, MailOutbox.sent_at.is_(None),
        MailOutbox.abandoned_at.is_(None)).values(abandoned_at=now, body=None,
                                                   last_error="cancelled: account terminated")
        .execution_options(synchronize_session=False))
    profile.updated_at = now
    audit.record("user.terminated", user_id=user.id, actor=actor(token_name),
                 token_name=token_name, reason=reason, sessions_ended=ended,
                 mails_cancelled=getattr(cancelled, "rowcount", 0))


def reactivate(user: User, profile: ScimProfile, token_name: str) -> None:
    user.disabled = False
    profile.updated_at = clock.now()
    audit.record("scim.user_reactivated", user_id=user.id, actor=actor(token_name),
                 token_name=token_name)


def password_set(user: User, token_name: str) -> None:
    audit.record("scim.password_set", user_id=user.id, actor=actor(token_name),
                 token_name=token_name)


def updated(user: User, token_name: str) -> None:
    audit.record("scim.user_updated", user_id=user.id, actor=actor(token_name),
                 token_name=token_name)


def deleted(user: User, token_name: str) -> None:
    audit.record("scim.user_deleted", user_id=user.id, actor=actor(token_name),
                 token_name=token_name)


def group_changed(group_id: str, name: str, change: str, token_name: str) -> None:
    audit.record(f"scim.group_{change}", actor=actor(token_name), token_name=token_name,
                 group_id=group_id, group=name[:100])


def membership_changed(user: User, group: str, joined_group: bool, token_name: str) -> None:
    audit.record("scim.group_member_added" if joined_group else "scim.group_member_removed",
                 user_id=user.id, actor=actor(token_name), token_name=token_name,
                 group=group[:100])


def facility_wanted(user: User, facility: str | None, token_name: str) -> None:
    """A facility given (or taken back) by a group of scim.toml [groups]."""
    if user.facility == facility:
        return
    old = user.facility
    user.facility = facility
    audit.record("scim.facility_changed", user_id=user.id, actor=actor(token_name),
                 token_name=token_name, **{"from": old, "to": facility})  # type: ignore[arg-type]
