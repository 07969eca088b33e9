"""`idp demo seed`: idempotent, the right client flags, secrets only in 0600 files, an
authenticator app (TOTP) enrolled for every demo account, its seed saved beside the password."""

from __future__ import annotations

import json
import stat
from urllib.parse import parse_qs, urlsplit

import pyotp
from click.testing import CliRunner
from sqlalchemy import func, select

from idp import clock
from idp.accounts.models import User
from idp.accounts.service import verify_password
from idp.audit.models import AuditEvent
from idp.cli import main
from idp.core import crypto
from idp.demo import ACCOUNTS_FILE, CLIENTS_FILE, TOTP_LABEL, npi_with_check_digit, seed
from idp.extensions import db
from idp.mfa.factors import totp
from idp.mfa.models import Factor
from idp.oidc.models import Client

EHR_READ = {"ehr.patients.read", "ehr.appointments.read", "ehr.labs.read", "ehr.billing.read"}


def _count(model) -> int:
    return db.session.execute(select(func.count()).select_from(model)).scalar_one()


def _client(client_id: str) -> Client:
    return db.session.execute(select(Client).where(Client.client_id == client_id)).scalar_one()


def _user(username: str) -> User:
    return db.session.execute(select(User).where(User.username == username)).scalar_one()


def _totp_factors(username: str) -> list[Factor]:
    return list(db.session.execute(select(Factor).where(
        Factor.user_id == _user(username).id, Factor.kind == "totp")).scalars())


def _luhn_ok(npi: str) -> bool:
    digits = [int(c) for c in "80840" + npi]
    total = 0
    for i, d in enumerate(reversed(digits)):
        d = d * 2 if i % 2 else d
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def test_seed_twice_is_idempotent(ctx, tmp_path):
    first = seed(instance_dir=tmp_path)
    assert {c["status"] for c in first.clients} == {"created"}
    assert {a["status"] for a in first.accounts} == {"created"}
    assert {a["totp_status"] for a in first.accounts} == {"enrolled"}
    counts = _count(Client), _count(User), _count(Factor), _count(AuditEvent)
    files = {p: p.read_text() for p in (tmp_path / CLIENTS_FILE, tmp_path / ACCOUNTS_FILE)}

    second = seed(instance_dir=tmp_path)
    assert {c["status"] for c in second.clients} == {"unchanged"}
    assert {a["status"] for a in second.accounts} == {"unchanged"}
    assert second.accounts == [{**a, "status": "unchanged", "totp_status": "unchanged"}
                               for a in first.accounts]
    assert (_count(Client), _count(User), _count(Factor), _count(AuditEvent)) == counts
    assert {p: p.read_text() for p in files} == files
    assert counts[:3] == (4, 4, 4)  # portal, EHR, the native command-line client, SMART app


def test_the_smart_app_is_a_public_third_party_smart_client(ctx, tmp_path):
    seed(instance_dir=tmp_path, smart_app_url="http://127.0.0.1:9203")
    app = _client("smart-app")
    assert app.is_public and app.require_pkce and not app.first_party
    assert app.redirect_uris == ["http://127.0.0.1:9203/callback"]
    assert {"openid", "fhirUser", "launch", "launch/patient", "patient/*.rs"} <= set(
        app.scope.split())
    # a changed URL is corrected on the next run
    seed(instance_dir=tmp_path, smart_app_url="http://127.0.0.1:9204")
    assert _client("smart-app").redirect_uris == ["http://127.0.0.1:9204/callback"]


def test_clients_have_the_right_flags(ctx, tmp_path):
    seed(instance_dir=tmp_path)
    portal, ehr = _client("portal"), _client("ehr")
    assert portal.client_name == "Provider Portal" and ehr.client_name == "EHR"
    for client in (portal, ehr):
        assert client.first_party and not client.disabled and not client.is_public
        assert client.token_endpoint_auth_method == "client_secret_basic"
        assert set(client.grant_types) >= {"authorization_code"}
        assert client.response_types == ["code"]
        assert not client.loopback_any_port
    assert portal.redirect_uris == ["http://127.0.0.1:8001/callback"]
    assert portal.post_logout_redirect_uris == ["http://127.0.0.1:8001/"]
    assert portal.require_pkce and not portal.introspect_any
    assert set(portal.scope.split()) == {"openid", "profile", "email", "roles", "npi",
                                         "offline_access"} | EHR_READ
    assert ehr.redirect_uris == ["http://127.0.0.1:8002/callback"]
    assert ehr.post_logout_redirect_uris == ["http://127.0.0.1:8002/"]
    assert ehr.introspect_any
    assert set(ehr.scope.split()) >= {"openid", "profile", "email", "roles", "npi",
                                      "ehr.prescriptions.write"} | EHR_READ


