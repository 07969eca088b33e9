"""Loads policies/*.toml into frozen dataclasses. A bad policy refuses to start (PolicyError)."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from idp.core.outbound import parse_allow


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
    client_assertion_jti_retention: int
    client_min_lifetime: int
    max_access_token_lifetime: int
    max_id_token_lifetime: int
    max_refresh_token_lifetime: int
    # node-local cache of access-token records and userinfo claims (idp.oidc.revocation_cache):
    # how long a node trusts its last reading of the revocation epoch; 0 turns the cache off
    revocation_cache_ms: int


@dataclass(frozen=True)
class RefreshPolicy:
    """refresh.toml: which refresh tokens exist besides offline ones (docs/refresh-tokens.md)."""

    session_bound: bool
    refresh_keeps_session_alive: bool


@dataclass(frozen=True)
class DevicePolicy:
    """device.toml: the device authorization grant (RFC 8628)."""

    expires_in: int
    interval: int
    slow_down_step: int
    user_code_limit: str


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
    touch_every: int            # seconds between writes of a live session's last_seen
    device_cookie_max_age: int  # seconds the device cookie is kept (browsers cap: 400 days)
    # The relying party people are sent to after a flow that starts outside any application
    # (the approval mail, a finished password reset): its client_id ("" = the IdP's own
    # account page) and the path there that starts a sign-in.
    home_client_id: str
    home_path: str


@dataclass(frozen=True)
class BackchannelPolicy:
    logout_token_lifetime: int
    request_timeout: int
    retry_delay: int
    retry_max_delay: int
    max_attempts: int
    after_response_budget: int


@dataclass(frozen=True)
class MailPolicy:
    retry_delay: int
    retry_max_delay: int
    max_attempts: int
    retention: int
    smtp_probe_timeout: int


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
class MfaLimits:
    """Per-client rate limits (Flask-Limiter strings) of the second-step pages."""

    challenge: str
    recovery: str
    webauthn: str


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
    enrollment_lifetime: int
    totp_window: int
    order: tuple[str, ...]
    factors: dict[str, FactorPolicy]
    roles: dict[str, tuple[str, ...]]
    webauthn: WebAuthnPolicy
    limits: MfaLimits

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
    feature: str | None = None  # offered only while this feature is installed (smart)


@dataclass(frozen=True)
class GrantPolicy:
    """scopes.toml [grants]: what a self-registered client gets without an admin's approval,
    and the user-level clinical scopes a user-less (client_credentials) token never carries."""

    self_service_scopes: tuple[str, ...]
    self_service_grant_types: tuple[str, ...]
    user_level_scopes: tuple[str, ...]  # shell-style patterns: "ehr.*", "user/*"

    def self_service(self, scope: str) -> bool:
        return scope in self.self_service_scopes

    def user_level(self, scope: str) -> bool:
        return any(fnmatchcase(scope, pattern) for pattern in self.user_level_scopes)


# The one list of each (discovery, the SMART configuration, client validation, the CLI's
# choices and the admin form derive theirs from these).
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"  # RFC 8628
GRANT_TYPE_NAMES = ("authorization_code", "refresh_token", "client_credentials",
                    DEVICE_CODE_GRANT)
# Asymmetric only: never `none`, never HS* (an HS256 token "signed" with a public key).
SIGNING_ALGORITHMS = ("RS256", "ES256")


@dataclass(frozen=True)
class Role:
    name: str
    label: str
    clinical: bool
    applicable: bool = False  # offered on the onboarding application form


@dataclass(frozen=True)
class LicenseState:
    code: str
    name: str
    pattern: str
    example: str


@dataclass(frozen=True)
class OnboardingPolicy:
    email_link_lifetime: int
    reply_link_lifetime: int
    pending_hold: int
    sla: int
    apply_per_ip_limit: str
    apply_per_email_limit: str
    reviewer_roles: tuple[str, ...]
    facility_admin_roles: tuple[str, ...]
    four_eyes: bool
    four_eyes_roles: tuple[str, ...]
    license_warning_days: int
    license_expiry_buckets: tuple[int, ...]
    registry_timeout: int
    nppes_url: str
    license_states: dict[str, LicenseState]


@dataclass(frozen=True)
class AlertPolicy:
    """policies/alerts.toml: the security alert rules (idp/security/alerts.py)."""

    new_device_window: int
    new_network_window: int
    ipv4_prefix: int
    ipv6_prefix: int
    network_by_country: bool
    max_concurrent_networks: int
    lockouts_per_account: int
    lockouts_per_ip: int
    lockout_window: int
    recipient_roles: tuple[str, ...]


@dataclass(frozen=True)
class EpcsDetailsPolicy:
    """epcs.toml [details]: the RFC 9396 authorization_details the EHR sends to be signed;
    `schema` is the loaded JSON Schema (from the file the policy names)."""

    type: str
    schema: dict[str, Any]
    max_prescriptions: int
    max_bytes: int


@dataclass(frozen=True)
class EpcsKeyPolicy:
    """policies/epcs_keys.toml: which attested WebAuthn keys count as the EPCS hard token
    (1311.115(b)). `roots`: the PEM certificates read from `root_files`; `aaguids`: lowercase
    AAGUID -> the model's description."""

    formats: tuple[str, ...]
    root_files: tuple[str, ...]
    roots: tuple[bytes, ...]
    allow_platform_biometric: bool
    aaguids: dict[str, str]


@dataclass(frozen=True)
class EpcsPolicy:
    """DEA 21 CFR 1311 signing ceremony (policies/epcs.toml)."""

    acr: str
    min_categories: int
    hardware_factors: tuple[str, ...]
    excluded_factors: tuple[str, ...]
    binding_message_max_length: int
    binding_message_charset: str
    ceremony_lifetime: int
    statement: str
    categories: dict[str, str]
    details: EpcsDetailsPolicy
    keys: EpcsKeyPolicy
    dea_registration_required: bool
    dea_expiry_warning_days: int
    reapproval_interval_days: int

    def satisfied_by(self, kinds: list[str] | tuple[str, ...]) -> bool:
        """Do the factor kinds used at one ceremony ("password", "webauthn", ...) meet EPCS?"""
        counted = [k for k in kinds if k not in self.excluded_factors and k in self.categories]
        return (len({self.categories[k] for k in counted}) >= self.min_categories
                and any(k in self.hardware_factors for k in counted))


