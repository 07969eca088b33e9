"""Admin console: who may enter (role, aal2, recent sign-in), CSRF on every POST, clients
(create, edit, validation, rotate, disable, delete), users (search and each action), the audit
viewer's filters and its JSON Lines export, re-hashed as `idp audit verify` does."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from idp import clock
from idp.accounts.models import User
from idp.admin import service as admin_service
from idp.audit import service as audit
from idp.audit.models import AuditEvent
from idp.context import policy
from idp.core.crypto import digest
from idp.extensions import db
from idp.mfa.models import Factor
from idp.oidc.models import Client, RefreshToken
from idp.sessions.models import SsoSession
from tests.helpers import csrf_from, login, make_client, make_user

# (method, path) of every console route; {c} a client id, {u} a user id, {s} a session id
ROUTES = [
    ("GET", "/admin/"), ("GET", "/admin/clients"), ("GET", "/admin/clients/new"),
    ("POST", "/admin/clients/new"), ("GET", "/admin/clients/{c}"), ("POST", "/admin/clients/{c}"),
    ("POST", "/admin/clients/{c}/rotate-secret"), ("POST", "/admin/clients/{c}/disable"),
    ("POST", "/admin/clients/{c}/enable"), ("POST", "/admin/clients/{c}/delete"),
    ("POST", "/admin/clients/{c}/approve"), ("POST", "/admin/clients/{c}/reject"),
    ("POST", "/admin/registration-tokens"),
    ("GET", "/admin/users"), ("GET", "/admin/users/{u}"), ("POST", "/admin/users/{u}/unlock"),
    ("POST", "/admin/users/{u}/disable"), ("POST", "/admin/users/{u}/enable"),
    ("POST", "/admin/users/{u}/reset-mfa"), ("POST", "/admin/users/{u}/send-reset"),
    ("POST", "/admin/users/{u}/role"),
    ("POST", "/admin/users/{u}/sessions/{s}/end"), ("POST", "/admin/users/{u}/sessions/end-all"),
    ("GET", "/admin/audit"), ("GET", "/admin/audit/export.jsonl"), ("GET", "/admin/alerts"),
    ("POST", "/admin/alerts/1/state"), ("GET", "/admin/sms-outbox"),
]


def _admin(http, username: str = "root.admin", role: str = "admin"):
    user = make_user(username, npi=None, role=role, given_name="Ada", family_name="Root")
    assert login(http, username).status_code == 302
    return user


def _token(http, path: str = "/admin/clients") -> str:
    page = http.get(path)
    assert page.status_code == 200, page.status_code
    return csrf_from(page.text)


def _fill(path: str, client_id: str, user_id: int, sid: str) -> str:
    return path.format(c=client_id, u=user_id, s=sid)


def test_every_route_refuses_a_clinician(ctx, client):
    rp = make_client()
    doc = make_user()
    login(client)
    sid = db.session.execute(select(SsoSession.id)).scalar()
    token = csrf_from(client.get("/account/password").text)  # valid: the role refuses
    for method, path in ROUTES:
        response = client.open(_fill(path, rp.client_id, doc.id, sid), method=method,
                               data={"csrf_token": token} if method == "POST" else None)
        assert response.status_code == 403, (method, path, response.status_code)


def test_every_route_sends_an_anonymous_visitor_to_sign_in(ctx, client):
    rp = make_client()
    doc = make_user()
    for method, path in ROUTES:
        if method == "POST":
            continue  # CSRF refuses anonymous POSTs first (400), tested below
        response = client.get(_fill(path, rp.client_id, doc.id, "x"))
        assert response.status_code == 302 and "/login" in response.headers["Location"], path


def test_a_stale_sign_in_is_asked_to_sign_in_again(ctx, client, frozen):
    rp = make_client()
    admin = _admin(client)
    sid = db.session.execute(select(SsoSession.id)).scalar()
    token = _token(client)
    frozen.advance(policy().mfa.reauth_window + 5)
    for method, path in ROUTES:
        response = client.open(_fill(path, rp.client_id, admin.id, sid), method=method,
                               data={"csrf_token": token})
        assert response.status_code == 302, (method, path, response.status_code)
        assert "reauth=1" in response.headers["Location"], path
    assert db.session.get(Client, db.session.execute(select(Client.id)).scalar()).disabled \
        is False


def test_a_password_only_session_is_refused(ctx, client):
    make_user("weak.admin", npi=None, role="admin", totp=False)
    from idp.accounts.service import find_by_login
    from idp.sessions import service as sessions

    with client.application.test_request_context("/"):
        sessions.start(find_by_login("weak.admin"), acr="urn:healthidp:acr:aal1", amr=["pwd"])
        from flask import g

        cookie = g.sso_cookie
        db.session.commit()
    client.set_cookie(policy().session.cookie_name, cookie)
    assert client.get("/admin/").status_code == 403


def test_security_and_verifier_roles(ctx, client):
    doc = make_user()
    _admin(client, "sec.officer", role="security")
    assert client.get("/admin/audit").status_code == 200
    assert client.get(f"/admin/users/{doc.id}").status_code == 200
    assert client.get("/admin/clients").status_code == 403
    token = _token(client, f"/admin/users/{doc.id}")
    assert client.post(f"/admin/users/{doc.id}/disable",
                       data={"csrf_token": token}).status_code == 403
    assert client.post(f"/admin/users/{doc.id}/sessions/end-all",
                       data={"csrf_token": token}).status_code == 302
    client.get("/logout")
    verifier = make_user("ver.ifier", npi=None, role="verifier")
    other = client.application.test_client()
    login(other, verifier.username)
    assert other.get("/admin/").status_code == 200
    assert other.get("/admin/audit").status_code == 403


def test_the_console_role_groups_and_minimum_acr_are_policy(ctx, client, monkeypatch):
    """roles.toml [console]: a role left out of a group loses its pages at the next request;
    a lower min_acr lets a password-only administrator in."""
    import dataclasses

    from idp.context import runtime

    rt = runtime()
    _admin(client, "sec.officer", role="security")
    assert client.get("/admin/audit").status_code == 200
    assert client.get("/admin/").status_code == 200
    narrow = dataclasses.replace(rt.policy.console, security_roles=("admin",),
                                 console_roles=("admin", "verifier"))
    monkeypatch.setattr(rt, "policy", dataclasses.replace(rt.policy, console=narrow))
    assert client.get("/admin/audit").status_code == 403
    assert client.get("/admin/").status_code == 403
    wide = dataclasses.replace(rt.policy.console, admin_roles=("admin", "security"))
    monkeypatch.setattr(rt, "policy", dataclasses.replace(rt.policy, console=wide))
    assert client.get("/admin/clients").status_code == 200

    make_user("weak.admin", npi=None, role="admin", totp=False)
    from idp.accounts.service import find_by_login
    from idp.sessions import service as sessions

    weak = client.application.test_client()
    with client.application.test_request_context("/"):
        sessions.start(find_by_login("weak.admin"), acr="urn:healthidp:acr:aal1", amr=["pwd"])
        from flask import g

        cookie = g.sso_cookie
        db.session.commit()
    weak.set_cookie(policy().session.cookie_name, cookie)
    assert weak.get("/admin/").status_code == 403
    lenient = dataclasses.replace(rt.policy.console, min_acr="urn:healthidp:acr:aal1")
    monkeypatch.setattr(rt, "policy", dataclasses.replace(rt.policy, console=lenient))
    assert weak.get("/admin/").status_code == 200


def test_posts_need_the_csrf_token(ctx, client):
    rp = make_client()
    doc = make_user()
    _admin(client)
    for path in (f"/admin/clients/{rp.client_id}/disable", f"/admin/users/{doc.id}/disable",
                 "/admin/clients/new"):
        assert client.post(path, data={"client_name": "x"}).status_code == 400, path
    assert not db.session.get(User, doc.id).disabled
    assert not db.session.execute(select(Client.disabled)).scalar()


# -- clients -------------------------------------------------------------------------------
def _client_form(token: str, **over) -> dict:
    data = {"csrf_token": token, "client_name": "Radiology viewer",
            "redirect_uris": "https://rad.example/cb\nhttp://127.0.0.1:9000/cb",
            "post_logout_redirect_uris": "https://rad.example/bye",
            "backchannel_logout_uri": "https://rad.example/bcl",
            "grant_types": ["authorization_code", "refresh_token"],
            "scope": "openid profile email", "token_endpoint_auth_method": "client_secret_basic",
            "require_pkce": "y"}
    data.update(over)
    return {k: v for k, v in data.items() if v is not None}


def test_admin_registers_a_client_and_sees_the_secret_once(ctx, client):
    _admin(client)
    token = _token(client, "/admin/clients/new")
    page = client.post("/admin/clients/new", data=_client_form(token))
    assert page.status_code == 200
    client_id = re.search(r'id="client-id">([^<]+)<', page.text).group(1)
    secret = re.search(r'id="client-secret">([^<]+)<', page.text).group(1)
    row = db.session.execute(select(Client).where(Client.client_id == client_id)).scalar_one()
    assert row.client_secret_hash == digest(secret) and secret not in str(row.__dict__)
    assert row.redirect_uris == ["https://rad.example/cb", "http://127.0.0.1:9000/cb"]
    assert row.post_logout_redirect_uris == ["https://rad.example/bye"]
    assert row.backchannel_logout_uri == "https://rad.example/bcl"
    assert row.require_pkce and not row.first_party
    event = db.session.execute(select(AuditEvent).where(
        AuditEvent.event == "client.created")).scalar_one()
    assert event.actor.startswith("admin:") and event.client_id == client_id
    assert secret not in client.get(f"/admin/clients/{client_id}").text


@pytest.mark.parametrize(("field", "value", "message"), [
    ("redirect_uris", "http://rad.example/cb", "must use https"),
    ("redirect_uris", "https://rad.example/cb#frag", "fragment"),
    ("redirect_uris", "https://*.rad.example/cb", "wildcard"),
    ("redirect_uris", "https://user@rad.example/cb", "user information"),
    ("redirect_uris", "", "at least one"),
    ("post_logout_redirect_uris", "http://rad.example/bye", "must use https"),
    ("backchannel_logout_uri", "https://rad.example/bcl#x", "fragment"),
    ("scope", "openid ehr.everything", "unknown"),
    ("grant_types", "implicit", "is not a valid choice"),
    ("token_endpoint_auth_method", "none", "public client cannot use client_credentials"),
])
def test_client_validation_rules(ctx, client, field, value, message):
    _admin(client)
    token = _token(client, "/admin/clients/new")
    data = _client_form(token, **{field: value})
    if field == "token_endpoint_auth_method":
        data["grant_types"] = ["client_credentials"]
    page = client.post("/admin/clients/new", data=data)
    assert page.status_code == 400 and message in page.text, page.text
    assert db.session.execute(select(Client)).first() is None


def test_admin_edits_a_client(ctx, client):
    rp = make_client()
    _admin(client)
    token = _token(client, f"/admin/clients/{rp.client_id}")
    response = client.post(f"/admin/clients/{rp.client_id}", data=_client_form(
        token, client_name="Renamed", redirect_uris="https://new.example/cb",
        scope="openid email", first_party="y", require_pkce=None))
    assert response.status_code == 302
    row = db.session.execute(select(Client).where(Client.client_id == rp.client_id)).scalar_one()
    db.session.refresh(row)
    assert row.client_name == "Renamed" and row.redirect_uris == ["https://new.example/cb"]
    assert row.scope == "openid email" and row.first_party and not row.require_pkce
    assert row.client_secret_hash == digest(rp.client_secret)  # secret unchanged
    bad = client.post(f"/admin/clients/{rp.client_id}", data=_client_form(
        token, redirect_uris="https://new.example/cb#x"))
    assert bad.status_code == 400
    db.session.refresh(row)
    assert row.redirect_uris == ["https://new.example/cb"]
    event = db.session.execute(select(AuditEvent).where(
        AuditEvent.event == "client.updated")).scalar_one()
    assert event.actor.startswith("admin:") and event.detail["before"]["scope"]


def test_switching_to_public_drops_the_secret(ctx, client):
    rp = make_client()
    _admin(client)
    token = _token(client, f"/admin/clients/{rp.client_id}")
    client.post(f"/admin/clients/{rp.client_id}", data=_client_form(
        token, token_endpoint_auth_method="none"))
    row = db.session.execute(select(Client).where(Client.client_id == rp.client_id)).scalar_one()
    db.session.refresh(row)
    assert row.client_secret_hash is None and row.is_public and row.require_pkce


def _basic(client_id: str, secret: str) -> dict:
    import base64

    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def test_rotate_secret(ctx, client):
    rp = make_client(grant_types=["client_credentials"], scope="openid")
    _admin(client)
    grant = {"grant_type": "client_credentials", "scope": "openid"}
    assert client.post("/token", data=grant, headers=_basic(rp.client_id, rp.client_secret)
                       ).status_code == 200
    token = _token(client)
    page = client.post(f"/admin/clients/{rp.client_id}/rotate-secret",
                       data={"csrf_token": token})
    secret = re.search(r'id="client-secret">([^<]+)<', page.text).group(1)
    assert secret != rp.client_secret
    assert client.post("/token", data=grant, headers=_basic(rp.client_id, rp.client_secret)
                       ).status_code == 401
    assert client.post("/token", data=grant, headers=_basic(rp.client_id, secret)
                       ).status_code == 200
    assert db.session.execute(select(AuditEvent).where(
        AuditEvent.event == "client.secret_rotated")).scalar_one().actor.startswith("admin:")


def test_disable_enable_and_delete(ctx, client):
    rp = make_client(grant_types=["client_credentials"], scope="openid")
    doc = make_user("doc2", npi=None)
    db.session.add(RefreshToken(token_hash="h" * 64, family_id="f", client_id=rp.client_id,
                                user_id=doc.id, scope="openid", auth_time=clock.now(),
                                issued_at=clock.now(), expires_at=clock.now()))
    db.session.commit()
    _admin(client)
    token = _token(client)
    grant = {"grant_type": "client_credentials", "scope": "openid"}
    client.post(f"/admin/clients/{rp.client_id}/disable", data={"csrf_token": token})
    assert client.post("/token", data=grant, headers=_basic(rp.client_id, rp.client_secret)
                       ).status_code == 401
    assert db.session.execute(select(RefreshToken.revoked_at)).scalar() is not None
    client.post(f"/admin/clients/{rp.client_id}/enable", data={"csrf_token": token})
    assert client.post("/token", data=grant, headers=_basic(rp.client_id, rp.client_secret)
                       ).status_code == 200
    assert client.post(f"/admin/clients/{rp.client_id}/delete",
                       data={"csrf_token": token}).status_code == 302
    assert db.session.execute(select(Client)).first() is None
    assert client.get(f"/admin/clients/{rp.client_id}").status_code == 404
    events = [e.event for e in db.session.execute(select(AuditEvent).where(
        AuditEvent.actor.like("admin:%"))).scalars()]
    assert {"client.disabled", "client.enabled", "client.deleted"} <= set(events)


# -- users ---------------------------------------------------------------------------------
def test_user_search_by_name_username_npi_email(ctx, client):
    make_user("drsmith", npi="1234567893", given_name="Ana", family_name="Smith")
    make_user("nurse.jo", npi=None, role="nurse_practitioner", given_name="Jo",
              family_name="Okafor")
    _admin(client)
    for query, expect in (("ana smith", "drsmith"), ("NURSE.J", "nurse.jo"),
                          ("1234567893", "drsmith"), ("nurse.jo@hospital", "nurse.jo"),
                          ("okafor", "nurse.jo")):
        page = client.get("/admin/users", query_string={"q": query})
        assert page.status_code == 200 and f">{expect}</a>" in page.text, query
    assert "No account matches" in client.get("/admin/users?q=nobody%25").text


def test_user_page_shows_factors_sessions_and_logins(ctx, client):
    doc = make_user()
    other = client.application.test_client()
    login(other)
    _admin(client)
    page = client.get(f"/admin/users/{doc.id}")
    assert "Test app (totp)" in page.text
    sid = db.session.execute(select(SsoSession.id).where(SsoSession.user_id == doc.id)).scalar()
    assert f'data-sid="{sid}"' in page.text
    assert "login.success" in page.text


def _action(http, user, name: str) -> None:
    token = _token(http)
    response = http.post(f"/admin/users/{user.id}/{name}", data={"csrf_token": token})
    assert response.status_code == 302, (name, response.status_code)


def _last(event: str) -> AuditEvent:
    return db.session.execute(select(AuditEvent).where(AuditEvent.event == event)
                              .order_by(AuditEvent.seq.desc())).scalars().first()


def test_unlock_disable_enable(ctx, client):
    doc = make_user()
    doc.failed_logins, doc.locked_until = 5, clock.now().replace(year=2099)
    db.session.commit()
    other = client.application.test_client()
    admin = _admin(client)
    _action(client, doc, "unlock")
    db.session.refresh(doc)
    assert doc.locked_until is None and doc.failed_logins == 0
    assert _last("user.unlocked").actor == f"admin:{admin.id}"
    login(other)
    assert other.get("/account").status_code == 200
    _action(client, doc, "disable")
    db.session.refresh(doc)
    assert doc.disabled and other.get("/account").status_code == 302
    assert _last("user.disabled").actor == f"admin:{admin.id}"
    _action(client, doc, "enable")
    db.session.refresh(doc)
    assert not doc.disabled and _last("user.enabled").actor == f"admin:{admin.id}"


def test_admin_cannot_disable_themself(ctx, client):
    admin = _admin(client)
    _action(client, admin, "disable")
    db.session.refresh(admin)
    assert not admin.disabled


def test_reset_mfa_forces_enrollment(ctx, client):
    doc = make_user()
    other = client.application.test_client()
    login(other)
    admin = _admin(client)
    _action(client, doc, "reset-mfa")
    assert db.session.execute(select(Factor).where(Factor.user_id == doc.id)).first() is None
    assert other.get("/account").status_code == 302  # signed out
    assert _last("mfa.reset").actor == f"admin:{admin.id}"
    again = login(other, mfa=False)
    assert again.status_code == 302
    challenge = other.get(again.headers["Location"])
    assert challenge.status_code == 302 and "/mfa/enroll" in challenge.headers["Location"]


def test_send_password_reset(ctx, client, mailbox):
    doc = make_user()
    admin = _admin(client)
    _action(client, doc, "send-reset")
    [mail] = mailbox.to(doc.email)
    assert "/password/reset/" in mailbox.body(mail)
    assert _last("password.reset_link_sent").actor == f"admin:{admin.id}"


def test_terminate_one_session_and_all(ctx, client):
    doc = make_user()
    first, second = client.application.test_client(), client.application.test_client()
    login(first)
    login(second)
    admin = _admin(client)
    sids = db.session.execute(select(SsoSession.id).where(SsoSession.user_id == doc.id)
                              .order_by(SsoSession.created_at)).scalars().all()
    token = _token(client)
    client.post(f"/admin/users/{doc.id}/sessions/{sids[0]}/end", data={"csrf_token": token})
    assert first.get("/account").status_code == 302
    assert second.get("/account").status_code == 200
    assert _last("session.ended").actor == f"admin:{admin.id}"
    client.post(f"/admin/users/{doc.id}/sessions/end-all", data={"csrf_token": token})
    assert second.get("/account").status_code == 302
    assert _last("sessions.ended_all").actor == f"admin:{admin.id}"
    assert client.get("/admin/").status_code == 200  # the admin's own session is untouched


# -- audit ---------------------------------------------------------------------------------
def _events(ctx) -> None:
    with ctx.test_request_context("/", environ_base={"REMOTE_ADDR": "10.1.2.3"}):
        audit.record("login.failure", user_id=907, reason="password")
        audit.record("token.issued", client_id="ehr", user_id=907)
    with ctx.test_request_context("/", environ_base={"REMOTE_ADDR": "10.9.9.9"}):
        audit.record("login.success", user_id=908)
    db.session.commit()


def test_audit_filters(ctx, client):
    _admin(client)
    _events(ctx)

    def rows(**args) -> list[str]:
        page = client.get("/admin/audit", query_string=args)
        assert page.status_code == 200
        return re.findall(r"<td>(login\.\w+|token\.\w+|client\.\w+|admin\.\w+)</td>", page.text)

    assert rows(user="907") == ["token.issued", "login.failure"]
    assert rows(event="login.failure") == ["login.failure"]
    assert set(rows(event="login.*", ip="10.9.9.9")) == {"login.success"}
    assert rows(client_id="ehr") == ["token.issued"]
    assert "login.success" in rows(user="root.admin")
    assert "login.failure" not in rows(user="root.admin")
    future = clock.now().replace(year=2099).strftime("%Y-%m-%dT%H:%M")
    assert rows(since=future) == []
    assert "login.failure" in rows(until=future)
    bad = client.get("/admin/audit", query_string={"since": "yesterday"})
    assert bad.status_code == 400 and "since" in bad.text


def test_jsonl_export_rehashes(ctx, client):
    _admin(client)
    _events(ctx)
    response = client.get("/admin/audit/export.jsonl")
    assert response.status_code == 200 and response.mimetype == "application/jsonl"
    lines = response.text.splitlines()
    assert all({"seq", "prev_hash", "hash", "detail"} <= set(__import__("json").loads(x))
               for x in lines)
    intact, count, broken = admin_service.verify_lines(lines)
    assert intact and count == len(lines) and broken is None
    assert audit.verify()[0]
    assert _last("admin.audit_exported") is not None
    # a filtered export verifies line by line too
    part = client.get("/admin/audit/export.jsonl", query_string={"user": "907"}).text.splitlines()
    assert len(part) == 2 and admin_service.verify_lines(part)[0]
    # a tampered line is caught at its seq
    import json

    row = json.loads(lines[1])
    row["ip"] = "192.0.2.1"
    tampered = [lines[0], json.dumps(row), *lines[2:]]
    assert admin_service.verify_lines(tampered) == (False, 1, row["seq"])
    # and a dropped line breaks the link
    assert admin_service.verify_lines([lines[0], lines[2]])[0] is True  # a gap, not a link
    relinked = json.loads(lines[2])
    relinked["seq"] = json.loads(lines[0])["seq"] + 1
    relinked["chain_seq"] = json.loads(lines[0])["chain_seq"] + 1
    assert admin_service.verify_lines([lines[0], json.dumps(relinked)])[0] is False


def test_every_admin_action_is_audited_as_the_admin(ctx, client):
    rp = make_client()
    admin = _admin(client)
    token = _token(client)
    client.post(f"/admin/clients/{rp.client_id}/disable", data={"csrf_token": token})
    client.post("/admin/registration-tokens",
                data={"csrf_token": token, "lifetime_hours": "2", "uses": "1"})
    actors = {e.event: e.actor for e in db.session.execute(select(AuditEvent)).scalars()}
    assert actors["client.disabled"] == f"admin:{admin.id}"
    assert actors["registration.token_issued"] == f"admin:{admin.id}"


def test_the_user_page_shows_only_its_own_messages(ctx, client):
    doc = make_user()
    _admin(client)
    page = client.get(f"/admin/users/{doc.id}", query_string={"done": "Call 555-0100 now"})
    assert page.status_code == 200 and "555-0100" not in page.text
    assert "Account unlocked." in client.get(f"/admin/users/{doc.id}?done=unlocked").text


def _tile(page: str, label: str) -> int:
    found = re.search(r'<span class="count">(\d+)</span> ' + re.escape(label), page)
    assert found, label
    return int(found.group(1))


def test_the_dashboard_counts_what_waits(ctx, client):
    """The console's start page: counts linking to the lists they count; each role sees only
    the tiles of the pages it may open."""
    from datetime import timedelta

    from idp.security.alerts import raise_alert

    locked = make_user("locked.one", npi=None)
    locked.locked_until = clock.now() + timedelta(minutes=20)
    make_user("was.locked", npi=None).locked_until = clock.now() - timedelta(minutes=1)
    raise_alert("repeated_lockouts", user_id=locked.id, detail={"lockouts": 3, "window": 86400})
    rp = make_client()
    row = db.session.execute(select(Client).where(Client.client_id == rp.client_id)).scalar_one()
    row.pending_scope, row.pending_since = "patient/*.read", clock.now()
    db.session.commit()
    _admin(client)
    page = client.get("/admin/").text
    assert _tile(page, "Locked accounts") == 1
    assert _tile(page, "New security alerts") == 1
    assert _tile(page, "Client requests waiting for approval") == 1
    assert _tile(page, "Active sessions") == 1  # the admin's own
    assert _tile(page, "Provider applications waiting") == 0
    assert 'href="/admin/users?locked=1"' in page and 'href="/admin/alerts?state=new"' in page
    listed = client.get("/admin/users?locked=1").text
    assert ">locked.one</a>" in listed and ">was.locked</a>" not in listed
    client.get("/logout")
    other = client.application.test_client()
    _admin(other, "sec.officer", role="security")
    page = other.get("/admin/").text
    assert _tile(page, "Locked accounts") == 1
    assert "Client requests waiting" not in page and "/admin/clients" not in page


def test_users_are_listed_page_by_page(ctx, client, monkeypatch):
    monkeypatch.setattr(admin_service, "SEARCH_LIMIT", 2)
    for n in range(4):
        make_user(f"user.{n}", npi=None)
    _admin(client)  # a fifth account
    first = client.get("/admin/users").text
    assert "5 accounts" in first and "page 1 of 3" in first
    assert ">root.admin</a>" in first and ">user.0</a>" in first and ">user.1</a>" not in first
    assert 'href="/admin/users?page=2" rel="next"' in first
    last = client.get("/admin/users?page=3").text
    assert ">user.3</a>" in last and 'rel="prev"' in last and 'rel="next"' not in last
    found = client.get("/admin/users?q=user.&page=2").text
    assert ">user.2</a>" in found and ">user.3</a>" in found and "4 accounts" in found
    assert client.get("/admin/users?page=99999999").status_code == 200  # past the end: empty
