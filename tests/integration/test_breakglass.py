"""Break-glass emergency access at the IdP: the request page, the fresh sign-in, the tokens'
purpose_of_use and emergency entitlement, the security email over real SMTP, the expiry that
leaves the session alone, the privacy officer's review and the escalation of overdue ones."""

from __future__ import annotations

import re
from urllib.parse import urlencode, urlsplit

from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import select

from idp.audit.models import AuditEvent
from idp.breakglass import service
from idp.breakglass.models import BreakglassEpisode
from idp.extensions import db
from idp.security.models import SecurityAlert
from tests.helpers import (
    PASSWORD,
    auth_params,
    basic,
    csrf_from,
    exchange,
    login,
    make_client,
    make_user,
    pass_totp,
    pkce,
    query,
)

SCOPE = "openid roles offline_access ehr.patients.read emergency_access"
WHY = "Unconscious patient in the ED, her clinician cannot be reached tonight."


def _claims(http, token: str) -> dict:
    keys = KeySet.import_key_set(http.get("/jwks.json").get_json())
    return jwt.decode(token, keys, algorithms=["RS256", "ES256"]).claims


def _people():
    clinician = make_user()
    make_user("sec.officer", role="security", npi=None)
    make_user("pat.privacy", role="privacy_officer", npi=None)
    rp = make_client(scope=SCOPE, name="EHR")
    return clinician, rp


def _authorize(http, rp, **extra):
    verifier, challenge = pkce()
    params = auth_params(rp, challenge, scope=SCOPE, **extra)
    return http.get("/authorize?" + urlencode(params)), params, verifier


def _request_page(http, rp):
    response, params, verifier = _authorize(http, rp)
    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    assert re.fullmatch(r"/breakglass/[A-Za-z0-9_-]+", urlsplit(location).path), location
    return location, params, verifier


def _break_glass(http, rp, reason="unconscious_patient", justification=WHY):
    """The whole request: page, reason + justification + password, second factor, code."""
    location, params, verifier = _request_page(http, rp)
    page = http.get(location)
    assert page.status_code == 200 and "Emergency access (break the glass)" in page.text
    answer = http.post(location, data={"reason": reason, "justification": justification,
                                       "password": PASSWORD,
                                       "csrf_token": csrf_from(page.text)})
    assert answer.status_code == 302 and answer.headers["Location"] == "/mfa/challenge"
    done = pass_totp(http, "drsmith")
    assert done.status_code == 302
    back = http.get(done.headers["Location"])   # the authorization request again
    assert back.status_code == 302, back.text
    got = query(back.headers["Location"])
    assert got["state"] == params["state"] and "code" in got
    tokens = exchange(http, rp, got["code"], verifier)
    assert tokens.status_code == 200, tokens.text
    return tokens.get_json()


def test_break_glass_end_to_end(ctx, client, mailbox, frozen):
    _, rp = _people()
    assert login(client).status_code == 302
    started = int(service.clock.now().timestamp())
    tokens = _break_glass(client, rp)
    access = _claims(client, tokens["access_token"])
    assert access["purpose_of_use"] == ["ETREAT", "BTG"]
    assert access["emergency"]["reason"] == "unconscious_patient"
    assert started + 3600 <= access["emergency"]["exp"] <= started + 3600 + 60
    ident = _claims(client, tokens["id_token"])
    assert ident["emergency"]["exp"] == access["emergency"]["exp"]
    assert "mfa" in ident["amr"]
    # security staff: an email over real SMTP and a console alert; the audit trail
    mails = mailbox.to("sec.officer@hospital.example")
    assert len(mails) == 1 and "Break-glass emergency access by drsmith" in mails[0]["Subject"]
    assert WHY in mailbox.body(mails[0])
    assert db.session.execute(select(SecurityAlert.kind)).scalars().all() == ["breakglass"]
    events = db.session.execute(select(AuditEvent.event).order_by(AuditEvent.seq)
                                ).scalars().all()
    assert events.index("breakglass.requested") < events.index("breakglass.started")
    episode = db.session.execute(select(BreakglassEpisode)).scalar_one()
    assert service.session_marked(episode.sid)
    # expiry: the entitlement ends, the session does not (kept alive meanwhile)
    for _ in range(3):
        frozen.advance(1250)
        assert client.get("/account").status_code == 200
    refreshed = client.post("/token", data={"grant_type": "refresh_token",
                                            "refresh_token": tokens["refresh_token"]},
                            headers=basic(rp))
    assert refreshed.status_code == 200, refreshed.text
    after = _claims(client, refreshed.get_json()["access_token"])
    assert "emergency" not in after and "purpose_of_use" not in after
    assert client.get("/account").status_code == 200   # still signed in
    assert service.sweep().ended == 1
    assert db.session.execute(select(AuditEvent).where(
        AuditEvent.event == "breakglass.ended")).scalar_one().detail["episode"] == episode.id


