"""Loads policies/*.toml into frozen dataclasses. A bad policy refuses to start (PolicyError)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class PolicyError(Exception):
    """A policy file is missing, malformed, or holds a value out of range."""


@dataclass(frozen=True)
class TokenPolicy:
    authorization_code_lifetime: int
    access_token_lifetime: int
    id_token_lifetime: int
    refresh_token_lifetime: int
    access_token_alg: str
    id_token_default_alg: str
    client_assertion_max_lifetime: int


@dataclass(frozen=True)
class KeyPolicy:
    algorithms: tuple[str, ...]
    rsa_key_size: int
    activation_delay: int


@dataclass(frozen=True)
class SessionPolicy:
    idle_timeout: int
    absolute_timeout: int
    cookie_name: str


@dataclass(frozen=True)
class BackchannelPolicy:
    logout_token_lifetime: int
    request_timeout: int
    retry_delay: int
    retry_max_delay: int
    max_attempts: int
    after_response_budget: int


@dataclass(frozen=True)
class Argon2Policy:
    time_cost: int
    memory_cost: int
    parallelism: int
    hash_len: int
    salt_len: int


@dataclass(frozen=True)
class PasswordRules:
    min_length: int
    max_length: int
    require_upper: bool
    require_lower: bool
    require_digit: bool
    require_symbol: bool
    history: int
    min_strength: int
    max_age_days: int
    warn_days: int


@dataclass(frozen=True)
class PasswordPolicy:
    profile: str
    rules: PasswordRules
    reset_link_lifetime: int
    temporary_lifetime: int
    breached_hashes_file: str


@dataclass(frozen=True)
class LockoutPolicy:
    max_failures: int
    lock_duration: int
    per_ip_limit: str
    per_account_limit: str
    forgot_password_limit: str


@dataclass(frozen=True)
class AcknowledgmentPolicy:
    version: str
    timezone: str
    title: str
    text: str


@dataclass(frozen=True)
class FactorPolicy:
    name: str
    label: str
    amr: tuple[str, ...]
    acr: str
    restricted: bool = False


@dataclass(frozen=True)
class WebAuthnPolicy:
    attestation: str
    resident_key: str
    allowed_aaguids: tuple[str, ...]


@dataclass(frozen=True)
class MfaPolicy:
    required: bool
    code_length: int
    code_lifetime: int
    code_attempts: int
    resend_cooldown: int
    resend_cap: int
    resend_window: int
    recovery_code_count: int
    reauth_window: int
    login_attempt_lifetime: int
    totp_window: int
    factors: dict[str, FactorPolicy]
    roles: dict[str, tuple[str, ...]]
    webauthn: WebAuthnPolicy

    def allowed(self, role: str) -> tuple[str, ...]:
        return self.roles.get(role, ())


@dataclass(frozen=True)
class AssurancePolicy:
    acr_values: tuple[str, ...]
    password_acr: str

    def rank(self, acr: str | None) -> int:
        """Position of an acr in the ordered list; unknown values rank below everything."""
        return self.acr_values.index(acr) if acr in self.acr_values else -1


@dataclass(frozen=True)
class Scope:
    name: str
    description: str
    claims: tuple[str, ...]
    resource: str | None


@dataclass(frozen=True)
class Role:
    name: str
    label: str
    clinical: bool


@dataclass(frozen=True)
class Policy:
    tokens: TokenPolicy
    keys: KeyPolicy
    session: SessionPolicy
    argon2: Argon2Policy
    password: PasswordPolicy
    lockout: LockoutPolicy
    acknowledgment: AcknowledgmentPolicy
    mfa: MfaPolicy
    assurance: AssurancePolicy
    scopes: dict[str, Scope]
    resources: dict[str, str]
    roles: dict[str, Role]
    backchannel: BackchannelPolicy

    @property
    def max_token_lifetime(self) -> int:
        """How long a signing key must stay published after it stops signing."""
        return max(self.tokens.access_token_lifetime, self.tokens.id_token_lifetime)

    def claims_for(self, scopes: list[str]) -> set[str]:
        return {c for s in scopes if s in self.scopes for c in self.scopes[s].claims}

    def audiences_for(self, scopes: list[str]) -> list[str]:
        names = sorted({self.scopes[s].resource for s in scopes if s in self.scopes} - {None})
        return [self.resources[n] for n in names]


def _read(directory: Path, name: str) -> dict[str, Any]:
    path = directory / name
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise PolicyError(f"policy file {path} is missing") from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"policy file {path} is not valid TOML: {exc}") from None


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    fields = cls.__dataclass_fields__
    unknown = set(data) - set(fields)
    missing = set(fields) - set(data)
    if unknown or missing:
        raise PolicyError(f"{where}: unknown {sorted(unknown)} / missing {sorted(missing)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    for key, value in values.items():
        if isinstance(value, int) and not isinstance(value, bool) and value < 0:
            raise PolicyError(f"{where}: {key} must not be negative")
    return cls(**values)


def load_policy(directory: Path, overrides: dict[str, dict[str, Any]] | None = None) -> Policy:
    """Read every policy file. `overrides` patch single values (tests, operators' experiments),
    keyed by file stem and table: {"password.argon2": {"time_cost": 1}, "lockout": {...}}."""
    overrides = overrides or {}

    def section(file: str, key: str | None = None) -> dict[str, Any]:
        data = _read(directory, file)
        for part in (key or "").split(".") if key else ():
            data = data.get(part, {})
        name = file.removesuffix(".toml") + (f".{key}" if key else "")
        return {**data, **overrides.get(name, {})}

    tokens = _build(TokenPolicy, section("tokens.toml"), "tokens.toml")
    keys = _build(KeyPolicy, section("keys.toml"), "keys.toml")
    session = _build(SessionPolicy, section("session.toml"), "session.toml")
    argon2 = _build(Argon2Policy, section("password.toml", "argon2"), "password.toml [argon2]")
    pw = section("password.toml")
    profile = str(pw.get("profile", ""))
    if profile not in pw.get("profiles", {}):
        raise PolicyError(f"password.toml: profile {profile!r} is not among [profiles.*]")
    rules = _build(PasswordRules, section("password.toml", f"profiles.{profile}"),
                   f"password.toml [profiles.{profile}]")
    if not 8 <= rules.min_length <= rules.max_length or not 0 <= rules.min_strength <= 4:
        raise PolicyError("password.toml: need 8 <= min_length <= max_length, strength 0-4")
    password = _build(PasswordPolicy, {
        "profile": profile, "rules": rules,
        **{k: pw[k] for k in ("reset_link_lifetime", "temporary_lifetime",
                               "breached_hashes_file") if k in pw}}, "password.toml")
    lockout = _build(LockoutPolicy, section("lockout.toml"), "lockout.toml")
    if lockout.max_failures < 1 or lockout.lock_duration < 1:
        raise PolicyError("lockout.toml: max_failures and lock_duration must be positive")
    ack = _build(AcknowledgmentPolicy, section("acknowledgment.toml"), "acknowledgment.toml")
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(ack.timezone)
    except Exception:  # noqa: BLE001 - any failure means the zone is unusable
        raise PolicyError(f"acknowledgment.toml: unknown timezone {ack.timezone!r}") from None
    assurance = _build(AssurancePolicy, section("assurance.toml"), "assurance.toml")
    for alg in (*keys.algorithms, tokens.access_token_alg, tokens.id_token_default_alg):
        if alg not in ("RS256", "ES256"):
            raise PolicyError(f"unsupported signing algorithm {alg!r}")
    if tokens.access_token_alg not in keys.algorithms:
        raise PolicyError("tokens.toml access_token_alg has no key in keys.toml algorithms")
    if assurance.password_acr not in assurance.acr_values:
        raise PolicyError("assurance.toml password_acr is not one of acr_values")
    if session.idle_timeout <= 0 or session.absolute_timeout < session.idle_timeout:
        raise PolicyError("session.toml: need 0 < idle_timeout <= absolute_timeout")

    raw_mfa = section("mfa.toml")
    factors = {}
    for name, spec in raw_mfa.pop("factors", {}).items():
        factor = _build(FactorPolicy, {"name": name, "restricted": False, **spec},
                        f"mfa.toml [factors.{name}]")
        if factor.acr not in assurance.acr_values:
            raise PolicyError(f"mfa.toml [factors.{name}]: unknown acr {factor.acr!r}")
        factors[name] = factor
    mfa_roles = {role: tuple(kinds) for role, kinds in raw_mfa.pop("roles", {}).items()}
    for role, kinds in mfa_roles.items():
        unknown = set(kinds) - set(factors)
        if unknown:
            raise PolicyError(f"mfa.toml [roles] {role}: unknown factors {sorted(unknown)}")
    webauthn = _build(WebAuthnPolicy, raw_mfa.pop("webauthn", {}), "mfa.toml [webauthn]")
    if webauthn.attestation not in ("none", "direct") or webauthn.resident_key not in (
            "discouraged", "preferred", "required"):
        raise PolicyError("mfa.toml [webauthn]: attestation none|direct, resident_key "
                          "discouraged|preferred|required")
    webauthn = WebAuthnPolicy(webauthn.attestation, webauthn.resident_key,
                              tuple(a.lower() for a in webauthn.allowed_aaguids))
    mfa = _build(MfaPolicy, {**raw_mfa, "factors": factors, "roles": mfa_roles,
                             "webauthn": webauthn}, "mfa.toml")
    if not 6 <= mfa.code_length <= 10 or mfa.code_attempts < 1:
        raise PolicyError("mfa.toml: code_length 6-10 and code_attempts >= 1")

    raw_scopes = _read(directory, "scopes.toml")
    resources = {
        name: str(spec["audience"]) for name, spec in raw_scopes.get("resources", {}).items()
    }
    scopes = {}
    for name, spec in raw_scopes.get("scopes", {}).items():
        resource = spec.get("resource")
        if resource is not None and resource not in resources:
            raise PolicyError(f"scopes.toml: scope {name} names unknown resource {resource}")
        scopes[name] = Scope(name, str(spec["description"]), tuple(spec.get("claims", ())),
                             resource)
    if "openid" not in scopes:
        raise PolicyError("scopes.toml must define the openid scope")
    roles = {
        name: Role(name, str(spec["label"]), bool(spec["clinical"]))
        for name, spec in _read(directory, "roles.toml").get("roles", {}).items()
    }
    backchannel = _build(BackchannelPolicy, section("backchannel.toml"), "backchannel.toml")
    if backchannel.request_timeout < 1 or backchannel.max_attempts < 1 or \
            backchannel.logout_token_lifetime < 1:
        raise PolicyError("backchannel.toml: request_timeout, max_attempts and "
                          "logout_token_lifetime must be positive")
    return Policy(tokens, keys, session, argon2, password, lockout, ack, mfa, assurance, scopes,
                  resources, roles, backchannel)