@dataclass(frozen=True)
class OutboundPolicy:
    """policies/outbound.toml: the rules of idp/core/outbound.py (calls made for others)."""

    allow: tuple[str, ...]
    require_https: str
    connect_timeout: int
    read_timeout: int
    total_timeout: int
    max_response_bytes: int


@dataclass(frozen=True)
class ReportPolicy:
    dormant_after_days: int
    default_range_days: int
    max_range_days: int


@dataclass(frozen=True)
class ConsolePolicy:
    """roles.toml [console]: who may use which part of the admin console (idp/admin/access.py)
    and the weakest sign-in it accepts."""

    admin_roles: tuple[str, ...]
    console_roles: tuple[str, ...]
    security_roles: tuple[str, ...]
    min_acr: str


@dataclass(frozen=True)
class SmartPolicy:
    """policies/smart.toml: SMART App Launch (idp/smart)."""

    enabled: bool  # off: create_app installs nothing of SMART (routes, scopes, claims)
    resource: str
    fhir_path: str
    fhir_user_type: str
    launch_lifetime: int
    launch_registrars: tuple[str, ...]
    directory_timeout: int
    need_patient_banner: bool
    style: dict[str, Any]


# SMART App Launch 2.x, "Styling": the members a style document may carry.
SMART_STYLE_KEYS = frozenset({
    "color_background", "color_error", "color_highlight", "color_modal_backdrop",
    "color_success", "color_text", "dim_border_radius", "dim_font_size", "dim_spacing_size",
    "font_family_body", "font_family_heading"})


@dataclass(frozen=True)
class WebPolicy:
    """policies/web.toml: input bounds and HSTS (idp/web/security.py)."""

    max_body_bytes: int
    body_read_timeout_seconds: int
    max_form_parts: int
    max_param_length: int
    long_params: dict[str, int]
    single_value_paths: tuple[str, ...]
    bounded_paths: tuple[str, ...]
    hsts_max_age: int
    max_json_depth: int
    max_json_values: int
    locales: tuple[str, ...]  # page languages offered (idp/web/i18n.py); the first: default


@dataclass(frozen=True)
class ParPolicy:
    request_uri_lifetime: int
    interaction_lifetime: int
    require_for_all: bool
    max_body: int


@dataclass(frozen=True)
class RequestObjectPolicy:
    max_lifetime: int
    require_exp: bool


@dataclass(frozen=True)
class DpopPolicy:
    algorithms: tuple[str, ...]
    iat_window: int
    require_nonce: bool
    nonce_lifetime: int


@dataclass(frozen=True)
class ClientProfile:
    """A set of rules a client registered with the profile is held to (fapi.toml)."""

    name: str
    description: str
    require_par: bool
    require_pkce_s256: bool
    confidential_only: bool
    auth_methods: tuple[str, ...]
    require_dpop: bool
    max_code_lifetime: int
    signing_algorithms: tuple[str, ...]  # its assertions, request objects and ID tokens


@dataclass(frozen=True)
class FapiPolicy:
    """policies/fapi.toml: PAR, request objects, DPoP and the client profiles."""

    par: ParPolicy
    request_object: RequestObjectPolicy
    dpop: DpopPolicy
    profiles: dict[str, ClientProfile]


@dataclass(frozen=True)
class AuditStreamPolicy:
    """policies/audit_stream.toml: where the audit trail is streamed (idp/auditstream)."""

    enabled: bool
    batch_size: int
    retry_delay: int
    retry_max_delay: int
    timeout: int
    after_response_budget: int
    app_name: str
    facility: int
    sd_id: str
    cef_vendor: str
    cef_product: str
    cef_version: str
    failure_events: tuple[str, ...]
    sinks: dict[str, str]                    # sink name -> format (syslog, cef, fhir)
    fhir_events: dict[str, dict[str, str]]   # event -> type, subtype, action, outcome

    @property
    def max_attempts(self) -> int:
        """A stream never gives up on a receiver (idp.core.delivery.RetryRules)."""
        return 2 ** 62


@dataclass(frozen=True)
class BreakglassReason:
    label: str
    purpose: str    # HL7 v3 ActReason code


@dataclass(frozen=True)
class BreakglassPolicy:
    """policies/breakglass.toml: emergency access (idp/breakglass)."""

    enabled: bool
    scope: str
    roles: tuple[str, ...]
    duration: int
    request_lifetime: int
    justification_min: int
    justification_max: int
    review_within: int
    reviewer_roles: tuple[str, ...]
    purpose_of_use: str
    reasons: dict[str, BreakglassReason]


AUDIT_SINK_FORMATS = ("syslog", "cef", "fhir")
_SINK_NAME = re.compile(r"[a-z][a-z0-9_]{0,30}")
_SD_NAME = re.compile(r"[!#-<>-\\^-~]{1,32}")  # RFC 5424 SD-NAME: printable, no = ] " space


@dataclass(frozen=True)
class ScimGroup:
    """scim.toml [groups.<id>]: a pushed group's displayName, and the role and/or facility
    its members get."""

    id: str
    display: str
    role: str | None
    facility: str | None


@dataclass(frozen=True)
class ScimPolicy:
    """policies/scim.toml: SCIM 2.0 provisioning (idp/scim)."""

    enabled: bool  # off: create_app installs nothing of SCIM
    rate_limit: str
    default_role: str
    pending_role: str
    allow_password: bool
    welcome_mail: bool
    max_filter_length: int
    max_filter_depth: int
    default_page_size: int
    max_page_size: int
    max_token_days: int
    groups: dict[str, ScimGroup]


@dataclass(frozen=True)
class LdapPolicy:
    """policies/federation.toml [ldap]: Active Directory / LDAP user federation
    (idp/federation/ldap)."""
    enabled: bool
    user_base: str
    user_filter: str
    username_attribute: str
    email_attribute: str
    given_name_attribute: str
    family_name_attribute: str
    employee_number_attribute: str
    groups_attribute: str
    npi_attribute: str
    guid_attribute: str
    disabled_attribute: str
    disabled_mask: int
    locked_attribute: str
    group_roles: dict[str, str]
    default_role: str
    pending_role: str
    import_on_first_sign_in: bool
    start_tls: bool
    plaintext_loopback: bool
    ca_file: str
    connect_timeout: int
    operation_timeout: int
    pool_size: int
    bind_limit: int
    bind_window: int
    sync_page_size: int


