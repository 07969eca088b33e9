"""The device cookie (idp_device): given at a browser's first sign-in, kept by its later ones; a
malformed value is ignored (a new device, a fresh cookie, never an error); the database keeps
only its SHA-256 (sso_sessions.device_hash) and no table holds the raw id. Its attributes over
http and https are checked in test_web_security."""

from __future__ import annotations

import hashlib
import re

import pytest
from sqlalchemy import select, text

from idp.audit.models import AuditEvent
from idp.extensions import db
from idp.security.models import SecurityAlert
from idp.sessions.models import SsoSession
from tests.helpers import csrf_from, login, make_user
from tests.log_scan import register as register_secret

DEVICE_ID = re.compile(r"[A-Za-z0-9_-]{22}")


def _device_set(response) -> str | None:
    """The idp_device value a response sets, or None."""
    for header in response.headers.getlist("Set-Cookie"):
        name, _, rest = header.partition("=")
        if name == "idp_device":
            return rest.split(";", 1)[0]
    return None


def _alert_reasons() -> list[list[str]]:
    return [e.detail["reasons"] for e in db.session.execute(select(AuditEvent).where(
        AuditEvent.event == "alert.unusual_sign_in").order_by(AuditEvent.seq)).scalars()]


def test_the_cookie_is_given_once_and_kept(ctx):
    make_user()
    http = ctx.test_client()
    assert _device_set(http.get("/login")) is None  # not before a sign-in
    first = _device_set(login(http))
    assert first and DEVICE_ID.fullmatch(first)
    page = http.get("/logout")
    assert http.post("/logout", data={"csrf_token": csrf_from(page.text), "confirm": "yes"}
                     ).status_code == 200
    assert http.get("/account").status_code == 302  # signed out
    assert http.get_cookie("idp_device").value == first  # signing out keeps the device
    assert _device_set(login(http)) == first  # renewed (Max-Age), not replaced
    assert _device_set(login(ctx.test_client(), password="Wrong-password-123!",
                             mfa=False)) is None  # a failed sign-in gives none


@pytest.mark.parametrize("bad", [
    "short",
    "x" * 23,                               # one character too many
    "A" * 21 + "$",                         # the right length, a character outside base64url
    "a" * 4000,                             # oversized
    "%00%0d%0aSet-Cookie:%20x=y" + "a" * 10,
    "\u00e9" * 22,
])
def test_a_malformed_device_cookie_is_ignored(ctx, mailbox, bad):
    user = make_user()
    assert login(ctx.test_client()).status_code == 302  # a first device: nothing to compare
    http = ctx.test_client()
    http.set_cookie("idp_device", bad)
    done = login(http)
    assert done.status_code == 302 and done.headers["Location"] == "/account"
    fresh = _device_set(done)
    assert fresh and fresh != bad and DEVICE_ID.fullmatch(fresh)
    assert http.get_cookie("idp_device").value == fresh
    assert _alert_reasons() == [["new_device"]]
    assert len(mailbox.to(user.email)) == 1
    stored = db.session.execute(select(SsoSession.device_hash).where(
        SsoSession.user_id == user.id).order_by(SsoSession.created_at.desc())).scalars().first()
    assert stored == hashlib.sha256(fresh.encode()).hexdigest()
    # the fresh cookie is this browser's device from now on
    assert login(http).status_code == 302
    assert _alert_reasons() == [["new_device"]]


def _rows(table: str) -> str:
    return repr(db.session.execute(text(f"SELECT * FROM {table}")).all())  # noqa: S608


def test_only_the_hash_is_stored(ctx, mailbox):
    make_user()
    laptop, other = ctx.test_client(), ctx.test_client()
    assert login(laptop).status_code == 302
    assert login(other).status_code == 302  # a new device: an alert and its audit event
    assert login(laptop).status_code == 302
    raws = [laptop.get_cookie("idp_device").value, other.get_cookie("idp_device").value]
    for raw in raws:
        register_secret("device cookie", raw)
    hashes = [hashlib.sha256(raw.encode()).hexdigest() for raw in raws]
    stored = db.session.execute(select(SsoSession.device_hash).order_by(
        SsoSession.created_at)).scalars().all()
    assert stored == [hashes[0], hashes[1], hashes[0]]
    assert db.session.execute(select(SecurityAlert)).scalars().all()  # something to search
    for table in ("sso_sessions", "audit_events", "security_alerts"):
        dump = _rows(table)
        for raw in raws:
            assert raw not in dump, f"the raw device id is in {table}"
    for table in ("audit_events", "security_alerts"):  # nor its hash: an audit names no device
        dump = _rows(table)
        assert not any(h in dump for h in hashes), table
    for mail in mailbox.messages:
        assert not any(raw in mailbox.body(mail) or h in mailbox.body(mail)
                       for raw, h in zip(raws, hashes, strict=True))