def test_privacy_officer_reviews_and_overdue_reviews_escalate(ctx, app, client, mailbox,
                                                             frozen):
    _, rp = _people()
    login(client)
    _break_glass(client, rp)
    _break_glass(client, rp, reason="emergency_treatment")
    officer = app.test_client()
    assert login(officer, "pat.privacy").status_code == 302
    queue = officer.get("/admin/breakglass")
    assert queue.status_code == 200 and queue.text.count('class="episode"') == 2
    first, second = service.queue()
    done = officer.post(f"/admin/breakglass/{first.id}/review", data={
        "outcome": "appropriate", "note": "Checked with the ED attending.",
        "csrf_token": csrf_from(queue.text)})
    assert done.status_code == 200 and "Reviewed." in done.text
    again = officer.post(f"/admin/breakglass/{first.id}/review", data={
        "outcome": "inappropriate", "note": "x", "csrf_token": csrf_from(queue.text)})
    assert again.status_code == 400 and "reviewed already" in again.text
    # the clinician cannot open the queue, nor review her own episode through the service
    assert client.get("/admin/breakglass").status_code == 403
    clinician = db.session.execute(select(BreakglassEpisode)).scalars().first().user_id
    from idp.accounts.models import User

    me = db.session.get(User, clinician)
    try:
        service.review(second.id, me, "appropriate", "mine")
        raise AssertionError("a clinician reviewed")
    except service.BreakglassError as exc:
        assert "privacy officer" in str(exc)
    # overdue: escalated once, security staff emailed
    mailbox.messages.clear()
    frozen.advance(service.rules().review_within + 60)
    assert service.sweep().escalated == 1
    assert service.sweep().escalated == 0
    mails = mailbox.to("sec.officer@hospital.example")
    assert len(mails) == 1 and "overdue" in mails[0]["Subject"]
    rows = {r["episode"]: r for r in service.report()}
    assert rows[first.id]["reviewer"] == "pat.privacy" and \
        rows[first.id]["outcome"] == "appropriate"
    assert rows[second.id]["overdue"] and rows[second.id]["escalated"]


def test_refusals_change_nothing(ctx, app, client, mailbox):
    _, rp = _people()
    make_user("clerk", role="admin_staff", npi=None)
    clerk = app.test_client()
    login(clerk, "clerk")
    response, params, _ = _authorize(clerk, rp)
    got = query(response.headers["Location"])
    assert got["error"] == "access_denied" and "role" in got["error_description"]
    login(client)
    silent, _, _ = _authorize(client, rp, prompt="none")
    assert query(silent.headers["Location"])["error"] == "interaction_required"
    location, _, _ = _request_page(client, rp)
    page = client.get(location)
    short = client.post(location, data={"reason": "unconscious_patient", "justification": "x",
                                        "password": PASSWORD,
                                        "csrf_token": csrf_from(page.text)})
    assert short.status_code == 400 and "at least 20 characters" in short.text
    bogus = client.post(location, data={"reason": "curiosity", "justification": WHY,
                                        "password": PASSWORD,
                                        "csrf_token": csrf_from(page.text)})
    assert bogus.status_code == 400 and "Choose the reason" in bogus.text
    wrong = client.post(location, data={"reason": "unconscious_patient", "justification": WHY,
                                        "password": "not-the-password-1A!",
                                        "csrf_token": csrf_from(page.text)})
    assert wrong.status_code == 401
    no_csrf = client.post(location, data={"reason": "unconscious_patient",
                                          "justification": WHY, "password": "x"})
    assert no_csrf.status_code == 400
    assert clerk.get(location).status_code == 410       # another user's request
    assert client.get("/breakglass/" + "A" * 300).status_code == 410
    assert db.session.execute(select(BreakglassEpisode).where(
        BreakglassEpisode.verified_at.is_not(None))).first() is None
    assert mailbox.to("sec.officer@hospital.example") == []


def test_switched_off_in_policy_leaves_no_trace(app, env, ctx):
    from idp import create_app
    from idp.config import Settings
    from tests.conftest import TEST_POLICY

    off = create_app(Settings.from_env(env),
                     policy_overrides={**TEST_POLICY, "breakglass": {"enabled": False}})
    rules = {r.rule for r in off.url_map.iter_rules()}
    assert not {r for r in rules if "breakglass" in r}
    assert {r for r in {x.rule for x in app.url_map.iter_rules()} if "breakglass" in r}
    on = app.test_client().get("/.well-known/openid-configuration").get_json()
    gone = off.test_client().get("/.well-known/openid-configuration").get_json()
    assert "emergency_access" in on["scopes_supported"]
    assert "emergency_access" not in gone["scopes_supported"]


def test_sweep_and_report_commands(ctx, client, env):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    _, rp = _people()
    login(client)
    _break_glass(client, rp)
    idp = str(Path(sys.executable).parent / "idp")
    run = lambda *args: subprocess.run([idp, "breakglass", *args, "--json"],  # noqa: E731
                                       env={**os.environ, **env}, capture_output=True,
                                       text=True, timeout=60)
    swept = run("sweep")
    assert swept.returncode == 0, swept.stderr
    assert json.loads(swept.stdout) == {"ended": 0, "escalated": 0}   # still running
    rows = json.loads(run("report").stdout)
    assert [(r["user"], r["reason"], r["outcome"], r["overdue"]) for r in rows] == \
        [("drsmith", "unconscious_patient", None, False)]
