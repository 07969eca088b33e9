"""Settings.from_env: defaults, every bad value refused with a ConfigError naming the variable,
and the `idp` command turning a bad variable into one clear line and exit code 2."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from idp.config import POLICY_DIR, PROJECT_ROOT, ConfigError, Settings

SECRET = "s" * 40


@pytest.fixture
def base(tmp_path: Path) -> dict[str, str]:
    """The smallest environment: only an instance directory, so nothing is written elsewhere."""
    return {"IDP_INSTANCE_DIR": str(tmp_path / "instance")}


def test_defaults(base: dict[str, str], tmp_path: Path):
    settings = Settings.from_env(base)
    instance = tmp_path / "instance"
    assert settings.issuer == "http://127.0.0.1:8000"
    assert settings.database_url == f"sqlite:///{instance / 'idp.sqlite3'}"
    assert settings.keys_dir == PROJECT_ROOT / "keys"
    assert settings.policy_dir == POLICY_DIR
    assert settings.instance_dir == instance
    assert settings.redis_url is None
    assert (settings.smtp_host, settings.smtp_port) == ("127.0.0.1", 25)
    assert settings.smtp_user is None and settings.smtp_password is None
    assert settings.sms_backend == "outbox"
    assert settings.proxy_hops == 0 and settings.ehr_audience is None
    assert settings.secure_cookies is False


def test_generated_secret_key_is_private_and_stable(base: dict[str, str], tmp_path: Path):
    first = Settings.from_env(base).secret_key
    path = tmp_path / "instance" / "secret_key"
    assert len(first) >= 32 and path.read_text() == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Settings.from_env(base).secret_key == first          # read back, not regenerated
    assert Settings.from_env({**base, "IDP_SECRET_KEY": SECRET}).secret_key == SECRET


def test_values_are_typed_and_normalised(base: dict[str, str], tmp_path: Path):
    settings = Settings.from_env({
        **base, "IDP_ISSUER": "https://idp.example/", "SMTP_PORT": "2525",
        "SMS_BACKEND": "http", "SMS_GATEWAY_URL": "https://sms.example/send", "REDIS_URL": "redis://127.0.0.1:6379/0",
        "IDP_KEYS_DIR": str(tmp_path / "k"), "IDP_PROXY_HOPS": "1",
        "SMTP_PASSWORD": "smtp-Pa55word", "EHR_AUDIENCE": "https://ehr.example"})
    assert settings.issuer == "https://idp.example"   # no trailing slash: iss must match exactly
    assert settings.secure_cookies is True
    assert settings.smtp_port == 2525 and isinstance(settings.smtp_port, int)
    assert settings.sms_backend == "http" and settings.proxy_hops == 1
    assert settings.keys_dir == tmp_path / "k"
    assert "smtp-Pa55word" not in repr(settings)  # the SMTP password stays out of logs


@pytest.mark.parametrize(("given", "expected"), [
    ("postgresql://u:p@db:5432/idp", "postgresql+psycopg://u:p@db:5432/idp"),
    ("postgres://u@db/idp", "postgresql+psycopg://u@db/idp"),
    ("postgresql+psycopg://u@db/idp", "postgresql+psycopg://u@db/idp"),
    ("sqlite:////tmp/x.sqlite3", "sqlite:////tmp/x.sqlite3"),
])
def test_database_url_means_psycopg3(base: dict[str, str], given: str, expected: str):
    assert Settings.from_env({**base, "DATABASE_URL": given}).database_url == expected


@pytest.mark.parametrize(("variable", "value"), [
    ("IDP_ISSUER", "notaurl"),
    ("IDP_ISSUER", "ftp://idp.example"),
    ("IDP_ISSUER", "https://"),
    ("IDP_ISSUER", "https://idp.example/?tenant=1"),
    ("IDP_ISSUER", "https://idp.example/#x"),
    ("DATABASE_URL", "mysql://u@db/idp"),
    ("DATABASE_URL", "postgresql+asyncpg://u@db/idp"),
    ("DATABASE_URL", "not a url"),
    ("SMTP_PORT", "twenty-five"),
    ("SMTP_PORT", ""),
    ("SMTP_PORT", "0"),
    ("SMTP_PORT", "65536"),
    ("SMS_BACKEND", "carrier-pigeon"),
    ("SMS_BACKEND", ""),
    ("IDP_SECRET_KEY", "short"),
    ("IDP_SECRET_KEY", "x" * 31),
    ("IDP_POLICY_DIR", "/nonexistent/policies"),
    ("REDIS_URL", "http://127.0.0.1:6379"),
    ("EHR_AUDIENCE", "ehr"),
    ("IDP_PROXY_HOPS", "many"),
    ("IDP_PROXY_HOPS", "9"),
])
def test_bad_value_names_the_variable(base: dict[str, str], variable: str, value: str):
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({**base, variable: value})


def test_policy_dir_must_be_a_directory(base: dict[str, str], tmp_path: Path):
    a_file = tmp_path / "policies.toml"
    a_file.write_text("")
    with pytest.raises(ConfigError, match="IDP_POLICY_DIR"):
        Settings.from_env({**base, "IDP_POLICY_DIR": str(a_file)})


def test_secret_key_of_32_characters_is_enough(base: dict[str, str]):
    assert Settings.from_env({**base, "IDP_SECRET_KEY": "x" * 32}).secret_key == "x" * 32


def _idp(tmp_path: Path, **variables: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("IDP_", "SMTP_", "SMS_", "REDIS_", "EHR_"))
           and k != "DATABASE_URL"}
    env.update(IDP_INSTANCE_DIR=str(tmp_path / "instance"), IDP_KEYS_DIR=str(tmp_path / "keys"),
               **variables)
    command = Path(sys.executable).parent / "idp"
    return subprocess.run([str(command), "keys", "list"], env=env, capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)


@pytest.mark.parametrize(("variable", "value"), [("IDP_ISSUER", "notaurl"),
                                                 ("SMTP_PORT", "abc")])
def test_cli_reports_a_bad_variable_in_one_line(tmp_path: Path, variable: str, value: str):
    result = _idp(tmp_path, **{variable: value})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr           # one line, no traceback
    assert variable in lines[0] and lines[0].startswith("error:")
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not (tmp_path / "keys").exists()         # refused before doing anything


def test_ratelimit_prefix_is_checked(tmp_path):
    """IDP_RATELIMIT_PREFIX keeps deployments (or test runs) sharing one Redis apart."""
    base = {"IDP_INSTANCE_DIR": str(tmp_path), "IDP_SECRET_KEY": "k" * 40}
    assert Settings.from_env(base).ratelimit_prefix == "idp-limits"
    assert Settings.from_env({**base, "IDP_RATELIMIT_PREFIX": "staging-1"}).ratelimit_prefix \
        == "staging-1"
    for bad in ("has space", "x" * 65, "a*b", "a/b"):
        with pytest.raises(ConfigError):
            Settings.from_env({**base, "IDP_RATELIMIT_PREFIX": bad})
