"""A real OpenLDAP slapd for the LDAP federation tests: its own configuration in a temporary
directory, an Active Directory-like schema subset, a free loopback port, seeded from LDIF,
started and stopped by pid (never by name: a system slapd may be running on 389).

The schema subset: inetOrgPerson (uid, mail, givenName, sn, employeeNumber) plus the AD
attributes the IdP reads (sAMAccountName, userAccountControl with its ACCOUNTDISABLE bit 0x2,
lockoutTime) and an NPI attribute, in one auxiliary class; groups are groupOfNames kept in
each member's memberOf by slapd's memberof overlay, as AD does.

slapd runs with `-d stats`: every operation is logged to a file, and `binds(dn)` counts the
simple binds the server received for a DN (how many passwords the IdP sent to the directory).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import ldap3
import pytest

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")
BASE = "dc=hospital,dc=test"
PEOPLE = f"ou=people,{BASE}"
GROUPS = f"ou=groups,{BASE}"
ROOT_DN = f"cn=admin,{BASE}"
ROOT_PASSWORD = "slapd-root-test-only"
SERVICE_DN = f"cn=idp-service,ou=services,{BASE}"
SERVICE_PASSWORD = "idp-service-test-only"
PASSWORD = "Directory-Pass-2026!"

AD_SCHEMA = """\
attributetype ( 1.2.840.113556.1.4.221 NAME 'sAMAccountName'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.8 NAME 'userAccountControl'
  EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.662 NAME 'lockoutTime'
  EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.99999.1.1 NAME 'hospitalNPI'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.99999.2.1 NAME 'hospitalADUser' AUXILIARY
  MAY ( sAMAccountName $ userAccountControl $ lockoutTime $ hospitalNPI ) )
"""

CONFIG = """\
include {schema}/core.schema
include {schema}/cosine.schema
include {schema}/inetorgperson.schema
include {dir}/ad.schema
pidfile {dir}/slapd.pid
modulepath {modules}
moduleload back_mdb
moduleload memberof
database mdb
suffix "{base}"
rootdn "{root}"
rootpw {rootpw}
directory {dir}/data
maxsize 16777216
overlay memberof
access to attrs=userPassword
  by self read
  by anonymous auth
  by * none
access to *
  by dn.exact="{service}" read
  by * none
