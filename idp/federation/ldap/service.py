"""Directory accounts: the password check by bind (a password verifier of idp.accounts), the
import of a directory entry into a local account, and the sync that keeps them in step.

What the directory decides: who the person is (the bind), whether they may sign in at all
(disabled, locked, removed), their name, email, employee number and groups. What stays ours:
our lockout and throttles in front of every bind, the second factor, the gates, and the clinical
role, which needs a verified NPI and license whatever the groups say."""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from idp import clock
from idp.accounts import licenses
from idp.accounts import service as accounts
from idp.accounts import settings as account_settings
from idp.accounts.models import User
from idp.accounts.verifiers import Verdict
from idp.audit import service as audit
from idp.context import policy, settings
from idp.core import events
from idp.extensions import db, limiter
from idp.federation.ldap import directory
from idp.federation.ldap.directory import DirectoryUnavailable, Entry
from idp.federation.ldap.models import LdapLink

log = logging.getLogger("idp.federation.ldap")
ACTOR = "ldap"
SYNC_ACTOR = "ldap-sync"
# After NFKC, a sign-in name sent to the directory is plain ASCII of these characters: look-alike
# letters from other scripts (Cyrillic "а" for Latin "a") are refused, never matched.
NAME_RE = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")


def normalise_name(identifier: str) -> str | None:
    """The sign-in name as the directory will be asked for it, or None when refused: NFKC
    folds compatibility forms (full-width letters) to what they stand for, then anything that
    is not plain ASCII letters, digits, '.', '_', '@' or '-' is refused."""
    name = unicodedata.normalize("NFKC", identifier or "").strip().lower()
    if not name.isascii() or not NAME_RE.fullmatch(name):
        return None
    return name


def link_of(user: User) -> LdapLink | None:
    if user.id is None:
        return None
    return db.session.execute(
        select(LdapLink).where(LdapLink.user_id == user.id)).scalar_one_or_none()


def wanted_role(entry: Entry) -> str:
    rules = policy().ldap
    groups = {g.lower() for g in entry.groups}
    for group, role in rules.group_roles.items():
        if group.lower() in groups:
            return role
    return rules.default_role


# -- the password check -------------------------------------------------------------------
def _bind_allowed(guid: str) -> bool:
    """At most bind_limit passwords per account and window reach the directory, whatever else
    happens (several nodes, a lockout reset): kept below the domain's own lockout threshold."""
    rules = policy().ldap
    key = f"{settings().ratelimit_prefix}/ldap-bind/" \
          f"{hashlib.sha256(guid.encode()).hexdigest()[:32]}"
    try:
        count = limiter.storage.incr(key, rules.bind_window)
    except Exception as exc:  # noqa: BLE001 - our database lockout still bounds the binds
        log.warning("ldap bind throttle unavailable: %s", type(exc).__name__)
        return True
    return count <= rules.bind_limit


