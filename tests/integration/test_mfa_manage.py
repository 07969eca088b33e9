"""Managing sign-in methods: re-auth, the last factor, recovery codes; the operators' CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select

from idp.extensions import db
from idp.mfa.models import Factor
from tests.helpers import csrf_from, enroll_totp, login, make_user

IDP = str(Path(sys.executable).parent / "idp")


def _post(client, url, data=None):
    page = client.get("/mfa/factors")
    return client.post(url, data={**(data or {}), "csrf_token": csrf_from(page.text)})


def _count(user) -> int:
    return db.session.execute(select(func.count()).select_from(Factor).where(
        Factor.user_id == user.id)).scalar_one()


def test_the_last_factor_cannot_be_removed(ctx, client, mailbox):
    user = make_user()
    login(client)
    only = db.session.execute(select(Factor.id)).scalar_one()
    response = _post(client, f"/mfa/factors/{only}/remove")
    assert "only way" in client.get(response.headers["Location"]).text
    assert _count(user) == 1
    enroll_totp(user)
    db.session.commit()
    _post(client, f"/mfa/factors/{only}/remove")
    assert _count(user) == 1
    assert any("removed" in mailbox.body(m) for m in mailbox.to(user.email))


def test_changes_need_a_recent_sign_in(ctx, client, frozen):
    user = make_user()
    login(client)
    factor_id = db.session.execute(select(Factor.id)).scalars().first()
    frozen.advance(301)
    stale = _post(client, f"/mfa/factors/{factor_id}/rename", {"label": "Phone"})
    assert "/login?" in stale.headers["Location"] and "reauth=1" in stale.headers["Location"]
    assert db.session.get(Factor, factor_id).label != "Phone"
    assert _count(user) == 1
    login(client)
    _post(client, f"/mfa/factors/{factor_id}/rename", {"label": "Work phone"})
    assert db.session.get(Factor, factor_id).label == "Work phone"


def test_another_users_factor_is_untouchable(ctx, client):
    make_user()
    other = make_user("np.lee", npi=None)
    enroll_totp(other)
    db.session.commit()
    login(client)
    theirs = db.session.execute(select(Factor.id).where(Factor.user_id == other.id)).scalar()
    _post(client, f"/mfa/factors/{theirs}/remove")
    assert _count(other) == 2


def test_regenerated_recovery_codes_replace_the_old(ctx, client):
    from idp.mfa.factors import recovery

    user = make_user()
    old = recovery.generate(user)
    db.session.commit()
    login(client)
    shown = client.get(_post(client, "/mfa/recovery-codes/new").headers["Location"])
    assert shown.text.count("<li><code>") == 10
    assert not recovery.use(user, old[0])


def test_cli_enroll_totp_and_reset(ctx, env):
    user = make_user(totp=False)
    run = {**os.environ, **env}
    out = subprocess.run([IDP, "mfa", "enroll-totp", "drsmith", "--json"], env=run,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)["secret"]) >= 16
    db.session.expire_all()
    assert _count(user) == 1
    reset = subprocess.run([IDP, "users", "reset-mfa", "1234567893", "--json"], env=run,
                           capture_output=True, text=True, timeout=60)
    assert json.loads(reset.stdout)["factors_removed"] == 1
    db.session.expire_all()
    assert _count(user) == 0
