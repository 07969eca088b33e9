"""The demo relying parties and accounts of the development stack (`idp demo seed`, in
idp/cli/demo.py, runs `seed`).

Idempotent: a second run changes nothing that is already right. Client secrets, account
passwords and the seeds of the accounts' authenticator apps (every login needs a second factor)
are generated here, never committed: they live in the instance directory (files of mode 0600) so
that re-runs and `python -m clients.devstack` reuse them. When a file is lost, or holds a value
the database does not accept, the secret, password or authenticator seed is rotated.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import secrets
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.fernet import InvalidToken
from sqlalchemy import select

from idp import clock
from idp.accounts.models import User
from idp.accounts.npi import npi_with_check_digit
from idp.accounts.passwords import set_password
from idp.accounts.service import create_user, verify_password
from idp.audit import service as audit
from idp.context import settings
from idp.core import crypto
from idp.core.crypto import digest
from idp.extensions import db
from idp.mfa.factors import totp
from idp.mfa.models import Factor
from idp.oidc.clients import create_client, validate_uri
from idp.oidc.models import Client
from idp.onboarding.models import Department, Facility

CLIENTS_FILE = "demo-clients.json"
ACCOUNTS_FILE = "demo-accounts.json"
DEFAULT_PORTAL_URL = "http://127.0.0.1:8001"
DEFAULT_EHR_URL = "http://127.0.0.1:8002"
DEFAULT_SMART_APP_URL = "http://127.0.0.1:8003"

EHR_READ = "ehr.patients.read ehr.appointments.read ehr.labs.read ehr.billing.read"
PASSWORD_SYMBOLS = "-_.@#%+="
TOTP_LABEL = "Demo authenticator app"  # the factor the seed owns (others are left alone)
TOTP_SEED = re.compile(r"[A-Z2-7]{32}")  # what totp.new_secret() makes: 160 bits, base32


@dataclass(frozen=True)
class DemoClient:
    client_id: str
    name: str
    scope: str
    require_pkce: bool = False
    introspect_any: bool = False


@dataclass(frozen=True)
class DemoAccount:
    username: str
    role: str
    given_name: str
    family_name: str
    npi: str | None = None
    license_state: str | None = None
    department: str | None = None

    @property
    def email(self) -> str:
        return f"{self.username}@hospital.example"


CLIENTS = {
    "portal": DemoClient("portal", "Provider Portal",
                         f"openid profile email roles npi offline_access {EHR_READ}",
                         require_pkce=True),
    "ehr": DemoClient("ehr", "EHR", f"openid profile email roles npi {EHR_READ} "
                      "ehr.prescriptions.write emergency_access", introspect_any=True),
}
FACILITY = "Fictional General Hospital"
ACCOUNTS = (
    DemoAccount("dr.rivera", "physician", "Alex", "Rivera", npi_with_check_digit("123456789"),
                "CA", "Internal Medicine"),
    DemoAccount("np.chen", "nurse_practitioner", "Jordan", "Chen",
                npi_with_check_digit("987654321"), "CA", "Family Practice"),
    DemoAccount("staff.okafor", "admin_staff", "Sam", "Okafor", department="Billing Office"),
    DemoAccount("idp.admin", "admin", "Morgan", "Lee", department="Information Technology"),
)


@dataclass
class SeedResult:
    clients: list[dict[str, Any]]
    accounts: list[dict[str, Any]]
    clients_file: Path
    accounts_file: Path

    def as_dict(self) -> dict[str, Any]:
        return {"clients": self.clients, "accounts": self.accounts,
                "clients_file": str(self.clients_file),
                "accounts_file": str(self.accounts_file)}


# -- secret files ----------------------------------------------------------------------------
def read_secrets(path: Path) -> dict[str, dict[str, str]]:
    """The saved secrets; an unreadable or malformed file counts as lost."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) \
        else {}


