"""The SAML IdP plugs in: its blueprint, and its part in every session's end (a core event:
idp.core.events SESSION_ENDED): the SPs that received an assertion in an ended session get a
signed LogoutRequest by SOAP once the response has gone out, or through the browser
(idp.core.logout_relays, idp.saml.frontchannel) when they have only a front-channel endpoint.
create_app installs it while policies/saml.toml has `enabled = true`."""

from __future__ import annotations

from functools import partial

from flask import Flask, has_request_context
from sqlalchemy import update

from idp import clock
from idp.audit import service as audit
from idp.core import admin_nav, events, logout_relays
from idp.core.after_response import run_after_response
from idp.core.i18n import lazy_gettext as _l
from idp.extensions import db
from idp.lazymodule import lazy
from idp.saml import entity, frontchannel
from idp.saml.models import SamlParticipant
from idp.saml.views import admin_bp, bp

service = lazy("idp.saml.service")  # pysaml2: loaded when an SP is first spoken to


def on_session_ended(sids: list[str], reason: str) -> None:
    """Every live participant of the ended sessions is owed a LogoutRequest: by SOAP, or
    through the browser when the session is this request's own and the SP has only a
    front-channel logout endpoint (idp.saml.frontchannel)."""
    rows = entity.participants_of(sids)
    if not rows:
        return
    ids = [r.id for r in rows]
    db.session.execute(update(SamlParticipant).where(SamlParticipant.id.in_(ids))
                       .values(ended_at=clock.now())
                       .execution_options(synchronize_session=False))
    browser = frontchannel.browser_sid()
    for row in rows:
        if browser is not None and row.sid == browser and \
                service.front_channel_only(row.sp_entity_id):
            frontchannel.stash(row, deliver)
        elif has_request_context():  # after the response, in a transaction of its own
            run_after_response(partial(deliver, row.id, commit=True))
        else:  # the CLI: now, recorded in the command's transaction (it commits)
            deliver(row.id, commit=False)


def deliver(participant_id: str, *, commit: bool) -> None:
    """One SOAP LogoutRequest, attempted once (no retry queue yet), its outcome audited."""
    outcome = service.soap_logout(participant_id)
    row = db.session.get(SamlParticipant, participant_id)
    audit.record("saml.logout_sent", actor="idp", user_id=row.user_id if row else None,
                 sp=row.sp_entity_id if row else None, outcome=outcome[:120])
    if commit:
        db.session.commit()


def install(app: Flask) -> None:
    app.register_blueprint(bp)
    app.register_blueprint(admin_bp)
    admin_nav.add(app, admin_nav.NavEntry("saml_admin.sps", _l("SAML applications"),
                                          lambda: ("admin",), order=85))
    events.subscribe(app, events.SESSION_ENDED, on_session_ended)
    logout_relays.register(app, frontchannel.relay)
    with app.app_context():
        entity.key_files()  # generated at first start, not at the first request