@dataclass(frozen=True)
class SamlSpPolicy:
    """saml.toml [sps."<entityID>"]: what one service provider receives."""

    attributes: tuple[str, ...] | None
    roles: tuple[str, ...] | None
    nameid_format: str | None
    attribute_profile: str | None = None  # a table of [attribute_profiles]: URN names
    attribute_names: dict[str, str] | None = None  # our name -> the SP's (over the profile)
    encrypt_assertions: str | None = None  # "never" | "if_key" | "required" (else the default)


@dataclass(frozen=True)
class SamlPolicy:
    """policies/saml.toml: the SAML 2.0 identity provider (idp/saml)."""

    enabled: bool  # off: create_app installs nothing of SAML
    assertion_lifetime: int
    clock_skew: int
    request_lifetime: int
    request_max_age: int
    metadata_valid_hours: int
    max_message_bytes: int
    max_inflated_bytes: int
    max_xml_depth: int
    max_relay_state: int
    max_front_channel_logouts: int  # SPs one browser is taken through at logout (no SOAP SLO)
    default_nameid_format: str
    sign_response: bool
    encrypt_assertions: str  # never | if_key (the SP's metadata has an encryption key) | required
    attributes: tuple[str, ...]
    authn_context: dict[str, str]
    sps: dict[str, SamlSpPolicy]
    # Named sets of attribute names some SPs expect instead of ours (eduPerson OIDs,
    # Microsoft claim URIs): our attribute -> the Name sent (NameFormat uri for a URI).
    attribute_profiles: dict[str, dict[str, str]] = field(default_factory=dict)

    def sp(self, entity_id: str) -> SamlSpPolicy:
        return self.sps.get(entity_id) or SamlSpPolicy(None, None, None)

    def attribute_names(self, entity_id: str) -> dict[str, str]:
        """The Names this SP receives our attributes under (ours when not renamed)."""
        sp = self.sp(entity_id)
        names = {a: a for a in self.attributes}
        if sp.attribute_profile:
            names.update(self.attribute_profiles[sp.attribute_profile])
        names.update(sp.attribute_names or {})
        return names


@dataclass(frozen=True)
class UpstreamRule:
    """How far the IdP trusts one upstream OpenID Provider (upstreams.toml)."""

    auto_link: bool
    trust_upstream_mfa: bool


@dataclass(frozen=True)
class UpstreamsPolicy:
    """policies/upstreams.toml: identity brokering (idp/federation/upstream)."""

    enabled: bool
    discovery_cache_seconds: int
    jwks_refetch_min_seconds: int
    flow_lifetime: int
    link_lifetime: int
    auto_link: bool
    trust_upstream_mfa: bool
    mfa_amr: tuple[str, ...]
    mfa_acr: tuple[str, ...]
    trusted_mfa_acr: str
    upstream: dict[str, UpstreamRule] = field(default_factory=dict)

    def rule(self, name: str) -> UpstreamRule:
        return self.upstream.get(name) or UpstreamRule(self.auto_link, self.trust_upstream_mfa)


@dataclass(frozen=True)
class UdapCommunityFiles:
    """udap.toml [communities.<name>]: a trust community's anchors, intermediates and CRLs."""

    name: str
    anchors: tuple[str, ...]
    intermediates: tuple[str, ...]
    crls: tuple[str, ...]