def write_secrets(path: Path, data: dict[str, dict[str, str]]) -> None:
    """Write atomically with mode 0600 from the first byte (never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(tmp, path)
    os.chmod(path, 0o600)


def new_password(length: int = 20) -> str:
    """Random, with upper, lower, digit and symbol: meets the password policy."""
    classes = (string.ascii_uppercase, string.ascii_lowercase, string.digits, PASSWORD_SYMBOLS)
    alphabet = "".join(classes)
    chars = [secrets.choice(c) for c in classes]
    chars += [secrets.choice(alphabet) for _ in range(length - len(chars))]
    secrets.SystemRandom().shuffle(chars)
    return "".join(chars)


# -- clients ---------------------------------------------------------------------------------
def _client_fields(spec: DemoClient, base_url: str) -> dict[str, Any]:
    return {
        "client_name": spec.name,
        "redirect_uris": [validate_uri(f"{base_url}/callback", "redirect-uri")],
        "post_logout_redirect_uris": [validate_uri(f"{base_url}/", "post-logout-redirect-uri")],
        "backchannel_logout_uri": validate_uri(f"{base_url}/backchannel-logout",
                                               "backchannel-logout-uri"),
        "scope": spec.scope,
        "first_party": True,
        "require_pkce": spec.require_pkce,
        "introspect_any": spec.introspect_any,
        "token_endpoint_auth_method": "client_secret_basic",
        "disabled": False,
    }


def ensure_client(spec: DemoClient, base_url: str, known_secret: str | None
                  ) -> tuple[str, str]:
    """Create or correct one client; returns (status, client_secret)."""
    fields = _client_fields(spec, base_url)
    client = db.session.execute(
        select(Client).where(Client.client_id == spec.client_id)).scalar_one_or_none()
    if client is None:
        new = create_client(
            name=spec.name, redirect_uris=fields["redirect_uris"],
            post_logout_redirect_uris=fields["post_logout_redirect_uris"], scope=spec.scope,
            backchannel_logout_uri=fields["backchannel_logout_uri"], first_party=True,
            require_pkce=spec.require_pkce, introspect_any=spec.introspect_any,
            client_id=spec.client_id)
        if not known_secret:
            return "created", new.client_secret or ""
        new.client.client_secret_hash = digest(known_secret)  # keep the saved secret
        return "created", known_secret
    status = "unchanged"
    changed = sorted(k for k, v in fields.items() if getattr(client, k) != v)
    if changed:
        for name in changed:
            setattr(client, name, fields[name])
        audit.record("client.updated", client_id=spec.client_id, actor="demo-seed",
                     fields=changed)
        status = "updated"
    if known_secret and client.check_client_secret(known_secret):
        return status, known_secret
    secret = secrets.token_urlsafe(32)
    client.client_secret_hash = digest(secret)
    audit.record("client.secret_rotated", client_id=spec.client_id, actor="demo-seed")
    return "secret rotated", secret


NATIVE_CLIENT_ID = "native-cli"
NATIVE_REDIRECT = "http://127.0.0.1/callback"


def ensure_native_client() -> str:
    """The public client of `python -m clients.native_cli` (RFC 8252: loopback, any port)."""
    client = db.session.execute(
        select(Client).where(Client.client_id == NATIVE_CLIENT_ID)).scalar_one_or_none()
    if client is not None:
        return "unchanged"
    create_client(name="Command-line app (native)", redirect_uris=[NATIVE_REDIRECT],
                  public=True, loopback_any_port=True, first_party=True,
                  scope="openid profile email roles offline_access", client_id=NATIVE_CLIENT_ID,
                  actor="demo-seed")
    return "created"


SMART_APP_CLIENT_ID = "smart-app"
SMART_APP_SCOPE = "openid fhirUser launch launch/patient patient/*.rs offline_access"


def ensure_smart_app(base_url: str) -> str:
    """The demo third-party SMART app (clients/smart_app): a public client (PKCE), not first
    party (the user consents), registered for EHR and standalone launch."""
    redirect_uri = validate_uri(f"{base_url}/callback", "redirect-uri")
    client = db.session.execute(
        select(Client).where(Client.client_id == SMART_APP_CLIENT_ID)).scalar_one_or_none()
    if client is None:
        create_client(name="Patient summary (SMART app)", redirect_uris=[redirect_uri],
                      public=True, scope=SMART_APP_SCOPE, client_id=SMART_APP_CLIENT_ID,
                      actor="demo-seed")
        return "created"
    if client.redirect_uris == [redirect_uri] and client.scope == SMART_APP_SCOPE \
            and not client.disabled:
        return "unchanged"
    client.redirect_uris, client.scope, client.disabled = [redirect_uri], SMART_APP_SCOPE, False
    audit.record("client.updated", client_id=SMART_APP_CLIENT_ID, actor="demo-seed",
                 fields=["redirect_uris", "scope", "disabled"])
    return "updated"


# -- accounts --------------------------------------------------------------------------------
def ensure_account(spec: DemoAccount, known_password: str | None) -> tuple[str, str]:
    """Create one account, or make its password the saved one; returns (status, password)."""
    user = db.session.execute(
        select(User).where(User.username == spec.username)).scalar_one_or_none()
    if user is None:
        password = known_password or new_password()
        user = create_user(username=spec.username, email=spec.email, role=spec.role,
                           password=password, npi=spec.npi, given_name=spec.given_name,
                           family_name=spec.family_name, facility=FACILITY,
                           department=spec.department, license_state=spec.license_state)
        user.email_verified = True
        audit.record("user.created", user_id=user.id, actor="demo-seed", role=spec.role)
        return "created", password
    if known_password and verify_password(user, known_password):
        return "unchanged", known_password
    password = new_password()
    set_password(user, password)
    audit.record("user.password_reset", user_id=user.id, actor="demo-seed")
    return "password reset", password


def _holds_secret(factor: Factor, secret: str) -> bool:
    """Does this TOTP factor's encrypted seed decrypt to `secret`? (A seed encrypted with a
    data key that is gone does not.)"""
    try:
        stored = crypto.decrypt(factor.secret_encrypted or "")
    except (InvalidToken, ValueError):
        return False
    return hmac.compare_digest(stored.encode(), secret.encode())


def ensure_totp(user: User, known_secret: str | None) -> tuple[str, str]:
    """Give the account a confirmed authenticator-app factor whose seed is the saved one;
    returns (status, base32 seed). Created like an app enrolled and confirmed by its owner."""
    known = known_secret if isinstance(known_secret, str) and TOTP_SEED.fullmatch(
        known_secret) else None
    factors = db.session.execute(select(Factor).where(
        Factor.user_id == user.id, Factor.kind == "totp")).scalars().all()
    if known and any(f.confirmed_at is not None and _holds_secret(f, known) for f in factors):
        return "unchanged", known
    ours = [f for f in factors if f.label == TOTP_LABEL]
    for factor in ours:  # a seed nobody has any more, or not the saved one
        db.session.delete(factor)
        audit.record("mfa.removed", user_id=user.id, factor="totp", actor="demo-seed")
    # The saved seed comes back for a fresh database (like the password); a mismatch rotates.
    secret = known if known and not ours else totp.new_secret()
    now = clock.now()
    db.session.add(Factor(user_id=user.id, kind="totp", label=TOTP_LABEL, created_at=now,
                          confirmed_at=now, secret_encrypted=crypto.encrypt(secret)))
    audit.record("mfa.enrolled", user_id=user.id, factor="totp", label=TOTP_LABEL,
                 actor="demo-seed")
    return ("authenticator reset" if ours else "enrolled"), secret


# Facilities (and departments) the onboarding form offers; admins maintain them afterwards.
FACILITIES = {
    FACILITY: ("Internal Medicine", "Family Practice", "Billing Office",
               "Information Technology"),
    "Fictional Riverside Clinic": ("Family Practice", "Pediatrics"),
}


def ensure_facilities() -> None:
    """Create the demo facilities and departments that are missing (never renames or deletes
    what an admin changed)."""
    for name, departments in FACILITIES.items():
        facility = db.session.execute(select(Facility).where(Facility.name == name)
                                      ).scalar_one_or_none()
        if facility is None:
            facility = Facility(name=name, active=True, created_at=clock.now())
            db.session.add(facility)
            db.session.flush()
            audit.record("admin.facility_created", actor="demo-seed", facility=facility.id,
                         name=name)
        have = {d.name for d in facility.departments}
        for department in departments:
            if department not in have:
                db.session.add(Department(facility_id=facility.id, name=department))
    db.session.flush()


def _user(username: str) -> User:
    return db.session.execute(select(User).where(User.username == username)).scalar_one()


# -- the seed --------------------------------------------------------------------------------
def seed(*, instance_dir: Path | None = None, portal_url: str = DEFAULT_PORTAL_URL,
         ehr_url: str = DEFAULT_EHR_URL, smart_app_url: str = DEFAULT_SMART_APP_URL
         ) -> SeedResult:
    """Register the demo clients and accounts (in an app context); commit; save secrets."""
    instance = Path(instance_dir or settings().instance_dir)
    clients_file, accounts_file = instance / CLIENTS_FILE, instance / ACCOUNTS_FILE
    base_urls = {"portal": portal_url.rstrip("/"), "ehr": ehr_url.rstrip("/")}
    saved_clients, saved_accounts = read_secrets(clients_file), read_secrets(accounts_file)

    client_rows, client_secrets = [], {}
    for key, demo_client in CLIENTS.items():
        known = saved_clients.get(demo_client.client_id, {}).get("client_secret")
        status, secret = ensure_client(demo_client, base_urls[key], known)
        client_secrets[demo_client.client_id] = {"client_secret": secret}
        client_rows.append({"client_id": demo_client.client_id, "name": demo_client.name,
                            "status": status, "redirect_uri": f"{base_urls[key]}/callback"})

    ensure_native_client()
    ensure_facilities()
    ensure_smart_app(smart_app_url.rstrip("/"))

    account_rows, passwords = [], {}
    for spec in ACCOUNTS:
        saved = saved_accounts.get(spec.username, {})
        status, password = ensure_account(spec, saved.get("password"))
        user = _user(spec.username)
        totp_status, totp_secret = ensure_totp(user, saved.get("totp_secret"))
        passwords[spec.username] = {"password": password, "role": spec.role,
                                    "totp_secret": totp_secret}
        account_rows.append({"username": spec.username, "role": spec.role,
                             "name": f"{spec.given_name} {spec.family_name}", "npi": spec.npi,
                             "password": password, "status": status,
                             "totp_secret": totp_secret,
                             "totp_uri": totp.provisioning_uri(user, totp_secret),
                             "totp_status": totp_status})

    # Files first: a crash before the commit leaves secrets the next run can check and fix,
    # a crash after it would lose them.
    if saved_clients != client_secrets:
        write_secrets(clients_file, client_secrets)
    if saved_accounts != passwords:
        write_secrets(accounts_file, passwords)
    for path in (clients_file, accounts_file):
        os.chmod(path, 0o600)
    db.session.commit()
    return SeedResult(client_rows, account_rows, clients_file, accounts_file)