def test_secrets_and_passwords_live_in_0600_files_and_work(ctx, tmp_path):
    result = seed(instance_dir=tmp_path)
    clients_file, accounts_file = tmp_path / CLIENTS_FILE, tmp_path / ACCOUNTS_FILE
    for path in (clients_file, accounts_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    secrets = json.loads(clients_file.read_text())
    for client_id in ("portal", "ehr"):
        secret = secrets[client_id]["client_secret"]
        assert len(secret) >= 32
        client = _client(client_id)
        assert client.check_client_secret(secret)
        assert secret not in (client.client_secret_hash or "")  # stored hashed only
    passwords = json.loads(accounts_file.read_text())
    roles = {}
    for row in result.accounts:
        user = _user(row["username"])
        assert passwords[row["username"]]["password"] == row["password"]
        assert verify_password(user, row["password"])
        assert len(row["password"]) >= 12 and not user.must_change_password
        roles[user.role] = user
    assert set(roles) == {"physician", "nurse_practitioner", "admin_staff", "admin"}
    assert {a["totp_status"] for a in result.accounts} == {"enrolled"}
    seeds = {row["username"]: row["totp_secret"] for row in result.accounts}
    assert len(set(seeds.values())) == len(seeds)  # one authenticator seed per account
    events = db.session.execute(select(AuditEvent).where(
        AuditEvent.event == "mfa.enrolled")).scalars().all()
    assert len(events) == len(seeds)
    physician = _user("dr.rivera")
    assert physician.role == "physician" and physician.npi == "1234567893"
    assert _luhn_ok(physician.npi) and _luhn_ok(roles["nurse_practitioner"].npi)
    assert not _luhn_ok("1234567890")


def test_every_account_has_a_confirmed_authenticator_app(ctx, tmp_path):
    """Every login needs a second factor: each demo account gets a TOTP factor whose seed is in
    the 0600 file (and the output, with an otpauth:// link for an authenticator app)."""
    result = seed(instance_dir=tmp_path)
    saved = json.loads((tmp_path / ACCOUNTS_FILE).read_text())
    for row in result.accounts:
        secret = row["totp_secret"]
        assert saved[row["username"]]["totp_secret"] == secret
        assert len(secret) == 32 and len(pyotp.TOTP(secret).byte_secret()) == 20  # 160 bits
        [factor] = _totp_factors(row["username"])
        assert factor.label == TOTP_LABEL and factor.confirmed_at is not None
        assert factor.last_totp_step is None  # no code used yet
        assert secret not in factor.secret_encrypted  # encrypted at rest
        assert crypto.decrypt(factor.secret_encrypted) == secret
        assert totp.verify(factor, pyotp.TOTP(secret).now())  # the IdP accepts the app's code
        uri = urlsplit(row["totp_uri"])
        assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
        assert row["username"] in uri.path
        assert parse_qs(uri.query)["secret"] == [secret]
        assert parse_qs(uri.query)["issuer"] == [totp.ISSUER_NAME]
        assert row["totp_uri"] == totp.provisioning_uri(_user(row["username"]), secret)


def test_a_lost_or_wrong_seed_is_rotated_and_other_factors_are_kept(ctx, tmp_path):
    first = seed(instance_dir=tmp_path)
    old = {a["username"]: a["totp_secret"] for a in first.accounts}
    saved = json.loads((tmp_path / ACCOUNTS_FILE).read_text())
    del saved["dr.rivera"]["totp_secret"]                   # lost
    saved["np.chen"]["totp_secret"] = pyotp.random_base32()  # not the one enrolled
    saved["staff.okafor"]["totp_secret"] = "not base32!"     # garbage
    (tmp_path / ACCOUNTS_FILE).write_text(json.dumps(saved))
    # An app the admin enrolled for themselves is not the seed's to touch.
    own = Factor(user_id=_user("idp.admin").id, kind="totp", label="My phone",
                 created_at=clock.now(), confirmed_at=clock.now(),
                 secret_encrypted=crypto.encrypt(pyotp.random_base32()))
    db.session.add(own)
    db.session.commit()

    again = seed(instance_dir=tmp_path)
    status = {a["username"]: a["totp_status"] for a in again.accounts}
    assert status == {"dr.rivera": "authenticator reset", "np.chen": "authenticator reset",
                      "staff.okafor": "authenticator reset", "idp.admin": "unchanged"}
    assert {a["status"] for a in again.accounts} == {"unchanged"}  # passwords untouched
    saved = json.loads((tmp_path / ACCOUNTS_FILE).read_text())
    for row in again.accounts:
        name, secret = row["username"], row["totp_secret"]
        assert saved[name]["totp_secret"] == secret
        ours = [f for f in _totp_factors(name) if f.label == TOTP_LABEL]
        assert len(ours) == 1 and crypto.decrypt(ours[0].secret_encrypted) == secret
        if name != "idp.admin":
            assert secret != old[name]  # the old seed no longer signs anyone in
    assert {f.label for f in _totp_factors("idp.admin")} == {TOTP_LABEL, "My phone"}
    removed = db.session.execute(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.event == "mfa.removed")).scalar_one()
    assert removed == 3
    assert seed(instance_dir=tmp_path).accounts == [
        {**a, "totp_status": "unchanged"} for a in again.accounts]


def test_npi_check_digit():
    assert npi_with_check_digit("123456789") == "1234567893"
    assert _luhn_ok(npi_with_check_digit("987654321"))