class LdapVerifier:
    """The directory checks the passwords of linked accounts (idp.accounts.verifiers)."""

    name = "ldap"

    def handles(self, user: User) -> bool:
        return link_of(user) is not None

    def _entry(self, user: User, link: LdapLink) -> Entry | None:
        """The account's entry as the directory holds it now, or None (with the reason
        audited) when it may not sign in: gone, the name now someone else's, disabled, locked.
        No password is involved."""
        name = normalise_name(user.username)
        entry = directory.find(name) if name else None
        if entry is None or entry.guid != link.guid:
            state = "not_in_directory"
        elif entry.disabled or entry.locked:
            state = "disabled" if entry.disabled else "locked"
        else:
            return entry
        audit.record("ldap.sign_in_refused", user_id=user.id, actor=ACTOR, state=state)
        return None

    def allows(self, user: User) -> bool:
        link = link_of(user)
        return link is not None and self._entry(user, link) is not None

    def verify(self, user: User, password: str) -> Verdict:
        link = link_of(user)
        assert link is not None
        if not password or not password.strip() or "\x00" in password:
            return Verdict.WRONG  # never sent: an empty password is an unauthenticated bind
        entry = self._entry(user, link)
        if entry is None:
            return Verdict.REFUSED  # no password is sent for an account that cannot sign in
        if not _bind_allowed(link.guid):
            audit.record("ldap.bind_throttled", user_id=user.id, actor=ACTOR)
            return Verdict.THROTTLED
        if link.dn != entry.dn:
            link.dn = entry.dn  # moved to another OU
        return Verdict.OK if directory.bind(entry.dn, password) else Verdict.WRONG

    def resolve(self, identifier: str) -> User | None:
        """First sign-in of a directory user unknown here: imported (policy permitting) with
        what the directory says, then checked like any linked account."""
        rules = policy().ldap
        name = normalise_name(identifier)
        if not rules.import_on_first_sign_in or name is None or name.isdigit():
            return None
        entry = directory.find(name)
        if entry is None or entry.disabled:
            return None
        linked = db.session.execute(
            select(LdapLink).where(LdapLink.guid == entry.guid)).scalar_one_or_none()
        if linked is not None:  # e.g. typed in another form (full-width): the same person
            return db.session.get(User, linked.user_id)
        outcome = apply(entry, actor=ACTOR)
        return outcome.user


# -- import and update --------------------------------------------------------------------
@dataclass
class Applied:
    user: User | None
    change: str  # created | updated | unchanged | reenabled | skipped | conflict
    pending: bool = False  # a clinical role held back until NPI and license are verified


def _set_role(user: User, link: LdapLink, entry: Entry, actor: str, *, joining: bool) -> bool:
    """The role the groups ask for; a clinical one only with verified credentials."""
    wanted = wanted_role(entry)
    link.directory_role = wanted
    target = wanted
    pending = policy().is_clinical(wanted) and not licenses.credentials_complete(user)
    if pending:
        target = policy().ldap.pending_role
    if target != user.role:
        old, user.role = user.role, target
        moved: dict[str, Any] = {"from": old, "to": target}  # "from" is a keyword
        audit.record("user.role_changed", user_id=user.id, actor=actor, source="ldap", **moved)
        events.emit(events.ROLE_CHANGED, user_id=user.id, role=target,
                    clinical=policy().is_clinical(target), actor=actor)
        if not joining:
            account_settings.sign_out_everywhere(user, "role_changed", actor=actor)
    if pending:
        audit.record("ldap.clinician_pending", user_id=user.id, actor=actor,
                     requested_role=wanted)
    return pending


def apply(entry: Entry, *, actor: str) -> Applied:
    """Create or update the account of an enabled directory entry."""
    link = db.session.execute(
        select(LdapLink).where(LdapLink.guid == entry.guid)).scalar_one_or_none()
    name = normalise_name(entry.username)
    if name is None or not accounts.USERNAME_RE.fullmatch(name) or "@" not in entry.email:
        audit.record("ldap.entry_skipped", actor=actor, reason="unusable name or email",
                     employee_number=entry.employee_number)
        return Applied(None, "skipped")
    now = clock.now()
    npi = entry.npi if entry.npi and accounts.NPI_RE.fullmatch(entry.npi) else None
    if link is None:
        clash = accounts.find_by_login(name)
        if clash is not None:
            # A local account already has this name: never linked silently (a takeover).
            audit.record("ldap.link_conflict", user_id=clash.id, actor=actor,
                         employee_number=entry.employee_number)
            return Applied(None, "conflict")
        user = accounts.create_user(username=name, email=entry.email,
                                    role=policy().ldap.pending_role,
                                    given_name=entry.given_name[:100],
                                    family_name=entry.family_name[:100])
        link = LdapLink(user_id=user.id, guid=entry.guid, dn=entry.dn,
                        employee_number=entry.employee_number, directory_npi=npi,
                        directory_disabled=False, synced_at=now)
        db.session.add(link)
        audit.record("ldap.account_imported", user_id=user.id, actor=actor,
                     employee_number=entry.employee_number)
        pending = _set_role(user, link, entry, actor, joining=True)
        return Applied(user, "created", pending)
    found = db.session.get(User, link.user_id)
    assert found is not None
    user = found
    change = "unchanged"
    if link.directory_disabled and user.disabled:
        account_settings.set_disabled(user, False, actor=actor)
        change = "reenabled"
    link.directory_disabled = False
    values = {"email": entry.email, "given_name": entry.given_name[:100],
              "family_name": entry.family_name[:100]}
    changed = sorted(k for k, v in values.items() if getattr(user, k) != v)
    for key in changed:
        setattr(user, key, values[key])
    if "email" in changed:
        user.email_verified = False
    if (link.dn, link.employee_number, link.directory_npi) != (entry.dn, entry.employee_number,
                                                              npi):
        link.dn, link.employee_number, link.directory_npi = entry.dn, entry.employee_number, npi
        changed.append("directory")
    old_role = user.role
    pending = _set_role(user, link, entry, actor, joining=False)
    if user.role != old_role:
        changed.append("role")
    if changed:
        audit.record("ldap.account_updated", user_id=user.id, actor=actor, fields=changed)
        if change == "unchanged":
            change = "updated"
    link.synced_at = now
    return Applied(user, change, pending)


