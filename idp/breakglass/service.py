"""Break-glass episodes: request, re-authentication, entitlement, expiry, review.

The EHR asks for the policy's scope (`emergency_access`) at /authorize. The IdP's check
(idp.breakglass.install) makes the signed-in clinician of an allowed role fill in the request
page (a reason from the policy's list, a typed justification, the password), then pass a
second factor again (the MFA purpose "breakglass"); only then does the authorization response
carry a code, and the tokens of that grant carry `purpose_of_use` and the `emergency`
entitlement until `ends_at` (policy duration from the re-authentication). Refresh tokens of the
grant keep working after that without the entitlement: the session is not ended.

At the re-authentication: audit `breakglass.started`, a security alert (console) and an email
to security staff; the episode names the SSO session (marked). When the entitlement runs out
`sweep()` (cron: `idp breakglass sweep`) records `breakglass.ended`. Every episode waits in the
review queue for a privacy officer (never the clinician) until `review_due_at`; an overdue one
is escalated once (security staff emailed, `breakglass.review_overdue`)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, select, update

from idp import clock
from idp.accounts.models import User
from idp.audit import service as audit
from idp.breakglass.models import BreakglassEpisode
from idp.context import policy
from idp.core.i18n import gettext as _
from idp.core.i18n import lazy_gettext as _l
from idp.extensions import db
from idp.mfa import flow
from idp.mfa.models import LoginAttempt
from idp.policy import BreakglassPolicy
from idp.security import alerts
from idp.sessions.models import SsoSession

OUTCOMES = {"appropriate": _l("Appropriate use"), "inappropriate": _l("Inappropriate use: refer")}
NOT_ALLOWED = "Your role may not use emergency access (break the glass)."
INTERACTION = "Emergency access needs the clinician at the screen."


class BreakglassError(ValueError):
    """A request or review that cannot be accepted; str() is safe to show."""


def rules() -> BreakglassPolicy:
    return policy().breakglass


def _aware(value: datetime) -> datetime:
    found = clock.aware(value)
    assert found is not None
    return found


def requested(scope: str) -> bool:
    return rules().scope in scope.split()


@dataclass(frozen=True)
class Step:
    kind: str                     # login | refuse | request | done
    error: str = ""
    description: str = ""
    episode: BreakglassEpisode | None = None


def authorize_step(sso: SsoSession | None, prompt: str, request_key: str, client_id: str,
                   next_url: str) -> Step:
    """What /authorize does with a break-glass request, in the caller's transaction."""
    if sso is None:
        return Step("login")
    user = sso.user
    if user.role not in rules().roles:
        audit.record("breakglass.refused", user_id=user.id, client_id=client_id,
                     reason="role_not_allowed")
        return Step("refuse", "access_denied", NOT_ALLOWED)
    done = _verified(user.id, client_id, request_key)
    if done is not None and _use(done):
        return Step("done", episode=done)
    if "none" in prompt.split():
        return Step("refuse", "interaction_required", INTERACTION)
    now = clock.now()
    episode = BreakglassEpisode(
        id=secrets.token_urlsafe(24), user_id=user.id, client_id=client_id, sid=sso.id,
        request_key=request_key, next_url=next_url, created_at=now, amr=[],
        expires_at=now + timedelta(seconds=rules().request_lifetime))
    db.session.add(episode)
    audit.record("breakglass.requested", user_id=user.id, client_id=client_id,
                 episode=episode.id)
    return Step("request", episode=episode)


def _verified(user_id: int, client_id: str, request_key: str) -> BreakglassEpisode | None:
    return db.session.execute(select(BreakglassEpisode).where(
        BreakglassEpisode.user_id == user_id, BreakglassEpisode.client_id == client_id,
        BreakglassEpisode.request_key == request_key,
        BreakglassEpisode.verified_at.is_not(None), BreakglassEpisode.used_at.is_(None),
        BreakglassEpisode.ends_at > clock.now())
        .order_by(BreakglassEpisode.verified_at.desc()).limit(1)).scalar_one_or_none()


def _use(episode: BreakglassEpisode) -> bool:
    """One authorization response per episode (atomic)."""
    result = db.session.execute(
        update(BreakglassEpisode).where(BreakglassEpisode.id == episode.id,
                                        BreakglassEpisode.used_at.is_(None))
        .values(used_at=clock.now()).execution_options(synchronize_session=False))
    return bool(cast("CursorResult[Any]", result).rowcount)


def open_request(episode_id: str, sso: SsoSession | None) -> BreakglassEpisode | None:
    """The request this browser's user may fill in now (not verified, not expired)."""
    if sso is None or not episode_id or len(episode_id) > 40:
        return None
    item = db.session.get(BreakglassEpisode, episode_id)
    if item is None or item.user_id != sso.user_id or item.verified_at is not None or \
            _aware(item.expires_at) <= clock.now():
        return None
    return item