@dataclass(frozen=True)
class UdapPolicy:
    """policies/udap.toml: UDAP and the HL7 FAST Security IG (idp/udap)."""

    enabled: bool
    statement_max_lifetime: int
    assertion_max_lifetime: int
    metadata_lifetime: int
    metadata_base: str
    jti_retention: int
    max_chain_length: int
    max_chain_depth: int
    profiles: tuple[str, ...]
    authorization_extensions: tuple[str, ...]
    authorization_extensions_required: tuple[str, ...]
    certifications: tuple[str, ...]
    b2b_required: tuple[str, ...]
    require_crl: bool
    tiered_fallback: str          # Tiered OAuth, an upstream not usable: "error" | "local"
    tiered_logo_uri: str          # Tiered OAuth: logo_uri of our registrations upstream
    communities: dict[str, UdapCommunityFiles]


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
    onboarding: OnboardingPolicy
    alerts: AlertPolicy
    epcs: EpcsPolicy
    reports: ReportPolicy
    mail: MailPolicy
    grants: GrantPolicy
    outbound: OutboundPolicy
    console: ConsolePolicy
    smart: SmartPolicy
    web: WebPolicy
    refresh: RefreshPolicy
    fapi: FapiPolicy
    audit_stream: AuditStreamPolicy
    breakglass: BreakglassPolicy
    device: DevicePolicy
    scim: ScimPolicy
    ldap: LdapPolicy
    saml: SamlPolicy
    upstreams: UpstreamsPolicy
    udap: UdapPolicy

    @property
    def max_token_lifetime(self) -> int:
        """How long a signing key must stay published after it stops signing (a client may
        have tokens up to the policy maximum)."""
        return max(self.tokens.access_token_lifetime, self.tokens.id_token_lifetime,
                   self.tokens.max_access_token_lifetime, self.tokens.max_id_token_lifetime)

    def is_clinical(self, role: str) -> bool:
        """Is `role` one of roles.toml's clinical roles (an unknown role is not)?"""
        found = self.roles.get(role)
        return bool(found and found.clinical)

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
    """Read every policy file into one Policy: the only loader. `overrides` patch single values
    (tests, operators' experiments), keyed by file stem and table: {"password.argon2":
    {"time_cost": 1}, "lockout": {...}, "smart": {"enabled": False}, "web": {...}}."""
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
        if alg not in SIGNING_ALGORITHMS:
            raise PolicyError(f"unsupported signing algorithm {alg!r}")
    if tokens.access_token_alg not in keys.algorithms:
        raise PolicyError("tokens.toml access_token_alg has no key in keys.toml algorithms")
    if assurance.password_acr not in assurance.acr_values:
        raise PolicyError("assurance.toml password_acr is not one of acr_values")
    if session.idle_timeout <= 0 or session.absolute_timeout < session.idle_timeout:
        raise PolicyError("session.toml: need 0 < idle_timeout <= absolute_timeout")
    if not 0 < session.touch_every < session.idle_timeout:
        raise PolicyError("session.toml: need 0 < touch_every < idle_timeout")
    if not 0 < session.device_cookie_max_age <= 400 * 86400:
        raise PolicyError("session.toml: need 0 < device_cookie_max_age <= 34560000 (400 days, "
                          "the longest a browser keeps a cookie)")

    raw_mfa = section("mfa.toml")
    factors = {}
    # "mfa.factors" and "mfa.roles" overrides add or replace single entries (a test's factor).
    for name, spec in {**raw_mfa.pop("factors", {}),
                       **overrides.get("mfa.factors", {})}.items():
        factor = _build(FactorPolicy, {"name": name, "restricted": False, **spec},
                        f"mfa.toml [factors.{name}]")
        if factor.acr not in assurance.acr_values:
            raise PolicyError(f"mfa.toml [factors.{name}]: unknown acr {factor.acr!r}")
        factors[name] = factor
    mfa_roles = {role: tuple(kinds) for role, kinds in {**raw_mfa.pop("roles", {}),
                                                        **overrides.get("mfa.roles", {})}.items()}
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
    limits = _build(MfaLimits, section("mfa.toml", "limits"), "mfa.toml [limits]")
    raw_mfa.pop("limits", None)
    mfa = _build(MfaPolicy, {**raw_mfa, "factors": factors, "roles": mfa_roles,
                             "webauthn": webauthn, "limits": limits}, "mfa.toml")
    unknown_order = set(mfa.order) - set(factors)
    if unknown_order:
        raise PolicyError(f"mfa.toml order: unknown factors {sorted(unknown_order)}")
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
        feature = spec.get("feature")
        scopes[name] = Scope(name, str(spec["description"]), tuple(spec.get("claims", ())),
                             resource, str(feature) if feature is not None else None)
    if "openid" not in scopes:
        raise PolicyError("scopes.toml must define the openid scope")
    roles = {
        name: Role(name, str(spec["label"]), bool(spec["clinical"]),
                   bool(spec.get("applicable", False)))
        for name, spec in _read(directory, "roles.toml").get("roles", {}).items()
    }
    console = _console(section("roles.toml", "console"), roles, assurance)
    backchannel = _build(BackchannelPolicy, section("backchannel.toml"), "backchannel.toml")
    if backchannel.request_timeout < 1 or backchannel.max_attempts < 1 or \
            backchannel.logout_token_lifetime < 1:
        raise PolicyError("backchannel.toml: request_timeout, max_attempts and "
                          "logout_token_lifetime must be positive")
    onboarding = _onboarding(directory, section("onboarding.toml"), roles)
    alerts = _alerts(section("alerts.toml"), roles)
    _check_client_lifetimes(tokens)
    epcs = _load_epcs(section("epcs.toml"), assurance, factors, directory,
                      section("epcs_keys.toml"))
    reports = _build(ReportPolicy, section("reports.toml"), "reports.toml")
    if reports.dormant_after_days < 1 or reports.max_range_days < 1:
        raise PolicyError("reports.toml: dormant_after_days and max_range_days must be positive")
    mail = _build(MailPolicy, section("mail.toml"), "mail.toml")
    if mail.max_attempts < 1 or mail.retry_delay < 1 or mail.smtp_probe_timeout < 1:
        raise PolicyError("mail.toml: max_attempts, retry_delay and smtp_probe_timeout must be "
                          "positive")
    grants = _grants(section("scopes.toml", "grants"), scopes)
    return Policy(tokens, keys, session, argon2, password, lockout, ack, mfa, assurance, scopes,
                  resources, roles, backchannel, onboarding, alerts, epcs, reports, mail,
                  grants, outbound=_outbound(section("outbound.toml")), console=console,
                  smart=_smart(section("smart.toml"), resources), web=_web(section("web.toml")),
                  refresh=_build(RefreshPolicy, section("refresh.toml"), "refresh.toml"),
                  fapi=_fapi(section("fapi.toml")),
                  audit_stream=_audit_stream(section("audit_stream.toml")),
                  breakglass=_breakglass(section("breakglass.toml"), roles, scopes),
                  device=_build(DevicePolicy, section("device.toml"), "device.toml"),
                  scim=_scim(section("scim.toml"), roles),
                  ldap=_ldap(section("federation.toml", "ldap"), roles),
                  saml=_saml(section("saml.toml"), roles, assurance),
                  upstreams=_upstreams(section("upstreams.toml"), assurance),
                  udap=_udap(section("udap.toml"), directory))


def _ldap(data: dict[str, Any], roles: dict[str, Role]) -> LdapPolicy:
    """federation.toml [ldap], checked: roles it names exist, the pending and default roles
    are not clinical, timeouts and limits positive."""
    ldap = _build(LdapPolicy, {**data, "group_roles": dict(data.get("group_roles", {}))},
                  "federation.toml [ldap]")
    named = [ldap.default_role, ldap.pending_role, *ldap.group_roles.values()]
    unknown = sorted({r for r in named if r not in roles})
    if unknown:
        raise PolicyError(f"federation.toml [ldap]: unknown roles {unknown}")
    if roles[ldap.pending_role].clinical or roles[ldap.default_role].clinical:
        raise PolicyError("federation.toml [ldap]: pending_role and default_role must not be "
                          "clinical roles")
    if min(ldap.connect_timeout, ldap.operation_timeout, ldap.pool_size, ldap.bind_limit,
           ldap.bind_window, ldap.sync_page_size) < 1:
        raise PolicyError("federation.toml [ldap]: timeouts, pool_size, bind_limit, "
                          "bind_window and sync_page_size must be positive")
    if not ldap.username_attribute or not ldap.user_base or not ldap.guid_attribute:
        raise PolicyError("federation.toml [ldap]: user_base, username_attribute and "
                          "guid_attribute are required")
    return ldap


NAMEID_FORMATS = ("persistent", "email", "transient")
ENCRYPT_ASSERTIONS = ("never", "if_key", "required")


