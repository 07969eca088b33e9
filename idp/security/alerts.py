"""Security alerts (the guide: "unusual location", "simultaneous devices"). Every rule and
number comes from policies/alerts.toml.

At sign-in (idp.mfa.flow.finish), against the account's earlier SSO sessions, which stay in the
database after they end:

- new device: no session of the account created in `new_device_window` carries the same device
  cookie (its SHA-256, `SsoSession.device_hash`; sessions without one never match). The cookie
  (idp.sessions.service) is given to a browser at its first sign-in, so a browser update (a new
  user agent) is the same device, and another machine with the same browser build is not. The
  user agent is kept for display only (the email, the activity page);
- new network: no session in `new_network_window` came from the same network (the address's
  `ipv4_prefix`/`ipv6_prefix`; with IDP_GEOIP_DB and `network_by_country`, its country);
- simultaneous sessions: the account's live sessions come from more than
  `max_concurrent_networks` networks. Security staff are told as well as the user.

The very first sign-in of an account raises nothing (there is nothing to compare with). Each
sign-in that trips a rule writes one audit event "alert.unusual_sign_in" and one SecurityAlert
row (listed at /admin/alerts, state new | acknowledged | resolved) in the sign-in's
transaction, and sends the user one email naming the reasons, after the response.

At a lockout (idp.accounts.lockout.register_failure, in the lockout's transaction): an account
locked `lockouts_per_account` times within `lockout_window`, or `lockouts_per_ip` different
accounts locked from one IP address within it, raise one alert each (not again for the same
account or address within the window) and an email to security staff (alerts.toml
recipient_roles).

"This wasn't me" (idp.accounts.compromise) raises an alert through raise_alert() too.
Emails name no secret; they tell the user what to do if it was not them. Neither the device id
nor its hash is written to an alert, an audit event or an email.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import distinct, func, select

from idp import clock
from idp.accounts.models import User
from idp.audit import service as audit
from idp.audit.models import AuditEvent
from idp.context import policy
from idp.core.i18n import gettext as _
from idp.core.i18n import lazy_gettext as _l
from idp.extensions import db
from idp.notify.mailer import send_after_response
from idp.policy import AlertPolicy
from idp.security import geoip
from idp.security.models import SecurityAlert
from idp.sessions.models import SsoSession

REASONS = {
    "new_device": _l("a device or browser not used before with your account"),
    "new_network": _l("a network not seen for your account in the last %(days)s days"),
    "simultaneous_sessions": _l("while your account is also signed in from another network"),
}


def _reason(code: str, days: int) -> str:
    """A line of the new-sign-in mail, in the request's language."""
    text = str(REASONS[code])
    return text % {"days": days} if "%(days)s" in text else text


def _rules() -> AlertPolicy:
    return policy().alerts


def network(ip: str | None) -> str | None:
    """The network an address belongs to for these rules: its prefix (alerts.toml)."""
    if not ip:
        return None
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    rules = _rules()
    prefix = rules.ipv4_prefix if address.version == 4 else rules.ipv6_prefix
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def network_key(ip: str | None) -> str | None:
    """What "the same network" compares: the country when GeoIP knows it and the policy says
    so, else the prefix."""
    if _rules().network_by_country:
        place = geoip.lookup(ip)
        if place is not None and place.country_code:
            return f"country:{place.country_code}"
    return network(ip)


def _live(sessions: list[SsoSession]) -> list[SsoSession]:
    now = clock.now()
    rules = policy().session
    return [s for s in sessions if s.ended_at is None
            and now - s.last_seen_at <= timedelta(seconds=rules.idle_timeout)
            and now - s.created_at <= timedelta(seconds=rules.absolute_timeout)]


def reasons_for(user: User, sso: SsoSession) -> list[str]:
    """Which rules this new session trips (empty for a familiar sign-in)."""
    rules = _rules()
    now = clock.now()
    earlier = list(db.session.execute(select(SsoSession).where(
        SsoSession.user_id == user.id, SsoSession.id != sso.id,
        SsoSession.created_at <= sso.created_at)).scalars())
    if not earlier:
        return []
    reasons = []
    devices = [s for s in earlier
               if s.created_at >= now - timedelta(seconds=rules.new_device_window)]
    if sso.device_hash is None or all(s.device_hash != sso.device_hash for s in devices):
        reasons.append("new_device")
    here = network_key(sso.ip)
    recent = [s for s in earlier
              if s.created_at >= now - timedelta(seconds=rules.new_network_window)]
    if here and all(network_key(s.ip) != here for s in recent):
        reasons.append("new_network")
    networks = {network_key(s.ip) for s in _live(earlier)} | {here}
    networks.discard(None)
    if here and len(networks) > rules.max_concurrent_networks:
        reasons.append("simultaneous_sessions")
    return reasons


def _place_detail(ip: str | None) -> dict[str, str]:
    place = geoip.lookup(ip)
    if place is None:
        return {}
    return {k: v for k, v in (("country", place.country or place.country_code),
                              ("city", place.city)) if v}


def raise_alert(kind: str, *, user_id: int | None, detail: dict[str, Any],
                actor: str = "system") -> SecurityAlert:
    """One audit event "alert.<kind>" and one SecurityAlert (state new), in the caller's
    transaction."""
    audit.record(f"alert.{kind}", user_id=user_id, actor=actor, **detail)
    alert = SecurityAlert(kind=kind, user_id=user_id, created_at=clock.now(), state="new",
                          detail=detail)
    db.session.add(alert)
    return alert