def disable(link: LdapLink, *, reason: str, actor: str) -> bool:
    """The entry is gone or disabled in the directory: the account is disabled here, every
    session ended and every token revoked (accounts' own services). False when already so."""
    user = db.session.get(User, link.user_id)
    link.directory_disabled = True
    link.synced_at = clock.now()
    if user is None or user.disabled:
        return False
    ended = account_settings.set_disabled(user, True, actor=actor)
    audit.record("ldap.account_disabled", user_id=user.id, actor=actor, reason=reason,
                 sessions_ended=ended)
    return True


# -- sync ---------------------------------------------------------------------------------
@dataclass
class SyncReport:
    seen: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    reenabled: int = 0
    disabled: int = 0
    pending_clinical: int = 0
    skipped: int = 0
    conflicts: int = 0
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class SyncRefused(Exception):
    """The sync would do something a broken directory answer would explain better."""


def sync(*, actor: str = SYNC_ACTOR) -> SyncReport:
    """Import and update every entry; disable the accounts whose entry is disabled or gone.
    The whole directory is read before anything is disabled, so an outage mid-way disables
    no one (DirectoryUnavailable goes up, the caller rolls back). Not committed here."""
    report = SyncReport()
    found = directory.entries()
    links = list(db.session.execute(select(LdapLink)).scalars())
    if not found and links:
        raise SyncRefused("the directory returned no accounts under user_base: nothing was "
                          "disabled (check user_base and user_filter)")
    seen: set[str] = set()
    for entry in found:
        report.seen += 1
        seen.add(entry.guid)
        if entry.disabled:
            link = next((x for x in links if x.guid == entry.guid), None)
            if link is not None and disable(link, reason="disabled_in_directory", actor=actor):
                report.disabled += 1
            continue
        outcome = apply(entry, actor=actor)
        counter = "conflicts" if outcome.change == "conflict" else outcome.change
        setattr(report, counter, getattr(report, counter) + 1)
        if outcome.pending:
            report.pending_clinical += 1
    for link in links:
        if link.guid not in seen and disable(link, reason="removed_from_directory",
                                             actor=actor):
            report.disabled += 1
    audit.record("ldap.sync", actor=actor, seen=report.seen, created=report.created,
                 updated=report.updated, unchanged=report.unchanged, reenabled=report.reenabled,
                 disabled=report.disabled, pending_clinical=report.pending_clinical,
                 skipped=report.skipped, conflicts=report.conflicts)
    return report


__all__ = ["DirectoryUnavailable", "LdapVerifier", "SyncRefused", "apply", "disable",
           "normalise_name", "sync"]