def _saml(data: dict[str, Any], roles: dict[str, Role], assurance: AssurancePolicy
          ) -> SamlPolicy:
    """saml.toml, checked: the lifetimes SAML profiles allow (assertions <= 5 minutes, skew
    <= 60 s), known attributes, roles and acr values."""
    sps = {}
    for entity_id, spec in dict(data.pop("sps", {})).items():
        sp = _build(SamlSpPolicy, {"attributes": None, "roles": None, "nameid_format": None,
                                   "attribute_profile": None, "attribute_names": None,
                                   "encrypt_assertions": None, **spec},
                    f"saml.toml [sps.{entity_id!r}]")
        if sp.roles is not None and set(sp.roles) - set(roles):
            raise PolicyError(f"saml.toml [sps.{entity_id!r}]: unknown roles")
        if sp.nameid_format is not None and sp.nameid_format not in NAMEID_FORMATS:
            raise PolicyError(f"saml.toml [sps.{entity_id!r}]: nameid_format one of "
                              f"{NAMEID_FORMATS}")
        sps[entity_id] = sp
    profiles = {name: dict(table) for name, table in
                dict(data.get("attribute_profiles", {})).items()}
    saml = _build(SamlPolicy, {**data, "authn_context": dict(data.get("authn_context", {})),
                               "sps": sps, "attribute_profiles": profiles}, "saml.toml")
    if not (0 < saml.assertion_lifetime <= 300 and 0 <= saml.clock_skew <= 60):
        raise PolicyError("saml.toml: 0 < assertion_lifetime <= 300, 0 <= clock_skew <= 60")
    if saml.default_nameid_format not in NAMEID_FORMATS:
        raise PolicyError(f"saml.toml default_nameid_format: one of {NAMEID_FORMATS}")
    if set(saml.authn_context) != set(assurance.acr_values):
        raise PolicyError("saml.toml [authn_context]: one class ref per acr of assurance.toml")
    for name, table in profiles.items():
        _saml_names(table, saml.attributes, f"saml.toml [attribute_profiles.{name}]")
    if saml.encrypt_assertions not in ENCRYPT_ASSERTIONS:
        raise PolicyError(f"saml.toml encrypt_assertions: one of {ENCRYPT_ASSERTIONS}")
    for entity_id, sp in sps.items():
        where = f"saml.toml [sps.{entity_id!r}]"
        if sp.attributes is not None and set(sp.attributes) - set(saml.attributes):
            raise PolicyError(f"{where}: attributes beyond `attributes`")
        if sp.attribute_profile is not None and sp.attribute_profile not in profiles:
            raise PolicyError(f"{where}: attribute_profile one of {sorted(profiles)}")
        if sp.encrypt_assertions is not None and \
                sp.encrypt_assertions not in ENCRYPT_ASSERTIONS:
            raise PolicyError(f"{where}: encrypt_assertions one of {ENCRYPT_ASSERTIONS}")
        _saml_names(sp.attribute_names or {}, saml.attributes, where)
        sent = list(saml.attribute_names(entity_id).values())
        if len(sent) != len(set(sent)):
            raise PolicyError(f"{where}: two attributes would be sent under one Name")
    return saml


def _saml_names(table: dict[str, Any], attributes: tuple[str, ...], where: str) -> None:
    """An attribute renaming: our attribute names to non-empty Names."""
    if set(table) - set(attributes):
        raise PolicyError(f"{where}: unknown attributes {sorted(set(table) - set(attributes))}")
    if not all(isinstance(v, str) and v.strip() for v in table.values()):
        raise PolicyError(f"{where}: each Name is a non-empty string")


def _upstreams(data: dict[str, Any], assurance: AssurancePolicy) -> UpstreamsPolicy:
    """upstreams.toml, checked: per-upstream tables hold only the two rules, the trusted acr
    is one of ours."""
    data = dict(data)
    data.setdefault("upstream", {})
    rules = {}
    for name, table in (data.get("upstream") or {}).items():
        if not isinstance(table, dict):
            raise PolicyError(f"upstreams.toml [upstream.{name}]: a table")
        rules[name] = _build(UpstreamRule, {"auto_link": data.get("auto_link", False),
                                            "trust_upstream_mfa":
                                                data.get("trust_upstream_mfa", False),
                                            **table}, f"upstreams.toml [upstream.{name}]")
    built = _build(UpstreamsPolicy, {**data, "upstream": rules}, "upstreams.toml")
    if built.trusted_mfa_acr not in assurance.acr_values:
        raise PolicyError("upstreams.toml trusted_mfa_acr is not one of assurance.toml "
                          "acr_values")
    if min(built.flow_lifetime, built.link_lifetime, built.discovery_cache_seconds) < 1:
        raise PolicyError("upstreams.toml: lifetimes must be positive")
    return built


def _udap(data: dict[str, Any], directory: Path) -> UdapPolicy:
    """udap.toml, checked: positive bounds, lifetimes within the IG's, known profiles;
    community file paths relative to the policy directory made absolute."""
    communities = {}
    for name, spec in dict(data.pop("communities", {}) or {}).items():
        paths = {k: tuple(str(directory / p) for p in spec.get(k, ())) for k in
                 ("anchors", "intermediates", "crls")}
        if not paths["anchors"]:
            raise PolicyError(f"udap.toml [communities.{name}]: at least one anchor")
        communities[name] = UdapCommunityFiles(name, **paths)
    udap = _build(UdapPolicy, {**data, "communities": communities}, "udap.toml")
    if not (0 < udap.statement_max_lifetime <= 300 and 0 < udap.assertion_max_lifetime <= 300):
        raise PolicyError("udap.toml: lifetimes between 1 and 300 seconds (the IG's 5 minutes)")
    if not 0 < udap.metadata_lifetime <= 366 * 86400:
        raise PolicyError("udap.toml: metadata_lifetime at most a year")
    if udap.max_chain_length < 1 or udap.max_chain_depth < 2:
        raise PolicyError("udap.toml: max_chain_length >= 1, max_chain_depth >= 2")
    if udap.tiered_logo_uri and not udap.tiered_logo_uri.startswith("https://"):
        raise PolicyError("udap.toml: tiered_logo_uri must be an https URL")
    if udap.tiered_fallback not in ("error", "local"):
        raise PolicyError("udap.toml: tiered_fallback is \"error\" or \"local\"")
    unknown = set(udap.profiles) - {"udap_dcr", "udap_authn", "udap_authz", "udap_to"}
    if unknown:
        raise PolicyError(f"udap.toml profiles: unknown {sorted(unknown)}")
    return udap


