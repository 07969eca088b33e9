"""Security alerts at sign-in (the guide: "unusual location", "simultaneous devices").

Checked right after a successful sign-in starts its SSO session (idp.mfa.flow.finish), against
the account's earlier SSO sessions, which stay in the database after they end:

- new device: no earlier session of this account had the same user agent string;
- new network: no earlier session in the last NETWORK_MEMORY came from the same network
  (IPv4 /24, IPv6 /48);
- simultaneous sessions: another live session of this account comes from another network.

The very first sign-in of an account raises nothing (there is nothing to compare with). Each
sign-in that trips a rule writes one audit event "alert.unusual_sign_in" and one
SecurityAlert row (listed at /admin/alerts, state new | acknowledged | resolved) in the sign-in's
transaction, and sends the user one email naming the reasons, after the response. The email
names no secret; it tells the user what to do if it was not them.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta

from sqlalchemy import select

from idp import clock
from idp.accounts.models import User
from idp.admin.models import SecurityAlert
from idp.audit import service as audit
from idp.context import policy
from idp.extensions import db
from idp.sessions.models import SsoSession

NETWORK_MEMORY = timedelta(days=90)
REASONS = {
    "new_device": "a device or browser not used before with your account",
    "new_network": "a network not seen for your account in the last 90 days",
    "simultaneous_sessions": "while your account is also signed in from another network",
}


def network(ip: str | None) -> str | None:
    """The network an address belongs to for these rules: IPv4 /24, IPv6 /48."""
    if not ip:
        return None
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def reasons_for(user: User, sso: SsoSession) -> list[str]:
    """Which rules this new session trips (empty for a familiar sign-in)."""
    now = clock.now()
    earlier = list(db.session.execute(select(SsoSession).where(
        SsoSession.user_id == user.id, SsoSession.id != sso.id,
        SsoSession.created_at <= sso.created_at)).scalars())
    if not earlier:
        return []
    reasons = []
    if sso.user_agent and all(s.user_agent != sso.user_agent for s in earlier):
        reasons.append("new_device")
    here = network(sso.ip)
    recent = [s for s in earlier if s.created_at >= now - NETWORK_MEMORY]
    if here and all(network(s.ip) != here for s in recent):
        reasons.append("new_network")
    rules = policy().session
    live = [s for s in earlier if s.ended_at is None
            and now - s.last_seen_at <= timedelta(seconds=rules.idle_timeout)
            and now - s.created_at <= timedelta(seconds=rules.absolute_timeout)]
    if here and any(network(s.ip) not in (here, None) for s in live):
        reasons.append("simultaneous_sessions")
    return reasons


def check_sign_in(user: User, sso: SsoSession) -> list[str]:
    """Record and announce an unusual sign-in; the reasons found (empty: nothing done)."""
    reasons = reasons_for(user, sso)
    if not reasons:
        return []
    detail = {"reasons": reasons, "sid": sso.id, "network": network(sso.ip)}
    audit.record("alert.unusual_sign_in", user_id=user.id, actor="system", **detail)
    db.session.add(SecurityAlert(kind="unusual_sign_in", user_id=user.id,
                                 created_at=clock.now(), state="new",
                                 detail={**detail, "ip": sso.ip,
                                         "user_agent": (sso.user_agent or "")[:200]}))
    if user.email:
        from idp.notify.mailer import send_after_response

        lines = "\n".join(f"- {REASONS[r]}" for r in reasons)
        when = clock.now().strftime("%Y-%m-%d %H:%M UTC")
        send_after_response(
            user.email, "New sign-in to your account",
            f"Hello {user.name or user.username},\n\nYour account {user.username} was signed "
            f"in at {when} from IP address {sso.ip or 'unknown'} with:\n{lines}\n\n"
            f"Browser: {sso.user_agent or 'unknown'}\n\nIf this was you, there is nothing to "
            "do. If it was not, change your password now, end your other sessions in your "
            "account settings, and contact your IT helpdesk so they can make sure every "
            "session was terminated.\n")
    return reasons
