"""A real rsyslog (Debian `rsyslog` + `rsyslog-gnutls`) for the audit stream tests: its own
configuration in a temp dir, two loopback inputs (plain TCP, TLS with a server certificate from
a test CA made with `cryptography`), each writing the raw messages it receives to a file of
its own; started and stopped by pid, restartable on the same ports."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import free_port

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def make_ca(directory: Path) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for 127.0.0.1 / localhost: (ca, cert, key) PEMs."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("audit stream test CA"))
          .issuer_name(_name("audit stream test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("localhost"))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


class Rsyslog:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ca, cert, key = make_ca(directory)
        self.tcp_port, self.tls_port = free_port(), free_port()
        self.tcp_file, self.tls_file = directory / "tcp.log", directory / "tls.log"
        (directory / "work").mkdir()
        self.conf = directory / "rsyslog.conf"
        self.pidfile = directory / "rsyslogd.pid"
        self.log = directory / "rsyslogd.out"
        self.conf.write_text(f"""
global(workDirectory="{directory / 'work'}" maxMessageSize="64k"
       defaultNetstreamDriverCAFile="{self.ca}"
       defaultNetstreamDriverCertFile="{cert}"
       defaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" maxSessions="50")
template(name="raw" type="string" string="%rawmsg%\\n")
ruleset(name="plain") {{ action(type="omfile" file="{self.tcp_file}" template="raw") }}
ruleset(name="tls") {{ action(type="omfile" file="{self.tls_file}" template="raw") }}
input(type="imtcp" address="127.0.0.1" port="{self.tcp_port}" ruleset="plain")
input(type="imtcp" address="127.0.0.1" port="{self.tls_port}" ruleset="tls"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
""")
        self.proc: subprocess.Popen | None = None

    def start(self) -> Rsyslog:
        out = self.log.open("a")
        self.proc = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(self.conf), "-i", str(self.pidfile)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rsyslogd exited: {self.log.read_text()[-2000:]}")
            if all(_listening(p) for p in (self.tcp_port, self.tls_port)):
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"rsyslogd did not listen: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None
        self.pidfile.unlink(missing_ok=True)

    def lines(self, which: str) -> list[str]:
        path = self.tls_file if which == "tls" else self.tcp_file
        return path.read_text().splitlines() if path.exists() else []

    def wait_for(self, which: str, count: int, timeout: float = 20) -> list[str]:
        """The file's lines once it holds at least `count` (or what it has at the timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.lines(which)
            if len(found) >= count:
                return found
            time.sleep(0.1)
        return self.lines(which)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