def _scim(data: dict[str, Any], roles: dict[str, Role]) -> ScimPolicy:
    """scim.toml, checked: roles it names exist, the pending role is not clinical."""
    groups = {}
    for gid, spec in dict(data.pop("groups", {})).items():
        group = _build(ScimGroup, {"id": gid, "role": None, "facility": None, **spec},
                       f"scim.toml [groups.{gid}]")
        if group.role is None and not group.facility:
            raise PolicyError(f"scim.toml [groups.{gid}]: a role, a facility or both")
        if group.role is not None and group.role not in roles:
            raise PolicyError(f"scim.toml [groups.{gid}]: unknown role {group.role!r}")
        groups[gid] = group
    scim = _build(ScimPolicy, {**data, "groups": groups}, "scim.toml")
    for key in ("default_role", "pending_role"):
        if getattr(scim, key) not in roles:
            raise PolicyError(f"scim.toml {key}: unknown role {getattr(scim, key)!r}")
    if roles[scim.pending_role].clinical:
        raise PolicyError("scim.toml pending_role: must not be a clinical role")
    if not (1 <= scim.default_page_size <= scim.max_page_size and scim.max_filter_length >= 100
            and scim.max_filter_depth >= 2 and scim.max_token_days >= 1):
        raise PolicyError("scim.toml: 1 <= default_page_size <= max_page_size, "
                          "max_filter_length >= 100, max_filter_depth >= 2, max_token_days >= 1")
    return scim


def _console(data: dict[str, Any], roles: dict[str, Role], assurance: AssurancePolicy
             ) -> ConsolePolicy:
    """roles.toml [console], checked: every group names defined roles, min_acr a known acr."""
    console = _build(ConsolePolicy, data, "roles.toml [console]")
    for key in ("admin_roles", "console_roles", "security_roles"):
        names = getattr(console, key)
        unknown = [n for n in names if n not in roles]
        if not names or unknown:
            raise PolicyError(f"roles.toml [console] {key}: defined roles, at least one "
                              f"(unknown: {unknown})")
    if console.min_acr not in assurance.acr_values:
        raise PolicyError(f"roles.toml [console] min_acr: {console.min_acr!r} is not one of "
                          "assurance.toml acr_values")
    return console


def _smart(data: dict[str, Any], resources: dict[str, str]) -> SmartPolicy:
    """smart.toml, checked; its resource must be one scopes.toml names."""
    smart = _build(SmartPolicy, data, "smart.toml")
    if not isinstance(smart.need_patient_banner, bool) or not isinstance(smart.enabled, bool):
        raise PolicyError("smart.toml: enabled and need_patient_banner are true or false")
    unknown = set(smart.style) - SMART_STYLE_KEYS
    if unknown or not all(isinstance(v, str) and 0 < len(v) <= 200
                          for v in smart.style.values()):
        raise PolicyError(f"smart.toml [style]: SMART style members as strings "
                          f"(unknown: {sorted(unknown)})")
    if smart.resource not in resources:
        raise PolicyError(f"smart.toml: resource {smart.resource!r} is not in scopes.toml")
    if smart.launch_lifetime < 1 or not smart.fhir_path.startswith("/"):
        raise PolicyError("smart.toml: launch_lifetime >= 1 and fhir_path starting with /")
    return smart


def _fapi(data: dict[str, Any]) -> FapiPolicy:
    """fapi.toml, checked: positive lifetimes, asymmetric DPoP algorithms, known methods."""
    par = _build(ParPolicy, data.get("par", {}), "fapi.toml [par]")
    ro = _build(RequestObjectPolicy, data.get("request_object", {}), "fapi.toml [request_object]")
    dpop = _build(DpopPolicy, data.get("dpop", {}), "fapi.toml [dpop]")
    if min(par.request_uri_lifetime, par.interaction_lifetime, par.max_body,
           ro.max_lifetime, dpop.iat_window, dpop.nonce_lifetime) < 1:
        raise PolicyError("fapi.toml: lifetimes, windows and max_body must be positive")
    bad = set(dpop.algorithms) - {*SIGNING_ALGORITHMS, "PS256"}
    if bad or not dpop.algorithms:
        raise PolicyError(f"fapi.toml [dpop] algorithms: asymmetric ones (unknown: {sorted(bad)})")
    profiles = {}
    for name, spec in data.get("profiles", {}).items():
        profile = _build(ClientProfile, {"name": name, **spec}, f"fapi.toml [profiles.{name}]")
        if not profile.auth_methods or set(profile.auth_methods) - {
                "client_secret_basic", "client_secret_post", "private_key_jwt", "none"}:
            raise PolicyError(f"fapi.toml [profiles.{name}] auth_methods: known methods")
        profiles[name] = profile
    return FapiPolicy(par, ro, dpop, profiles)
def _audit_stream(data: dict[str, Any]) -> AuditStreamPolicy:
    """audit_stream.toml, checked: sink names and formats, the FHIR coding table."""
    data = dict(data)
    sinks = data.pop("sinks", {})
    fhir = data.pop("fhir", {})
    if not isinstance(sinks, dict) or not isinstance(fhir, dict):
        raise PolicyError("audit_stream.toml: [sinks.<name>] and [fhir.events] are tables")
    formats: dict[str, str] = {}
    for name, sink in sinks.items():
        if not _SINK_NAME.fullmatch(name) or not isinstance(sink, dict) or \
                sink.get("format") not in AUDIT_SINK_FORMATS or set(sink) != {"format"}:
            raise PolicyError(f"audit_stream.toml [sinks.{name}]: a lower-case name and "
                              f"format = one of {AUDIT_SINK_FORMATS}")
        formats[name] = sink["format"]
    events = fhir.get("events", {})
    keys = {"type", "subtype", "action", "outcome"}
    for event, coding in events.items():
        if not isinstance(coding, dict) or set(coding) != keys or \
                coding["action"] not in ("C", "R", "U", "D", "E") or \
                coding["outcome"] not in ("0", "4", "8", "12"):
            raise PolicyError(f"audit_stream.toml [fhir.events] {event!r}: type, subtype, "
                              "action (C R U D E) and outcome (0 4 8 12)")
    data.update(sinks=formats, fhir_events=dict(events))
    rules = _build(AuditStreamPolicy, data, "audit_stream.toml")
    if not isinstance(rules.enabled, bool) or rules.batch_size < 1 or rules.timeout < 1 or \
            rules.retry_delay < 1 or rules.retry_max_delay < rules.retry_delay or \
            not 0 <= rules.facility <= 23 or not _SD_NAME.fullmatch(rules.sd_id) or \
            not _SD_NAME.fullmatch(rules.app_name):
        raise PolicyError("audit_stream.toml: enabled true/false, batch_size >= 1, timeout >= "
                          "1, 1 <= retry_delay <= retry_max_delay, facility 0-23, sd_id and "
                          "app_name RFC 5424 names")
    return rules


