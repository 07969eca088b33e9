"""The admin console's own nav entries (idp.core.admin_nav) and the `admin_nav()` template
global that admin/_nav.html shows: the entries the signed-in staff member's role may open."""

from __future__ import annotations

from flask import Flask, g

from idp.admin import service
from idp.admin.access import ADMIN_ROLES, CONSOLE_ROLES, SECURITY_ROLES
from idp.core import admin_nav
from idp.core.admin_nav import NavEntry, Tile
from idp.core.i18n import lazy_gettext as _l


def _current_entries() -> list[NavEntry]:
    sso = getattr(g, "sso_session", None)
    return admin_nav.entries_for(sso.user.role if sso is not None else None)


def install(app: Flask) -> None:
    for entry in (
            NavEntry("admin.index", _l("Dashboard"), lambda: CONSOLE_ROLES, order=0),
            NavEntry("admin.clients", _l("Clients"), lambda: ADMIN_ROLES, order=10),
            NavEntry("admin.users", _l("Users"), lambda: SECURITY_ROLES, order=20),
            NavEntry("admin.audit_log", _l("Audit log"), lambda: SECURITY_ROLES, order=30),
            NavEntry("admin.alerts", _l("Alerts"), lambda: SECURITY_ROLES, order=40),
            # the reports blueprint has no install of its own; its endpoint is named only
            NavEntry("reports.index", _l("Reports"), lambda: SECURITY_ROLES, order=50)):
        admin_nav.add(app, entry)
    if app.extensions["idp"].settings.sms_backend == "outbox":  # the development gateway
        admin_nav.add(app, NavEntry("admin.sms_outbox", _l("SMS outbox"),
                                    lambda: ADMIN_ROLES, order=90))
    for tile in (
            Tile("admin.clients", _l("Client requests waiting for approval"),
                 service.pending_client_count, lambda: ADMIN_ROLES, order=20),
            Tile("admin.alerts", _l("New security alerts"), service.new_alert_count,
                 lambda: SECURITY_ROLES, order=30, args=(("state", "new"),)),
            Tile("admin.users", _l("Locked accounts"), service.locked_count,
                 lambda: SECURITY_ROLES, order=40, args=(("locked", "1"),)),
            Tile("admin.users", _l("Active sessions"), service.live_session_count,
                 lambda: SECURITY_ROLES, order=50, attention=False)):
        admin_nav.add_tile(app, tile)
    app.add_template_global(_current_entries, "admin_nav")