def test_lost_files_rotate_the_secret_and_reset_the_password(ctx, tmp_path):
    first = seed(instance_dir=tmp_path)
    old = json.loads((tmp_path / CLIENTS_FILE).read_text())["portal"]["client_secret"]
    old_password = first.accounts[0]["password"]
    (tmp_path / CLIENTS_FILE).unlink()
    (tmp_path / ACCOUNTS_FILE).write_text("not json")

    again = seed(instance_dir=tmp_path)
    assert {c["status"] for c in again.clients} == {"secret rotated"}
    assert {a["status"] for a in again.accounts} == {"password reset"}
    new = json.loads((tmp_path / CLIENTS_FILE).read_text())["portal"]["client_secret"]
    assert new != old and _client("portal").check_client_secret(new)
    assert not _client("portal").check_client_secret(old)
    user = _user(again.accounts[0]["username"])
    assert verify_password(user, again.accounts[0]["password"])
    assert not verify_password(user, old_password)
    for name in (CLIENTS_FILE, ACCOUNTS_FILE):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    events = set(db.session.execute(select(AuditEvent.event)).scalars())
    assert {"client.secret_rotated", "user.password_reset"} <= events


def test_saved_secret_is_reused_for_a_fresh_database(ctx, tmp_path):
    """A kept instance dir with an emptied database: the same secrets and passwords return."""
    first = seed(instance_dir=tmp_path)
    for model in (Factor, Client, User):
        db.session.execute(model.__table__.delete())
    db.session.commit()
    again = seed(instance_dir=tmp_path)
    assert {c["status"] for c in again.clients} == {"created"}
    assert [a["password"] for a in again.accounts] == [a["password"] for a in first.accounts]
    # The authenticator apps people added keep working: same seeds, enrolled again.
    assert {a["totp_status"] for a in again.accounts} == {"enrolled"}
    assert [a["totp_secret"] for a in again.accounts] == \
        [a["totp_secret"] for a in first.accounts]
    secret = json.loads((tmp_path / CLIENTS_FILE).read_text())["ehr"]["client_secret"]
    assert _client("ehr").check_client_secret(secret)


def test_clients_get_backchannel_logout_uris_and_old_clients_are_corrected(ctx, tmp_path):
    seed(instance_dir=tmp_path)
    assert _client("portal").backchannel_logout_uri == \
        "http://127.0.0.1:8001/backchannel-logout"
    assert _client("ehr").backchannel_logout_uri == "http://127.0.0.1:8002/backchannel-logout"
    # A client registered before back-channel logout existed (or changed by hand) is corrected.
    _client("ehr").backchannel_logout_uri = None
    _client("portal").backchannel_logout_uri = "http://127.0.0.1:8001/elsewhere"
    db.session.commit()
    result = seed(instance_dir=tmp_path)
    assert [c["status"] for c in result.clients] == ["updated", "updated"]
    assert _client("ehr").backchannel_logout_uri == "http://127.0.0.1:8002/backchannel-logout"
    assert _client("portal").backchannel_logout_uri == \
        "http://127.0.0.1:8001/backchannel-logout"
    assert {c["status"] for c in seed(instance_dir=tmp_path).clients} == {"unchanged"}


def test_new_base_urls_update_the_redirect_uris(ctx, tmp_path):
    seed(instance_dir=tmp_path)
    result = seed(instance_dir=tmp_path, portal_url="http://127.0.0.1:9101",
                  ehr_url="http://127.0.0.1:9102/")
    assert [c["status"] for c in result.clients] == ["updated", "updated"]
    assert _client("portal").redirect_uris == ["http://127.0.0.1:9101/callback"]
    assert _client("ehr").post_logout_redirect_uris == ["http://127.0.0.1:9102/"]


def test_cli_seed_json(ctx, env, tmp_path):
    instance = tmp_path / "instance"
    runner = CliRunner()
    cli_env = {**env, "IDP_INSTANCE_DIR": str(instance), "PORTAL_URL": "http://127.0.0.1:9201"}
    result = runner.invoke(main, ["demo", "seed", "--json"], env=cli_env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["clients_file"] == str(instance / CLIENTS_FILE)
    assert [c["client_id"] for c in data["clients"]] == ["portal", "ehr"]
    assert data["clients"][0]["redirect_uri"] == "http://127.0.0.1:9201/callback"
    assert {a["role"] for a in data["accounts"]} == {"physician", "nurse_practitioner",
                                                     "admin_staff", "admin"}
    assert "client_secret" not in result.output  # secrets go to the file, not the output
    assert {a["totp_status"] for a in data["accounts"]} == {"enrolled"}
    text = runner.invoke(main, ["demo", "seed"], env=cli_env)
    assert text.exit_code == 0, text.output
    assert "dr.rivera" in text.output and data["accounts"][0]["password"] in text.output
    assert "unchanged" in text.output
    for account in data["accounts"]:  # what a person adds to an authenticator app
        assert account["totp_secret"] in text.output and account["totp_uri"] in text.output