"""


def person(uid: str, *, given: str, family: str, email: str, employee: str,
           npi: str | None = None, disabled: bool = False, locked: bool = False,
           password: str = PASSWORD) -> str:
    lines = [f"dn: uid={uid},{PEOPLE}", "objectClass: inetOrgPerson",
             "objectClass: hospitalADUser", f"uid: {uid}", f"sAMAccountName: {uid}",
             f"cn: {given} {family}", f"givenName: {given}", f"sn: {family}",
             f"mail: {email}", f"employeeNumber: {employee}", f"userPassword: {password}",
             f"userAccountControl: {514 if disabled else 512}",
             f"lockoutTime: {133000000000000000 if locked else 0}"]
    if npi:
        lines.append(f"hospitalNPI: {npi}")
    return "\n".join(lines) + "\n"


def group(name: str, members: list[str]) -> str:
    lines = [f"dn: cn={name},{GROUPS}", "objectClass: groupOfNames", f"cn: {name}"]
    lines += [f"member: uid={m},{PEOPLE}" for m in members]
    return "\n".join(lines) + "\n"


def seed() -> str:
    """The hospital's directory: clinicians, a nurse, an admin clerk, a disabled and a locked
    account, and the groups mapped to roles in the tests' policy."""
    entries = [
        f"dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: hospital\n"
        "o: Test Hospital\n",
        f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n",
        f"dn: {GROUPS}\nobjectClass: organizationalUnit\nou: groups\n",
        f"dn: ou=services,{BASE}\nobjectClass: organizationalUnit\nou: services\n",
        f"dn: {SERVICE_DN}\nobjectClass: person\ncn: idp-service\nsn: service\n"
        f"userPassword: {SERVICE_PASSWORD}\n",
        person("ajones", given="Alice", family="Jones", email="ajones@hospital.test",
               employee="E1001", npi="1234567893"),
        person("bnguyen", given="Binh", family="Nguyen", email="bnguyen@hospital.test",
               employee="E1002"),
        person("cclerk", given="Carol", family="Clerk", email="cclerk@hospital.test",
               employee="E1003"),
        person("ddisabled", given="Dana", family="Disabled", email="dd@hospital.test",
               employee="E1004", disabled=True),
        person("llocked", given="Lee", family="Locked", email="ll@hospital.test",
               employee="E1005", locked=True),
        group("Physicians", ["ajones", "bnguyen", "ddisabled", "llocked"]),
        group("Front Desk", ["cclerk"]),
    ]
    return "\n".join(entries)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Slapd:
    """One slapd process of this test, on `port` (fixed for the test session, so an app built
    once can reach every fresh server)."""

    def __init__(self, port: int, tls_port: int | None = None) -> None:
        self.port = port
        self.url = f"ldap://127.0.0.1:{port}"
        self.tls_port = tls_port  # also ldaps:// there, and StartTLS on `port`
        self.ldaps_url = f"ldaps://127.0.0.1:{tls_port}" if tls_port else None
        self.tmp = tempfile.TemporaryDirectory(prefix="slapd-")
        self.dir = Path(self.tmp.name)
        self.log = self.dir / "slapd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        (self.dir / "data").mkdir()
        (self.dir / "ad.schema").write_text(AD_SCHEMA)
        self.conf = self.dir / "slapd.conf"
        config = CONFIG.format(schema=SCHEMA_DIR, dir=self.dir, modules=MODULE_DIR, base=BASE,
                               root=ROOT_DN, rootpw=ROOT_PASSWORD, service=SERVICE_DN)
        self.ca_file: Path | None = None
        if tls_port:
            self.ca_file = self._certificates()
            config = (f"TLSCACertificateFile {self.ca_file}\n"
                      f"TLSCertificateFile {self.dir / 'server.pem'}\n"
                      f"TLSCertificateKeyFile {self.dir / 'server.key'}\n") + config
        self.conf.write_text(config)
        ldif = self.dir / "seed.ldif"
        # Offline load; the memberof overlay fills memberOf only on online writes, so groups
        # are added through the server in start().
        people = "\n\n".join(e for e in seed().split("\n\n") if "groupOfNames" not in e)
        ldif.write_text(people)
        done = subprocess.run([SLAPADD, "-q", "-f", str(self.conf), "-l", str(ldif)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"slapadd failed: {done.stderr[-2000:]}")

    def _certificates(self) -> Path:
        """A CA of this server only and a certificate for 127.0.0.1 signed by it."""
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test Hospital Root CA")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5))
              .not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .sign(ca_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
                .issuer_name(ca_name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        pem = serialization.Encoding.PEM
        (self.dir / "ca.pem").write_bytes(ca.public_bytes(pem))
        (self.dir / "server.pem").write_bytes(cert.public_bytes(pem))
        (self.dir / "server.key").write_bytes(key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        return self.dir / "ca.pem"

    def start(self) -> None:
        listen = f"{self.url}/" + (f" {self.ldaps_url}/" if self.ldaps_url else "")
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [SLAPD, "-h", listen, "-f", str(self.conf), "-d", "stats"],
                stdout=out, stderr=out)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"slapd did not start: {self.log.read_text()[-2000:]}") from None
                time.sleep(0.05)

    def load_groups(self) -> None:
        with self.admin() as conn:
            for entry in seed().split("\n\n"):
                if "groupOfNames" in entry:
                    lines = entry.strip().splitlines()
                    dn = lines[0].split(": ", 1)[1]
                    members = [ln.split(": ", 1)[1] for ln in lines if ln.startswith("member:")]
                    cn = dn.split(",", 1)[0].split("=", 1)[1]
                    assert conn.add(dn, ["groupOfNames"], {"cn": cn, "member": members}), \
                        conn.result

    def admin(self) -> ldap3.Connection:
        return ldap3.Connection(ldap3.Server(self.url), ROOT_DN, ROOT_PASSWORD,
                                auto_bind=True, raise_exceptions=False)

    def stop(self) -> None:
        """By pid: SIGTERM, then SIGKILL if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        """The directory goes down hard (SIGKILL), as a crashed domain controller does."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def close(self) -> None:
        self.stop()
        self.tmp.cleanup()

    # -- what the server saw -------------------------------------------------------------
    def binds(self, dn: str) -> int:
        """Simple binds with a password the server received for `dn` (its stats log)."""
        text = self.log.read_text(errors="replace")
        pattern = re.compile(r'BIND dn="' + re.escape(dn) + r'" method=128', re.IGNORECASE)
        return len(pattern.findall(text))

    def all_binds(self) -> int:
        return len(re.findall(r"BIND dn=\"[^\"]*\" method=128",
                              self.log.read_text(errors="replace")))

    # -- directory changes of the tests ---------------------------------------------------
    def delete(self, uid: str) -> None:
        with self.admin() as conn:
            assert conn.delete(f"uid={uid},{PEOPLE}"), conn.result

    def modify(self, uid: str, **values: object) -> None:
        with self.admin() as conn:
            changes = {k: [(ldap3.MODIFY_REPLACE, [v])] for k, v in values.items()}
            assert conn.modify(f"uid={uid},{PEOPLE}", changes), conn.result


def user_dn(uid: str) -> str:
    return f"uid={uid},{PEOPLE}"


# -- pytest fixtures (import them into a test module) -------------------------------------
LDAP_POLICY = {"enabled": True, "user_base": PEOPLE, "user_filter": "(objectClass=inetOrgPerson)",
               "username_attribute": "sAMAccountName", "guid_attribute": "entryUUID",
               "npi_attribute": "hospitalNPI", "start_tls": False, "plaintext_loopback": True,
               "connect_timeout": 2, "operation_timeout": 5}


@pytest.fixture(scope="session")
def ldap_port() -> int:
    return free_port()


@pytest.fixture
def slapd(ldap_port: int):
    """A fresh directory for each test (seeded, groups added online for memberOf)."""
    server = Slapd(ldap_port)
    try:
        server.start()
        server.load_groups()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def ldap_env(env: dict[str, str], ldap_port: int) -> dict[str, str]:
    return {**env, "LDAP_URL": f"ldap://127.0.0.1:{ldap_port}", "LDAP_BIND_DN": SERVICE_DN,
            "LDAP_BIND_PASSWORD": SERVICE_PASSWORD}


@pytest.fixture(scope="session")
def ldap_app(app, ldap_env: dict[str, str]):
    """The IdP with LDAP federation on, over the same database as `app` (whose fixture applied
    the migrations and empties the tables after each test)."""
    from idp import create_app
    from idp.config import Settings
    from tests.conftest import TEST_POLICY, ClosingClient

    application = create_app(Settings.from_env(ldap_env),
                             policy_overrides={**TEST_POLICY, "federation.ldap": LDAP_POLICY})
    application.config["TESTING"] = True
    application.test_client_class = ClosingClient
    application.before_request_funcs.setdefault(None, []).insert(
        0, app.before_request_funcs[None][0])  # the `g` reset of the `app` fixture
    return application


@pytest.fixture
def lctx(ldap_app, slapd):
    from idp.federation.ldap import directory

    with ldap_app.app_context():
        directory.reset_pool()  # connections to the previous test's server
        yield ldap_app
        directory.reset_pool()


@pytest.fixture
def lclient(ldap_app, lctx):
    return ldap_app.test_client()


def ldap_policy_dir(target: Path) -> Path:
    """A copy of the packaged policies with the tests' [ldap] section (IDP_POLICY_DIR for the
    processes the tests start: `idp ldap sync`, gunicorn)."""
    import json
    import shutil
    import tomllib

    from idp.config import POLICY_DIR

    shutil.copytree(POLICY_DIR, target)
    data = tomllib.loads((POLICY_DIR / "federation.toml").read_text())
    ldap = {**data["ldap"], **LDAP_POLICY}
    lines = ["[ldap]"] + [f"{k} = {json.dumps(v)}" for k, v in ldap.items()
                          if not isinstance(v, dict)]
    lines += ["[ldap.group_roles]"] + [f"{json.dumps(k)} = {json.dumps(v)}"
                                       for k, v in ldap["group_roles"].items()]
    (target / "federation.toml").write_text("\n".join(lines) + "\n")
    return target