def _breakglass(data: dict[str, Any], roles: dict[str, Role], scopes: dict[str, Scope]
                ) -> BreakglassPolicy:
    """breakglass.toml, checked: known roles and scope, reasons with labels and purposes."""
    data = dict(data)
    reasons = data.pop("reasons", {})
    if not isinstance(reasons, dict) or not reasons:
        raise PolicyError("breakglass.toml: at least one [reasons.<code>]")
    built = {code: _build(BreakglassReason, reason, f"breakglass.toml [reasons.{code}]")
             for code, reason in reasons.items()}
    rules = _build(BreakglassPolicy, {**data, "reasons": built}, "breakglass.toml")
    unknown = (set(rules.roles) | set(rules.reviewer_roles)) - set(roles)
    if unknown or not rules.roles or not rules.reviewer_roles:
        raise PolicyError(f"breakglass.toml: roles and reviewer_roles name roles.toml roles "
                          f"(unknown: {sorted(unknown)})")
    if set(rules.roles) & set(rules.reviewer_roles):
        raise PolicyError("breakglass.toml: a reviewer role may not break the glass")
    if rules.scope not in scopes:
        raise PolicyError(f"breakglass.toml: scope {rules.scope!r} is not in scopes.toml")
    if not isinstance(rules.enabled, bool) or rules.duration < 60 or \
            rules.request_lifetime < 60 or rules.review_within < 3600 or \
            not 1 <= rules.justification_min <= rules.justification_max <= 4000:
        raise PolicyError("breakglass.toml: duration and request_lifetime >= 60 s, "
                          "review_within >= 3600 s, 1 <= justification_min <= "
                          "justification_max <= 4000")
    return rules


def _web(data: dict[str, Any]) -> WebPolicy:
    """web.toml, checked (a bad file refuses to start like any other policy file)."""
    rules = _build(WebPolicy, {**data, "long_params": {
        str(k): v for k, v in data.get("long_params", {}).items()}}, "web.toml")
    if any(not isinstance(v, int) or not rules.max_param_length <= v <= rules.max_body_bytes
           for v in rules.long_params.values()):
        raise PolicyError("web.toml: each long_params limit between max_param_length and "
                          "max_body_bytes")
    if not (1024 <= rules.max_body_bytes and 1 <= rules.max_form_parts
            and 1 <= rules.body_read_timeout_seconds <= 300
            and 64 <= rules.max_param_length <= rules.max_body_bytes
            and 4 <= rules.max_json_depth <= 256 and 1 <= rules.max_json_values
            and rules.locales and all(isinstance(x, str) and x.isalpha() for x in rules.locales)):
        raise PolicyError("web.toml: need max_body_bytes >= 1024, "
                          "1 <= body_read_timeout_seconds <= 300, max_form_parts >= 1, "
                          "64 <= max_param_length <= max_body_bytes, 4 <= max_json_depth <= 256, "
                          "max_json_values >= 1, locales a non-empty list of language codes")
    return rules


def _outbound(data: dict[str, Any]) -> OutboundPolicy:
    """policies/outbound.toml, checked (every allow-list entry a network or a host name)."""
    rules = _build(OutboundPolicy, data, "outbound.toml")
    try:
        parse_allow(rules.allow, "outbound.toml allow")
    except ValueError as exc:
        raise PolicyError(str(exc)) from None
    if rules.require_https not in ("production", "always"):
        raise PolicyError("outbound.toml: require_https is \"production\" or \"always\"")
    if min(rules.connect_timeout, rules.read_timeout, rules.total_timeout) < 1 or \
            rules.max_response_bytes < 1024:
        raise PolicyError("outbound.toml: timeouts >= 1 second, max_response_bytes >= 1024")
    return rules


def _grants(data: dict[str, Any], scopes: dict[str, Scope]) -> GrantPolicy:
    """scopes.toml [grants], checked: self-service scopes are defined ones, grant types known."""
    grants = _build(GrantPolicy, data, "scopes.toml [grants]")
    unknown = [s for s in grants.self_service_scopes if s not in scopes]
    unknown += [g for g in grants.self_service_grant_types if g not in GRANT_TYPE_NAMES]
    if unknown:
        raise PolicyError(f"scopes.toml [grants]: unknown {unknown}")
    if not all(isinstance(p, str) and p for p in grants.user_level_scopes):
        raise PolicyError("scopes.toml [grants]: user_level_scopes are non-empty patterns")
    return grants


def _onboarding(directory: Path, data: dict[str, Any], roles: dict[str, Role]
                ) -> OnboardingPolicy:
    """policies/onboarding.toml plus the license jurisdictions of policies/licenses.toml."""
    import re

    raw = _read(directory, "licenses.toml")
    generic = str(raw.get("generic", ""))
    states = {}
    for code, spec in raw.get("states", {}).items():
        pattern = str(spec.get("pattern", generic))
        try:
            re.compile(pattern)
        except re.error:
            raise PolicyError(f"licenses.toml: {code} pattern is not a regular expression"
                              ) from None
        states[code] = LicenseState(code, str(spec["name"]), pattern,
                                    str(spec.get("example", raw.get("generic_example", ""))))
    if not states or not generic:
        raise PolicyError("licenses.toml needs `generic` and at least one [states] entry")
    result = _build(OnboardingPolicy, {**data, "license_states": states}, "onboarding.toml")
    for name in (*result.reviewer_roles, *result.facility_admin_roles, *result.four_eyes_roles):
        if name not in roles:
            raise PolicyError(f"onboarding.toml names unknown role {name!r}")
    if result.email_link_lifetime < 60 or result.sla < 1 or result.registry_timeout < 1:
        raise PolicyError("onboarding.toml: email_link_lifetime >= 60, sla and "
                          "registry_timeout positive")
    buckets = result.license_expiry_buckets
    if not buckets or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1
                              for b in buckets) or list(buckets) != sorted(set(buckets)):
        raise PolicyError("onboarding.toml license_expiry_buckets: positive whole days, "
                          "ascending, at least one")
    return result


