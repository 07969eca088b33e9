"""Settings read from the environment once, validated, typed.

A bad value stops the start with one line naming the variable (ConfigError).
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from idp.core.outbound import parse_allow
from idp.core.trusted_publishers import load_issuers

# Package data (templates, static files, policies, migrations) lives inside the package, so
# a wheel installed anywhere carries it; IDP_POLICY_DIR replaces the packaged policies.
PACKAGE_DIR = Path(__file__).resolve().parent
POLICY_DIR = PACKAGE_DIR / "policies"
MIGRATIONS_DIR = PACKAGE_DIR / "migrations"
# The checkout, when the code runs from one (an editable install, the tests).
PROJECT_ROOT = PACKAGE_DIR.parent


def _state_root() -> Path:
    """Where instance/ and keys/ go unless IDP_INSTANCE_DIR/IDP_KEYS_DIR say: the checkout
    when run from one, else (an installed wheel) the working directory, never site-packages."""
    return PROJECT_ROOT if (PROJECT_ROOT / "pyproject.toml").is_file() else Path.cwd()


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


LOOPBACK_HOSTS = ("localhost", "127.0.0.1")


def _ratelimit_prefix(value: str | None) -> str:
    if not value:
        return "idp-limits"
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", value):
        raise ConfigError("IDP_RATELIMIT_PREFIX: 1-64 letters, digits, '.', '_' or '-'")
    return value


def _trusted_hosts(value: str | None, issuer: str) -> tuple[str, ...]:
    """Host names a request may name (Flask TRUSTED_HOSTS): a forged Host header gets a 400
    instead of building URLs (redirects, discovery) on the attacker's name. Default: the
    issuer's host and the loopback names (health checks and probes on the node itself; a URL
    built on them points at the reader's own machine, never at an attacker's). A leading dot
    allows subdomains (Werkzeug); ports are not compared."""
    if value is None or not value.strip():
        return tuple(dict.fromkeys((urlsplit(issuer).hostname or "", *LOOPBACK_HOSTS)))
    hosts = tuple(h.strip().lower() for h in value.split(",") if h.strip())
    for host in hosts:
        if not host.lstrip(".") or any(c in host for c in "/:@ ?#"):
            raise ConfigError(f"IDP_TRUSTED_HOSTS holds {host!r}: give host names, "
                              "comma-separated, without scheme or port")
    return hosts


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
    npi_registry: str | None = None  # IDP_NPI_REGISTRY: offline:<csv> | nppes[:<url>] | None
    geoip_db: Path | None = None  # MaxMind GeoLite2/GeoIP2 City or Country mmdb (optional)
    metrics_token: str | None = field(default=None, repr=False)  # /metrics only when set
    software_statement_issuers: Path | None = None  # RFC 7591 trusted publishers (JSON)
    # UDAP (idp/udap): the server's certificate chain (PEM, leaf first, SAN URI = the issuer)
    # and its private key (PEM), which sign /.well-known/udap signed_metadata.
    udap_certificate: Path | None = None
    udap_key: Path | None = None
    # Earlier IDP_SECRET_KEYs: still accepted when verifying cookies and CSRF tokens (rotation).
    secret_key_fallbacks: tuple[str, ...] = field(default=(), repr=False)
    trusted_hosts: tuple[str, ...] = ()
    log_format: str = "text"
    # IDP_RATELIMIT_PREFIX: the rate limits' key prefix in Redis, so that deployments (or
    # concurrent test runs) sharing one Redis count apart.
    ratelimit_prefix: str = "idp-limits"
    fast_lane: bool = True  # IDP_FAST_LANE=0: every token/introspection request through Flask
    # IDP_GROUP_COMMIT=0: token issuance commits in its own transaction, one per request;
    # 1: through the process's committer (idp/audit/group_commit.py), up to
    # IDP_GROUP_COMMIT_MAX_ROWS rows per batch, waiting at most IDP_GROUP_COMMIT_WAIT_US
    # microseconds (0-2000, default 0: what queued while the last batch committed) for more.
    group_commit: bool = True
    group_commit_max_rows: int = 256
    group_commit_wait_ms: float = 0.0
    # IDP_OUTBOUND_ALLOW: networks and host names outbound calls may reach although internal,
    # added to policies/outbound.toml `allow` (idp/core/outbound.py).
    outbound_allow: tuple[str, ...] = ()
    # IDP_AUDIT_SINK_<NAME>_{URL,CA,CERT,KEY,TOKEN}: where each audit stream sink named in
    # policies/audit_stream.toml is (idp/auditstream); (variable, value) pairs.
    audit_sink_env: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    # LDAP_URL (ldaps://, or ldap:// with StartTLS), LDAP_BIND_DN, LDAP_BIND_PASSWORD: the
    # hospital directory and its read-only service account (policies/federation.toml [ldap]).
    ldap_url: str | None = None
    ldap_bind_dn: str | None = None
    ldap_bind_password: str | None = field(default=None, repr=False)

    @property
    def secure_cookies(self) -> bool:
        return self.issuer.startswith("https://")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        state_root = _state_root()
        instance = Path(env.get("IDP_INSTANCE_DIR", state_root / "instance"))
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
        policy_dir = Path(env.get("IDP_POLICY_DIR", POLICY_DIR))
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
        fallbacks = tuple((env.get("IDP_SECRET_KEY_FALLBACKS") or "").split())
        if any(len(old) < 32 for old in fallbacks):
            raise ConfigError("IDP_SECRET_KEY_FALLBACKS: every key must be at least 32 "
                              "characters (separate keys with spaces)")
        ehr = env.get("EHR_AUDIENCE")
        registry = env.get("IDP_NPI_REGISTRY") or None
        if registry is not None:
            _npi_registry(registry)
        geoip = env.get("IDP_GEOIP_DB") or None
        if geoip is not None and not Path(geoip).is_file():
            raise ConfigError(f"IDP_GEOIP_DB={geoip!r} is not a file")
        metrics_token = env.get("IDP_METRICS_TOKEN") or None
        if metrics_token is not None and len(metrics_token) < 16:
            raise ConfigError("IDP_METRICS_TOKEN must be at least 16 characters")
        statements = env.get("IDP_SOFTWARE_STATEMENT_ISSUERS") or None
        if statements is not None:
            try:
                load_issuers(Path(statements))
            except (OSError, ValueError) as exc:
                raise ConfigError(f"IDP_SOFTWARE_STATEMENT_ISSUERS={statements!r}: {exc}"
                                  ) from None
        log_format = env.get("IDP_LOG_FORMAT", "text")
        if log_format not in ("json", "text"):
            raise ConfigError(f"IDP_LOG_FORMAT={log_format!r} must be 'json' or 'text'")
        outbound_allow = tuple(entry for entry in re.split(
            r"[\s,]+", env.get("IDP_OUTBOUND_ALLOW") or "") if entry)
        try:
            parse_allow(outbound_allow, "IDP_OUTBOUND_ALLOW")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return cls(
            issuer=issuer,
            database_url=_database_url(db),
            keys_dir=Path(env.get("IDP_KEYS_DIR", state_root / "keys")),
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
            ratelimit_prefix=_ratelimit_prefix(env.get("IDP_RATELIMIT_PREFIX")),
            data_key=data_key,
            sms_gateway_url=gateway,
            sms_gateway_token=env.get("SMS_GATEWAY_TOKEN") or None,
            npi_registry=registry,
            geoip_db=Path(geoip) if geoip else None,
            metrics_token=metrics_token,
            software_statement_issuers=Path(statements) if statements else None,
            udap_certificate=Path(env["IDP_UDAP_CERTIFICATE"])
            if env.get("IDP_UDAP_CERTIFICATE") else None,
            udap_key=Path(env["IDP_UDAP_KEY"]) if env.get("IDP_UDAP_KEY") else None,
            secret_key_fallbacks=fallbacks,
            trusted_hosts=_trusted_hosts(env.get("IDP_TRUSTED_HOSTS"), issuer),
            log_format=log_format,
            fast_lane=_int("IDP_FAST_LANE", env.get("IDP_FAST_LANE", "1"), 0, 1) == 1,
            group_commit=_int("IDP_GROUP_COMMIT", env.get("IDP_GROUP_COMMIT", "1"), 0, 1) == 1,
            group_commit_max_rows=_int("IDP_GROUP_COMMIT_MAX_ROWS",
                                       env.get("IDP_GROUP_COMMIT_MAX_ROWS", "256"), 1, 10000),
            group_commit_wait_ms=_int("IDP_GROUP_COMMIT_WAIT_US",
                                      env.get("IDP_GROUP_COMMIT_WAIT_US", "0"), 0, 2000) / 1000,
            outbound_allow=outbound_allow,
            audit_sink_env=tuple(sorted((k, v) for k, v in env.items()
                                        if k.startswith("IDP_AUDIT_SINK_") and v)),
            ldap_url=_url("LDAP_URL", env["LDAP_URL"], ("ldap", "ldaps"))
            if env.get("LDAP_URL") else None,
            ldap_bind_dn=env.get("LDAP_BIND_DN") or None,
            ldap_bind_password=env.get("LDAP_BIND_PASSWORD") or None,
        )


def _npi_registry(value: str) -> None:
    """offline:<path to an NPPES-layout CSV> | nppes | nppes:<API URL>."""
    kind, _, rest = value.partition(":")
    if kind == "offline" and rest:
        if not Path(rest).is_file():
            raise ConfigError(f"IDP_NPI_REGISTRY: {rest!r} is not a file")
    elif kind == "nppes":
        if rest:
            _url("IDP_NPI_REGISTRY", rest)
    else:
        raise ConfigError(f"IDP_NPI_REGISTRY={value!r} must be offline:<file>, nppes or "
                          "nppes:<url>")
