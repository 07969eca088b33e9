"""Active Directory / LDAP user federation against a real OpenLDAP slapd (tests/ldap_server.py):
sign-in with the directory password, our lockout in front of the directory (binds counted at
the server), sync disabling a removed user and ending their sessions, and the attacks."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import select

from idp.accounts.models import User
from idp.audit.models import AuditEvent
from idp.extensions import db
from idp.federation.ldap import service
from idp.federation.ldap.models import LdapLink
from idp.sessions.models import SsoSession
from tests.helpers import csrf_from, enroll_totp, login
from tests.ldap_server import PASSWORD, SERVICE_DN, user_dn


def _events(name: str) -> list[AuditEvent]:
    return list(db.session.execute(select(AuditEvent).where(AuditEvent.event == name)
                                   ).scalars())


def _user(username: str) -> User:
    found = db.session.execute(select(User).where(User.username == username)).scalar_one()
    db.session.refresh(found)
    return found


def _synced() -> service.SyncReport:
    report = service.sync()
    db.session.commit()
    return report


def _post_login(http, username: str, password: str):
    page = http.get("/login")
    return http.post("/login", data={"username": username, "password": password,
                                     "csrf_token": csrf_from(page.text), "next": "/account"})


# -- (1) sign in with the directory password ----------------------------------------------
def test_sign_in_with_directory_password_and_second_factor(lctx, lclient, slapd):
    report = _synced()
    assert report.created == 4 and report.disabled == 0  # ddisabled not imported
    user = _user("ajones")
    assert user.password_hash is None  # the password is never stored here
    enroll_totp(user)
    db.session.commit()
    done = login(lclient, "ajones", PASSWORD)
    assert done.status_code == 302 and done.headers["Location"] == "/account"
    assert slapd.binds(user_dn("ajones")) == 1
    assert _events("login.password_verified")
    account = lclient.get("/account")  # signed in: the page, or a gate (acknowledgment)
    assert account.status_code == 200 or "/login" not in account.headers["Location"]


def test_first_sign_in_imports_the_directory_user(lctx, lclient, slapd):
    response = _post_login(lclient, "bnguyen", PASSWORD)
    assert response.status_code == 302 and "/mfa/" in response.headers["Location"]
    user = _user("bnguyen")
    link = db.session.execute(select(LdapLink).where(LdapLink.user_id == user.id)).scalar_one()
    assert link.dn == user_dn("bnguyen") and link.directory_role == "physician"
    # In the Physicians group, but no verified NPI and license: a non-clinical role for now.
    assert user.role == "admin_staff"
    assert _events("ldap.account_imported") and _events("ldap.clinician_pending")


def test_wrong_directory_password_fails_and_no_local_fallback(lctx, lclient, slapd):
    _synced()
    user = _user("ajones")
    # Even a local hash planted on a directory account is never consulted.
    from idp.accounts import passwords

    passwords.set_password(user, "Local-Stale-Pass-2020!")
    db.session.commit()
    assert _post_login(lclient, "ajones", "Local-Stale-Pass-2020!").status_code == 401
    assert _post_login(lclient, "ajones", "wrong").status_code == 401
    assert _user("ajones").failed_logins == 2


def test_directory_disabled_and_locked_accounts_cannot_sign_in(lctx, lclient, slapd):
    _synced()
    slapd.modify("ajones", userAccountControl="514")  # ACCOUNTDISABLE set in the directory
    slapd.modify("cclerk", lockoutTime="133000000000000001")  # AD lockout
    for name in ("ajones", "cclerk", "llocked", "ddisabled"):
        response = _post_login(lclient, name, PASSWORD)
        assert response.status_code == 401, name
        assert "cannot sign in" in response.text
    assert slapd.binds(user_dn("ajones")) == 0 and slapd.binds(user_dn("cclerk")) == 0
    states = {e.detail.get("state") for e in _events("ldap.sign_in_refused")}
    assert {"disabled", "locked"} <= states


def test_clinical_role_only_with_verified_credentials(lctx, slapd):
    _synced()
    user = _user("ajones")
    assert user.role == "admin_staff"
    user.npi, user.license_number = "1234567893", "MD12345"
    user.license_expires = date.today() + timedelta(days=365)
    db.session.commit()
    _synced()
    assert _user("ajones").role == "physician"
    assert _user("cclerk").role == "admin_staff"


# -- (2) our lockout in front of the directory --------------------------------------------
def test_lockout_after_five_failures_sends_no_more_binds(lctx, lclient, slapd, ldap_app):
    _synced()
    rules = ldap_app.extensions["idp"].policy
    for attempt in range(rules.lockout.max_failures + 5):
        response = _post_login(lclient, "ajones", f"wrong-{attempt}")
        assert response.status_code in (401, 429)
    user = _user("ajones")
    assert user.locked_until is not None
    # The directory saw exactly as many password binds as our policy allows, not one more,
    # and the right password now is refused without reaching it.
    assert slapd.binds(user_dn("ajones")) == rules.lockout.max_failures
    assert _post_login(lclient, "ajones", PASSWORD).status_code == 401
    assert slapd.binds(user_dn("ajones")) == rules.lockout.max_failures
    assert rules.lockout.max_failures <= rules.ldap.bind_limit
    assert _events("account.locked")


def test_bind_throttle_caps_binds_whatever_our_lockout_says(lctx, lclient, slapd, ldap_app):
    _synced()
    limit = ldap_app.extensions["idp"].policy.ldap.bind_limit
    user = _user("ajones")
    for attempt in range(limit + 3):
        from idp.accounts import lockout

        lockout.unlock(user)  # e.g. a helpdesk unlocking again and again
        db.session.commit()
        _post_login(lclient, "ajones", f"wrong-{attempt}")
    assert slapd.binds(user_dn("ajones")) == limit
    assert _events("ldap.bind_throttled")


# -- (3) sync ------------------------------------------------------------------------------
def test_sync_disables_removed_user_and_ends_sessions(lctx, slapd, ldap_app):
    _synced()
    user = _user("ajones")
    enroll_totp(user)
    db.session.commit()
    browser = ldap_app.test_client()
    assert login(browser, "ajones", PASSWORD).status_code == 302
    assert "/login" not in browser.get("/account").headers.get("Location", "")
    slapd.delete("ajones")
    slapd.modify("cclerk", userAccountControl="514")
    report = _synced()
    assert report.disabled == 2 and report.unchanged >= 1
    assert _user("ajones").disabled and _user("cclerk").disabled
    live = db.session.execute(select(SsoSession).where(
        SsoSession.user_id == user.id, SsoSession.ended_at.is_(None))).scalars().all()
    assert live == []
    assert "/login" in browser.get("/account").headers["Location"]  # signed out
    reasons = {e.detail.get("reason") for e in _events("ldap.account_disabled")}
    assert reasons == {"removed_from_directory", "disabled_in_directory"}
    # Enabled again in the directory: enabled again here; removed stays disabled.
    slapd.modify("cclerk", userAccountControl="512")
    report = _synced()
    assert report.reenabled == 1 and not _user("cclerk").disabled and _user("ajones").disabled


def test_sync_cli_reports_counts_as_json(lctx, slapd, ldap_env, tmp_path):
    """`idp ldap sync --json` as cron runs it: a real process, the policy from a directory."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.ldap_server import ldap_policy_dir

    policies = ldap_policy_dir(tmp_path / "policies")
    idp = str(Path(sys.executable).parent / "idp")
    env = {**os.environ, **ldap_env, "IDP_POLICY_DIR": str(policies)}
    done = subprocess.run([idp, "ldap", "sync", "--json"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["created"] == 4 and report["pending_clinical"] == 3
    assert report["disabled"] == 0 and report["seen"] == 5
    slapd.kill()
    down = subprocess.run([idp, "ldap", "sync", "--json"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert down.returncode == 1
    assert json.loads(down.stdout)["error"] == "temporarily_unavailable"
    assert "Traceback" not in down.stderr


def test_sync_refuses_to_disable_everyone_on_an_empty_answer(lctx, slapd, ldap_app):
    _synced()
    for uid in ("ajones", "bnguyen", "cclerk", "ddisabled", "llocked"):
        slapd.delete(uid)
    with pytest.raises(service.SyncRefused):
        service.sync()
    db.session.rollback()
    assert not _user("ajones").disabled


# -- (4) attacks ---------------------------------------------------------------------------
def test_ldap_injection_in_the_username(lctx, lclient, slapd):
    _synced()
    before = slapd.all_binds()
    for name in ("*)(uid=*", "*", "ajones)(|(sAMAccountName=*", "a*", "ajones\\00"):
        response = _post_login(lclient, name, PASSWORD)
        assert response.status_code == 401, name
        assert response.status_code != 500
    # No entry matched a wildcard: no password reached the directory for anyone.
    assert slapd.all_binds() == before
    assert service.normalise_name("*)(uid=*") is None


def test_empty_password_is_never_an_anonymous_bind(lctx, lclient, slapd):
    _synced()
    user = _user("ajones")
    from idp.accounts import service as accounts

    for empty in ("", " ", "\x00", "   \t"):
        assert accounts.authenticate("ajones", empty).user is None
    assert not accounts.verify_password(user, "")
    assert _post_login(lclient, "ajones", "").status_code == 400
    assert slapd.binds(user_dn("ajones")) == 0


def test_unicode_confusables_are_refused(lctx, lclient, slapd):
    _synced()
    # Cyrillic "а" (U+0430) for Latin "a", a combining mark, a zero-width space: refused
    # before the directory is asked, never matched to ajones.
    for name in ("\u0430jones", "ajones\u0301", "aj\u200bones", "\u0251jones"):
        assert service.normalise_name(name) is None
        response = _post_login(lclient, name, PASSWORD)
        assert response.status_code == 401
    assert slapd.binds(user_dn("ajones")) == 0
    # Full-width letters are the same name (NFKC): the same person, no second account.
    assert service.normalise_name("\uff41\uff4a\uff4f\uff4e\uff45\uff53") == "ajones"
    response = _post_login(lclient, "\uff41\uff4a\uff4f\uff4e\uff45\uff53", PASSWORD)
    assert response.status_code == 302
    assert db.session.execute(select(LdapLink)).scalars().all().__len__() == 4


def test_directory_down_mid_sign_in_gives_a_readable_page(lctx, lclient, slapd):
    _synced()
    page = lclient.get("/login")
    slapd.kill()  # the domain controller goes away between the form and the submit
    response = lclient.post("/login", data={"username": "ajones", "password": PASSWORD,
                                            "csrf_token": csrf_from(page.text),
                                            "next": "/account"})
    assert response.status_code == 503
    assert "cannot be reached" in response.text and "Traceback" not in response.text
    assert response.headers["Retry-After"]
    assert _user("ajones").failed_logins == 0  # nothing counted against the person
    assert _events("login.unavailable")
    # A first sign-in (unknown name) during the outage: the same page, not a 500.
    assert _post_login(lclient, "newperson", PASSWORD).status_code == 503
    # Protocol callers (JSON) get temporarily_unavailable from any password check.
    from idp.accounts import service as accounts
    from idp.accounts.verifiers import PasswordServiceUnavailable

    with pytest.raises(PasswordServiceUnavailable):
        accounts.verify_password(_user("ajones"), PASSWORD)


def test_sync_during_outage_disables_no_one(lctx, slapd):
    _synced()
    slapd.kill()
    from idp.federation.ldap.directory import DirectoryUnavailable

    with pytest.raises(DirectoryUnavailable):
        service.sync()
    db.session.rollback()
    assert not _user("ajones").disabled


def test_local_account_with_the_same_name_is_never_linked(lctx, lclient, slapd):
    from idp.accounts import service as accounts

    accounts.create_user(username="bnguyen", email="someone@else.test", role="admin_staff",
                         password="Local-Owner-Pass-2026!")
    db.session.commit()
    report = _synced()
    assert report.conflicts == 1
    assert _post_login(lclient, "bnguyen", PASSWORD).status_code == 401  # directory password
    assert slapd.binds(user_dn("bnguyen")) == 0
    assert _events("ldap.link_conflict")
    assert SERVICE_DN


def test_passwordless_sign_in_asks_the_directory_and_reset_stays_there(lctx, slapd, mailbox):
    """A passkey sends no password, yet the directory's "cannot sign in" still holds
    (idp.accounts.verifiers.allows, asked by the passkey sign-in); forgot-password and the
    settings page never set a local password for a directory account."""
    from idp.accounts import reset, verifiers
    from idp.accounts import settings as account_settings

    _synced()
    user = _user("ajones")
    assert verifiers.allows(user)
    slapd.modify("ajones", userAccountControl="514")
    assert not verifiers.allows(user)
    assert reset.request_reset("ajones") == []
    assert {e.detail.get("refused") for e in _events("password.reset_requested")} == {
        "password_elsewhere"}
    slapd.modify("ajones", userAccountControl="512")
    sso = SsoSession(id="s-ldap-test", user_id=user.id)
    change = account_settings.change_password(user, sso, PASSWORD, "Another-Long-Pass-2026!")
    assert not change.ok and "directory" in change.errors[0]
    assert _user("ajones").password_hash is None


def test_a_directory_sign_in_costs_one_argon2_verification_like_an_unknown_name(
        lctx, lclient, slapd, monkeypatch):
    """No timing oracle for directory accounts: an unknown name costs one argon2 verification
    (against the dummy hash), so a directory account's sign-in, right or wrong, costs one too,
    besides the bind."""
    from idp.context import runtime

    _synced()
    calls: list[str] = []

    class Counting:
        def __init__(self, hasher):
            self.hasher = hasher

        def __getattr__(self, name: str):
            return getattr(self.hasher, name)

        def verify(self, stored: str, password: str) -> bool:
            calls.append(stored)
            return self.hasher.verify(stored, password)

    monkeypatch.setattr(runtime(), "hasher", Counting(runtime().hasher))
    for username, password, status in (("nobody.here", PASSWORD, 401), ("ajones", "wrong", 401),
                                        ("ajones", PASSWORD, 302)):
        calls.clear()
        assert _post_login(lclient, username, password).status_code == status
        assert calls == [runtime().dummy_hash], (username, password)