def _alerts(data: dict[str, Any], roles: dict[str, Role]) -> AlertPolicy:
    """policies/alerts.toml, checked (recipient_roles: defined roles, at least one)."""
    alerts = _build(AlertPolicy, data, "alerts.toml")
    unknown = [n for n in alerts.recipient_roles if n not in roles]
    if not alerts.recipient_roles or unknown:
        raise PolicyError(f"alerts.toml recipient_roles: defined roles, at least one "
                          f"(unknown: {unknown})")
    if not (8 <= alerts.ipv4_prefix <= 32 and 16 <= alerts.ipv6_prefix <= 128):
        raise PolicyError("alerts.toml: ipv4_prefix 8-32, ipv6_prefix 16-128")
    if min(alerts.new_device_window, alerts.new_network_window, alerts.lockout_window,
           alerts.max_concurrent_networks, alerts.lockouts_per_account,
           alerts.lockouts_per_ip) < 1:
        raise PolicyError("alerts.toml: windows, thresholds and max_concurrent_networks must "
                          "be positive")
    return alerts


def _check_client_lifetimes(tokens: TokenPolicy) -> None:
    """The default may not exceed the maximum a client may be given; a used assertion's jti is
    remembered for a positive time."""
    if tokens.client_assertion_jti_retention < 1:
        raise PolicyError("tokens.toml: client_assertion_jti_retention must be positive")
    for kind in ("access_token", "id_token", "refresh_token"):
        default = getattr(tokens, f"{kind}_lifetime")
        highest = getattr(tokens, f"max_{kind}_lifetime")
        if not (1 <= default <= highest and 1 <= tokens.client_min_lifetime <= highest):
            raise PolicyError(f"tokens.toml: need 1 <= {kind}_lifetime <= max_{kind}_lifetime "
                              f"and client_min_lifetime <= max_{kind}_lifetime")


def _load_epcs_details(raw: dict[str, Any], directory: Path) -> EpcsDetailsPolicy:
    name = str(raw.get("schema", ""))
    path = directory / name
    if not name or "/" in name or "\\" in name or not path.is_file():
        raise PolicyError(f"epcs.toml [details]: schema file {name!r} not found beside it")
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise PolicyError(f"epcs.toml [details]: {name} is not JSON: {exc}") from None
    details = _build(EpcsDetailsPolicy, {**raw, "schema": schema}, "epcs.toml [details]")
    if not 1 <= details.max_prescriptions <= 50 or not 256 <= details.max_bytes <= 262144:
        raise PolicyError("epcs.toml [details]: max_prescriptions 1-50, max_bytes 256-262144")
    return details


EPCS_KEY_FORMATS = ("packed", "tpm", "android-key", "apple")
AAGUID_FORM = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _load_epcs_keys(raw: dict[str, Any], directory: Path) -> EpcsKeyPolicy:
    """epcs_keys.toml: formats with a certificate chain only, readable PEM roots, AAGUIDs in
    their canonical form."""
    files = raw.pop("roots", [])
    if not isinstance(files, list) or not all(isinstance(f, str) and f for f in files):
        raise PolicyError("epcs_keys.toml: roots is a list of PEM file names")
    roots: list[bytes] = []
    for name in files:
        path = Path(name) if Path(name).is_absolute() else directory / name
        try:
            text = path.read_bytes()
            roots += [cert.public_bytes(serialization.Encoding.PEM)
                      for cert in x509.load_pem_x509_certificates(text)]
        except (OSError, ValueError) as exc:
            raise PolicyError(f"epcs_keys.toml: root {name!r} is not a readable PEM "
                              f"certificate file: {exc}") from None
    aaguids = {str(k).lower(): str(v) for k, v in raw.pop("aaguids", {}).items()}
    bad = sorted(a for a in aaguids if not AAGUID_FORM.fullmatch(a))
    if bad:
        raise PolicyError(f"epcs_keys.toml [aaguids]: not an AAGUID: {bad}")
    keys = _build(EpcsKeyPolicy, {**raw, "root_files": files, "roots": roots,
                                  "aaguids": aaguids}, "epcs_keys.toml")
    if not keys.formats or set(keys.formats) - set(EPCS_KEY_FORMATS):
        raise PolicyError(f"epcs_keys.toml: formats among {list(EPCS_KEY_FORMATS)}")
    if not isinstance(keys.allow_platform_biometric, bool):
        raise PolicyError("epcs_keys.toml: allow_platform_biometric is true or false")
    return keys


def _load_epcs(raw: dict[str, Any], assurance: AssurancePolicy,
               factors: dict[str, FactorPolicy], directory: Path,
               keys: dict[str, Any]) -> EpcsPolicy:
    data = {**raw, "categories": {str(k): str(v) for k, v in raw.get("categories", {}).items()},
            "details": _load_epcs_details(raw.get("details", {}), directory),
            "keys": _load_epcs_keys(dict(keys), directory)}
    epcs = _build(EpcsPolicy, data, "epcs.toml")
    if epcs.acr not in assurance.acr_values:
        raise PolicyError(f"epcs.toml: acr {epcs.acr!r} is not one of assurance.toml acr_values")
    unknown = (set(epcs.hardware_factors) | set(epcs.excluded_factors)
               | set(epcs.categories)) - set(factors) - {"password"}
    if unknown:
        raise PolicyError(f"epcs.toml: unknown factors {sorted(unknown)}")
    if epcs.min_categories < 2 or not epcs.hardware_factors or \
            set(epcs.hardware_factors) & set(epcs.excluded_factors):
        raise PolicyError("epcs.toml: min_categories >= 2 and a hardware factor not excluded")
    if not 1 <= epcs.binding_message_max_length <= 256 or not epcs.binding_message_charset:
        raise PolicyError("epcs.toml: binding_message_max_length 1-256 and a charset")
    return epcs