def check_request(reason: str | None, justification: str | None) -> str | None:
    """What is wrong with the reason and justification entered (None: acceptable)."""
    policy_ = rules()
    if reason not in policy_.reasons:
        return _("Choose the reason for emergency access.")
    text = (justification or "").strip()
    if len(text) < policy_.justification_min:
        return _("Explain why in at least %(n)s characters: the privacy officer reviews every "
                 "emergency access.", n=policy_.justification_min)
    if len(text) > policy_.justification_max:
        return _("Keep the justification under %(n)s characters.", n=policy_.justification_max)
    if any(ord(c) < 32 and c not in "\n\r\t" for c in text):
        return _("The justification holds characters that are not text.")
    return None


def begin_second_factor(episode: BreakglassEpisode, user: User, reason: str,
                        justification: str) -> LoginAttempt:
    """Password right and the request complete: wait for the second factor again."""
    episode.reason, episode.justification = reason, justification.strip()
    attempt = flow.begin(user, episode.next_url, purpose="breakglass")
    attempt.amr = ["pwd"]
    episode.attempt_id = attempt.id
    return attempt


def episode_for_attempt(attempt_id: str) -> BreakglassEpisode | None:
    return db.session.execute(select(BreakglassEpisode).where(
        BreakglassEpisode.attempt_id == attempt_id)).scalar_one_or_none()


def complete(attempt: LoginAttempt, user: User, amr: list[str]) -> BreakglassEpisode | None:
    """The second factor passed: the entitlement starts; audit, alert, email, mark."""
    episode = episode_for_attempt(attempt.id)
    if episode is None or episode.verified_at is not None:
        return None
    now = clock.now()
    episode.verified_at, episode.amr = now, list(amr)
    episode.ends_at = now + timedelta(seconds=rules().duration)
    episode.review_due_at = now + timedelta(seconds=rules().review_within)
    detail: dict[str, Any] = {"episode": episode.id, "reason": episode.reason,
              "purpose_of_use": purposes(episode), "ends_at": episode.ends_at.isoformat(),
              "sid_marked": True}
    audit.record("breakglass.started", user_id=user.id, client_id=episode.client_id,
                 amr=list(amr), **detail)
    alerts.raise_alert("breakglass", user_id=user.id, detail=detail)
    label = rules().reasons[episode.reason or ""].label if episode.reason else "?"
    alerts.notify_security(
        f"Break-glass emergency access by {user.username}",
        f"{user.name or user.username} ({user.username}, role {user.role}) used emergency "
        f"access (break the glass) at {now:%Y-%m-%d %H:%M} UTC, until "
        f"{episode.ends_at:%H:%M} UTC.\n\nReason: {label}\nJustification: "
        f"{episode.justification}\n\nA privacy officer must review it by "
        f"{episode.review_due_at:%Y-%m-%d %H:%M} UTC (admin console, Break-glass review).")
    return episode


def purposes(episode: BreakglassEpisode) -> list[str]:
    """HL7 v3 ActReason codes: the reason's purpose, then the policy's (BTG)."""
    reason = rules().reasons.get(episode.reason or "")
    found = [reason.purpose] if reason else []
    if rules().purpose_of_use not in found:
        found.append(rules().purpose_of_use)
    return found


# -- the grant and its tokens ------------------------------------------------------------------
VALUE = "breakglass.episode"   # interaction value: the episode this response uses


def bind_code(oauth_request: Any, family_id: str, user: User,
              values: dict[str, Any] | None = None) -> None:
    episode_id = (values or {}).get(VALUE)
    if episode_id:
        db.session.execute(update(BreakglassEpisode).where(BreakglassEpisode.id == episode_id)
                           .values(family_id=family_id)
                           .execution_options(synchronize_session=False))


def active(*, family_id: str | None = None, user_id: int | None = None
           ) -> BreakglassEpisode | None:
    """The episode whose entitlement runs now, for a grant (access tokens) or a user."""
    query = select(BreakglassEpisode).where(BreakglassEpisode.ends_at > clock.now(),
                                            BreakglassEpisode.used_at.is_not(None))
    if family_id is not None:
        query = query.where(BreakglassEpisode.family_id == family_id)
    elif user_id is not None:
        query = query.where(BreakglassEpisode.user_id == user_id)
    else:
        return None
    return db.session.execute(query.order_by(BreakglassEpisode.ends_at.desc()).limit(1)
                              ).scalar_one_or_none()


def entitlement_claims(episode: BreakglassEpisode | None) -> dict[str, Any]:
    if episode is None or episode.ends_at is None:
        return {}
    return {"purpose_of_use": purposes(episode),
            "emergency": {"exp": int(_aware(episode.ends_at).timestamp()),
                          "reason": episode.reason, "episode": episode.id}}


def session_marked(sid: str) -> bool:
    """Did emergency access happen in this SSO session?"""
    return db.session.execute(select(BreakglassEpisode.id).where(
        BreakglassEpisode.sid == sid, BreakglassEpisode.verified_at.is_not(None)).limit(1)
        ).first() is not None


# -- expiry and review ---------------------------------------------------------------------
@dataclass
class SweepReport:
    ended: int = 0
    escalated: int = 0


