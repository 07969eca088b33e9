"""Secrets and keys: private key files or no start; TOTP seeds encrypted at rest; the secret key
rotated without signing anybody out (the old key still verifies cookies and CSRF tokens)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from idp import create_app
from idp.config import ConfigError, Settings
from idp.core import crypto
from idp.extensions import db
from idp.mfa.models import Factor
from tests.conftest import TEST_POLICY
from tests.helpers import PASSWORD, TOTP_SECRETS, csrf_from, make_user

IDP = str(Path(sys.executable).parent / "idp")
OLD_KEY = "old-secret-key-0123456789-abcdefghijklmnopqrstuv"
NEW_KEY = "new-secret-key-9876543210-zyxwvutsrqponmlkjihgfe"


@pytest.fixture
def private_keys(tmp_path: Path, env: dict[str, str]) -> dict[str, str]:
    """An environment with a key directory of its own (copied from the suite's, modes kept)."""
    keys = tmp_path / "keys"
    shutil.copytree(env["IDP_KEYS_DIR"], keys)
    return {**env, "IDP_KEYS_DIR": str(keys), "IDP_INSTANCE_DIR": str(tmp_path / "instance")}


def test_key_files_are_written_0600(env: dict[str, str], app):
    files = list(Path(env["IDP_KEYS_DIR"]).glob("*.json"))
    assert files
    for path in files:
        assert oct(path.stat().st_mode & 0o777) == oct(0o600), path


@pytest.mark.parametrize("name", ["signing key", "data key", "secret key file"])
def test_a_readable_secret_file_refuses_the_start(private_keys: dict[str, str], name: str,
                                                  tmp_path: Path):
    keys = Path(private_keys["IDP_KEYS_DIR"])
    env = dict(private_keys)
    if name == "signing key":
        target = sorted(keys.glob("*.json"))[0]
    elif name == "data key":
        target = keys / crypto.KEY_FILE
        target.write_text("x")
    else:
        env.pop("IDP_SECRET_KEY")
        instance = Path(env["IDP_INSTANCE_DIR"])
        instance.mkdir(parents=True, exist_ok=True)
        target = instance / "secret_key"
        target.write_text("s" * 48)
    target.chmod(0o600)
    create_app(Settings.from_env(env), policy_overrides=TEST_POLICY, ensure_keys=False)
    target.chmod(0o644)
    with pytest.raises(ConfigError, match=r"readable by group or others \(mode 0644\).*chmod"):
        create_app(Settings.from_env(env), policy_overrides=TEST_POLICY)
    # the operator's view: one line, exit 2, no traceback
    result = subprocess.run([IDP, "keys", "list"], env={**os.environ, **env},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and str(target) in result.stderr
    assert "Traceback" not in result.stderr


def test_gunicorn_refuses_to_boot_with_a_readable_key(private_keys: dict[str, str]):
    keys = Path(private_keys["IDP_KEYS_DIR"])
    sorted(keys.glob("*.json"))[0].chmod(0o640)
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--bind", "127.0.0.1:0", "--workers", "1",
         "--no-control-socket", "idp.wsgi:app"], env={**os.environ, **private_keys},
        capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "error: " in result.stderr and "chmod 600" in result.stderr
    assert "Traceback" not in result.stderr


def test_totp_seeds_are_encrypted_at_rest(ctx):
    user = make_user()
    stored = db.session.execute(select(Factor.secret_encrypted).where(
        Factor.user_id == user.id, Factor.kind == "totp")).scalar_one()
    seed = TOTP_SECRETS[user.username]
    assert seed not in stored
    assert crypto.decrypt(stored) == seed
    columns = {c.name for c in Factor.__table__.columns}
    assert "secret" not in columns  # no plaintext column beside it


def test_secret_key_rotation_keeps_sessions_and_forms_working(app, env: dict[str, str]):
    """Sign in (password step) and load a form under the old key; restart with the new key and
    the old one as fallback: the flow cookie and the form's CSRF token still work. Without
    the fallback they do not."""
    with app.app_context():
        make_user()

    def node(secret: str, fallbacks: str = ""):
        settings = Settings.from_env({**env, "IDP_SECRET_KEY": secret,
                                      "IDP_SECRET_KEY_FALLBACKS": fallbacks})
        application = create_app(settings, policy_overrides=TEST_POLICY)
        application.config["TESTING"] = True
        application.test_client_class = app.test_client_class
        return application

    old = node(OLD_KEY)
    browser = old.test_client()
    with old.app_context():
        first = browser.post("/login", data={
            "username": "drsmith", "password": PASSWORD,
            "csrf_token": csrf_from(browser.get("/login").text)})
    assert first.status_code == 302 and "/mfa/challenge" in first.headers["Location"]
    with old.app_context():
        form = browser.get("/mfa/challenge")
    assert form.status_code == 200
    token = csrf_from(form.text)
    cookies = {c.key: c.value for c in browser._cookies.values()}

    def replay(application):
        client = application.test_client()
        for key, value in cookies.items():
            client.set_cookie(key, value, domain="localhost")
        with application.app_context():
            page = client.get("/mfa/challenge")
            from tests.helpers import totp_now

            done = client.post("/mfa/challenge", data={"code": totp_now("drsmith"),
                                                       "csrf_token": token})
        return page, done

    # the new key alone: the old flow cookie is not trusted, the sign-in starts over
    page, done = replay(node(NEW_KEY))
    assert page.status_code == 302 and "/login" in page.headers["Location"]
    assert done.status_code in (302, 400) and "/account" not in done.headers.get("Location", "")
    # the new key with the old one as fallback: the sign-in and its form carry on
    page, done = replay(node(NEW_KEY, OLD_KEY))
    assert page.status_code == 200
    assert done.status_code == 302 and "/mfa/challenge" not in done.headers["Location"] \
        and "/login" not in done.headers["Location"], done.text[:300]


def test_short_fallback_keys_are_refused(env: dict[str, str]):
    with pytest.raises(ConfigError, match="IDP_SECRET_KEY_FALLBACKS"):
        Settings.from_env({**env, "IDP_SECRET_KEY_FALLBACKS": "short"})
