"""Settings read from the environment once, validated, typed.

A bad value stops the start with one line naming the variable (ConfigError).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(Exception):
    """A configuration value is missing or wrong; the message names the variable."""


def _url(name: str, value: str, schemes: tuple[str, ...] = ("http", "https")) -> str:
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(f"{name}={value!r} is not a valid {'/'.join(schemes)} URL")
    return value.rstrip("/")


def _int(name: str, value: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not an integer") from None
    if not low <= number <= high:
        raise ConfigError(f"{name}={value!r} must be between {low} and {high}")
    return number


def _database_url(value: str) -> str:
    scheme = value.split(":", 1)[0]
    if scheme in ("postgres", "postgresql"):
        # psycopg 3 is the driver we ship; plain postgresql:// URLs mean it.
        return "postgresql+psycopg:" + value.split(":", 1)[1]
    if scheme not in ("sqlite", "postgresql+psycopg"):
        raise ConfigError(
            f"DATABASE_URL has scheme {scheme!r}; use sqlite:/// or postgresql://"
        )
    return value


def _secret_key(instance: Path) -> str:
    path = instance / "secret_key"
    if path.exists():
        return path.read_text().strip()
    instance.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key


@dataclass(frozen=True)
class Settings:
    issuer: str
    database_url: str
    keys_dir: Path
    policy_dir: Path
    instance_dir: Path
    secret_key: str
    redis_url: str | None = None
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_user: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_from: str = "IdP <no-reply@idp.local>"
    sms_backend: str = "outbox"
    ehr_audience: str | None = None
    proxy_hops: int = 0
    data_key: str | None = field(default=None, repr=False)
    sms_gateway_url: str | None = None
    sms_gateway_token: str | None = field(default=None, repr=False)

    @property
    def secure_cookies(self) -> bool:
        return self.issuer.startswith("https://")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        instance = Path(env.get("IDP_INSTANCE_DIR", PROJECT_ROOT / "instance"))
        issuer = _url("IDP_ISSUER", env.get("IDP_ISSUER", "http://127.0.0.1:8000"))
        db = env.get("DATABASE_URL") or f"sqlite:///{instance / 'idp.sqlite3'}"
        sms = env.get("SMS_BACKEND", "outbox")
        if sms not in ("outbox", "http"):
            raise ConfigError(f"SMS_BACKEND={sms!r} must be 'outbox' or 'http'")
        gateway = env.get("SMS_GATEWAY_URL") or None
        if sms == "http" and not gateway:
            raise ConfigError("SMS_BACKEND=http needs SMS_GATEWAY_URL")
        if gateway:
            _url("SMS_GATEWAY_URL", gateway)
        redis_url = env.get("REDIS_URL") or None
        if redis_url is not None:
            _url("REDIS_URL", redis_url, ("redis", "rediss", "unix"))
        policy_dir = Path(env.get("IDP_POLICY_DIR", PROJECT_ROOT / "policies"))
        if not policy_dir.is_dir():
            raise ConfigError(f"IDP_POLICY_DIR={str(policy_dir)!r} is not a directory")
        secret = env.get("IDP_SECRET_KEY")
        if secret is not None and len(secret) < 32:
            raise ConfigError("IDP_SECRET_KEY must be at least 32 characters")
        data_key = env.get("IDP_DATA_KEY") or None
        if data_key is not None:
            try:
                from cryptography.fernet import Fernet

                Fernet(data_key.encode())
            except (ValueError, TypeError):
                raise ConfigError("IDP_DATA_KEY must be a Fernet key (32 url-safe base64 bytes)"
                                  ) from None
        ehr = env.get("EHR_AUDIENCE")
        return cls(
            issuer=issuer,
            database_url=_database_url(db),
            keys_dir=Path(env.get("IDP_KEYS_DIR", PROJECT_ROOT / "keys")),
            policy_dir=policy_dir,
            instance_dir=instance,
            secret_key=secret or _secret_key(instance),
            redis_url=redis_url,
            smtp_host=env.get("SMTP_HOST", "127.0.0.1"),
            smtp_port=_int("SMTP_PORT", env.get("SMTP_PORT", "25"), 1, 65535),
            smtp_user=env.get("SMTP_USER") or None,
            smtp_password=env.get("SMTP_PASSWORD") or None,
            smtp_from=env.get("SMTP_FROM", "IdP <no-reply@idp.local>"),
            sms_backend=sms,
            ehr_audience=_url("EHR_AUDIENCE", ehr) if ehr else None,
            proxy_hops=_int("IDP_PROXY_HOPS", env.get("IDP_PROXY_HOPS", "0"), 0, 5),
            data_key=data_key,
            sms_gateway_url=gateway,
            sms_gateway_token=env.get("SMS_GATEWAY_TOKEN") or None,
        )