def sweep() -> SweepReport:
    """Record the end of every entitlement that ran out; escalate overdue reviews (commits)."""
    now = clock.now()
    report = SweepReport()
    for episode in db.session.execute(select(BreakglassEpisode).where(
            BreakglassEpisode.ends_at <= now, BreakglassEpisode.ended_at.is_(None),
            BreakglassEpisode.verified_at.is_not(None))).scalars():
        episode.ended_at = now
        audit.record("breakglass.ended", user_id=episode.user_id, actor="system:breakglass",
                     client_id=episode.client_id, episode=episode.id,
                     ends_at=_aware(episode.ends_at).isoformat() if episode.ends_at else None)
        report.ended += 1
    overdue = list(db.session.execute(select(BreakglassEpisode).where(
        BreakglassEpisode.review_due_at <= now, BreakglassEpisode.reviewed_at.is_(None),
        BreakglassEpisode.escalated_at.is_(None))).scalars())
    for episode in overdue:
        episode.escalated_at = now
        audit.record("breakglass.review_overdue", user_id=episode.user_id,
                     actor="system:breakglass", episode=episode.id,
                     due=_aware(episode.review_due_at).isoformat()
                     if episode.review_due_at else None)
        alerts.raise_alert("breakglass_review_overdue", user_id=episode.user_id,
                           detail={"episode": episode.id})
        report.escalated += 1
    if overdue:
        alerts.notify_security(
            f"{len(overdue)} break-glass review(s) overdue",
            "These emergency access episodes were not reviewed by a privacy officer in time:\n"
            + "\n".join(f"- episode {e.id[:8]}, started "
                        f"{_aware(e.verified_at).strftime('%Y-%m-%d %H:%M')} UTC"
                        for e in overdue if e.verified_at)
            + "\n\nReview them in the admin console (Break-glass review).")
    db.session.commit()
    return report


def queue() -> list[BreakglassEpisode]:
    """Episodes waiting for review, the oldest due first."""
    return list(db.session.execute(select(BreakglassEpisode).where(
        BreakglassEpisode.verified_at.is_not(None), BreakglassEpisode.reviewed_at.is_(None))
        .order_by(BreakglassEpisode.review_due_at)).scalars())


def review(episode_id: str, reviewer: User, outcome: str, note: str) -> BreakglassEpisode:
    """A privacy officer's decision (not on their own episode), audited."""
    if reviewer.role not in rules().reviewer_roles:
        raise BreakglassError(_("Only a privacy officer reviews emergency access."))
    if outcome not in OUTCOMES:
        raise BreakglassError(_("Choose an outcome."))
    note = (note or "").strip()
    if not 1 <= len(note) <= 2000:
        raise BreakglassError(_("Write a review note (up to 2000 characters)."))
    episode = db.session.get(BreakglassEpisode, episode_id[:40])
    if episode is None or episode.verified_at is None:
        raise BreakglassError(_("No such emergency access episode."))
    if episode.user_id == reviewer.id:
        raise BreakglassError(_("You cannot review your own emergency access."))
    result = db.session.execute(
        update(BreakglassEpisode).where(BreakglassEpisode.id == episode.id,
                                        BreakglassEpisode.reviewed_at.is_(None))
        .values(reviewed_at=clock.now(), reviewed_by=reviewer.id, outcome=outcome,
                review_note=note).execution_options(synchronize_session=False))
    done = cast("CursorResult[Any]", result).rowcount
    if not done:
        raise BreakglassError(_("This episode was reviewed already."))
    audit.record("breakglass.reviewed", user_id=episode.user_id,
                 actor=f"privacy:{reviewer.id}", episode=episode.id, outcome=outcome,
                 overdue=bool(episode.review_due_at and
                              _aware(episode.review_due_at) < clock.now()))
    db.session.refresh(episode)
    return episode


def report(since: datetime | None = None) -> list[dict[str, Any]]:
    """Every verified episode: who, when, why, until when, reviewer and outcome."""
    query = select(BreakglassEpisode, User).join(User, User.id == BreakglassEpisode.user_id) \
        .where(BreakglassEpisode.verified_at.is_not(None))
    if since is not None:
        query = query.where(BreakglassEpisode.verified_at >= since)
    reviewers = {u.id: u.username for u in db.session.execute(select(User)).scalars()}
    rows = []
    now = clock.now()
    for episode, user in db.session.execute(query.order_by(BreakglassEpisode.verified_at)):
        due = _aware(episode.review_due_at) if episode.review_due_at else None
        rows.append({
            "episode": episode.id, "user": user.username, "role": user.role,
            "client_id": episode.client_id, "reason": episode.reason,
            "justification": episode.justification,
            "started": _aware(episode.verified_at).isoformat() if episode.verified_at else None,
            "ends": _aware(episode.ends_at).isoformat() if episode.ends_at else None,
            "review_due": due.isoformat() if due else None,
            "reviewer": reviewers.get(episode.reviewed_by or 0),
            "reviewed": _aware(episode.reviewed_at).isoformat() if episode.reviewed_at
            else None,
            "outcome": episode.outcome,
            "overdue": episode.reviewed_at is None and due is not None and due < now,
            "escalated": episode.escalated_at is not None})
    return rows