def security_staff() -> list[User]:
    """Accounts that get security alerts: a role of alerts.toml recipient_roles, enabled, with
    an email address."""
    return list(db.session.execute(select(User).where(
        User.role.in_(_rules().recipient_roles), User.disabled.is_(False),
        User.email.is_not(None))
        .order_by(User.id)).scalars())


def notify_security(subject: str, body: str) -> int:
    """Email every security staff account after the response; how many were addressed."""
    staff = security_staff()
    for person in staff:
        send_after_response(person.email, subject, body)
    return len(staff)


def check_sign_in(user: User, sso: SsoSession) -> list[str]:
    """Record and announce an unusual sign-in; the reasons found (empty: nothing done)."""
    reasons = reasons_for(user, sso)
    if not reasons:
        return []
    place = _place_detail(sso.ip)
    detail = {"reasons": reasons, "sid": sso.id, "network": network(sso.ip), **place}
    raise_alert("unusual_sign_in", user_id=user.id,
                detail={**detail, "ip": sso.ip, "user_agent": (sso.user_agent or "")[:200]})
    found = geoip.lookup(sso.ip)
    where = f" ({found})" if found else ""
    days = _rules().new_network_window // 86400
    lines = "\n".join(f"- {_reason(r, days)}" for r in reasons)
    when = clock.now().strftime("%Y-%m-%d %H:%M UTC")
    if user.email:
            send_after_response(
            user.email, _("New sign-in to your account"),
            _("Hello %(name)s,\n\nYour account %(username)s was signed in at %(when)s from IP "
              "address %(ip)s%(where)s with:\n%(lines)s\n\nBrowser: %(browser)s\n\nIf this was "
              "you, there is nothing to do. If it was not, change your password now, end your "
              "other sessions in your account settings, and contact your IT helpdesk so they "
              "can make sure every session was terminated.\n",
              name=user.name or user.username, username=user.username, when=when,
              ip=sso.ip or _("unknown"), where=where, lines=lines,
              browser=sso.user_agent or _("unknown")))
    if "simultaneous_sessions" in reasons:
        live = _live(list(db.session.execute(select(SsoSession).where(
            SsoSession.user_id == user.id)).scalars()))
        addresses = ", ".join(sorted({s.ip or "unknown" for s in live}))
        notify_security(
            f"Simultaneous sessions: {user.username}",
            f"The account {user.username} (id {user.id}) has {len(live)} live sessions from "
            f"more than {_rules().max_concurrent_networks} network(s) as of {when}: "
            f"{addresses}. The latest sign-in came from {sso.ip or 'unknown'}{where}.\n\n"
            "Review it in the admin console (Alerts, and the user's page) and end the sessions "
            "if they are not the user's.\n")
    return reasons


def _recent_alert(kind: str, since: datetime, *, user_id: int | None = None,
                  ip: str | None = None) -> bool:
    rows = db.session.execute(select(SecurityAlert).where(
        SecurityAlert.kind == kind, SecurityAlert.created_at >= since,
        *( [SecurityAlert.user_id == user_id] if user_id is not None else []))).scalars()
    return any(ip is None or (row.detail or {}).get("ip") == ip for row in rows)


def check_lockout(user: User, ip: str | None) -> list[str]:
    """After the audit event "account.locked" of this lockout was recorded: raise the repeated
    lockout alerts it completes. Returns the kinds raised."""
    rules = _rules()
    since = clock.now() - timedelta(seconds=rules.lockout_window)
    raised = []
    count = db.session.execute(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.event == "account.locked", AuditEvent.user_id == user.id,
        AuditEvent.at >= since)).scalar_one()
    if count >= rules.lockouts_per_account and \
            not _recent_alert("repeated_lockouts", since, user_id=user.id):
        raise_alert("repeated_lockouts", user_id=user.id,
                    detail={"lockouts": count, "window": rules.lockout_window, "ip": ip})
        raised.append("repeated_lockouts")
        notify_security(
            f"Repeated lockouts: {user.username}",
            f"The account {user.username} (id {user.id}) was locked {count} times in the last "
            f"{rules.lockout_window // 3600} hours after failed sign-in attempts; the latest "
            f"from IP address {ip or 'unknown'}. Someone may be guessing its password.\n\n"
            "Review it in the admin console (Alerts, and the user's page).\n")
    if ip:
        accounts = db.session.execute(select(func.count(distinct(AuditEvent.user_id))).where(
            AuditEvent.event == "account.locked", AuditEvent.ip == ip,
            AuditEvent.at >= since)).scalar_one()
        if accounts >= rules.lockouts_per_ip and \
                not _recent_alert("lockouts_from_ip", since, ip=ip):
            raise_alert("lockouts_from_ip", user_id=None,
                        detail={"ip": ip, "accounts": accounts, "window": rules.lockout_window,
                                **_place_detail(ip)})
            raised.append("lockouts_from_ip")
            notify_security(
                f"Lockouts of {accounts} accounts from {ip}",
                f"{accounts} different accounts were locked after failed sign-in attempts "
                f"from IP address {ip} in the last {rules.lockout_window // 3600} hours: "
                "possibly password guessing across accounts.\n\nReview it in the admin console "
                "(Alerts, and the audit log filtered by this IP).\n")
    return raised
