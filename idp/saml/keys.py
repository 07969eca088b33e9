"""The SAML signing key and certificate (RSA, self-signed: SAML trusts the certificate in our
metadata, not a CA) and the pairwise NameID secret, generated at first start into
`<keys dir>/saml/` (mode 0600, git-ignored like every key) and shared by the nodes that share
the keys directory."""

from __future__ import annotations

import fcntl
import os
import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from idp import clock

KEY, CERT, PAIRWISE = "signing.key", "signing.crt", "pairwise.secret"
RSA_BITS = 3072
CERT_YEARS = 10


@dataclass(frozen=True)
class KeyFiles:
    key_file: Path
    cert_file: Path
    pairwise_secret: bytes

    def cert_body(self) -> str:
        """The certificate's base64 body (a KeyDescriptor's X509Certificate)."""
        lines = self.cert_file.read_text().strip().splitlines()
        return "".join(line for line in lines if not line.startswith("-----"))


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def ensure(keys_dir: Path, entity_id: str) -> KeyFiles:
    """The key files, generated under a file lock when absent."""
    directory = keys_dir / "saml"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_path, cert_path, secret_path = (directory / n for n in (KEY, CERT, PAIRWISE))
    if not (key_path.exists() and cert_path.exists() and secret_path.exists()):
        with open(directory / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (key_path.exists() and cert_path.exists()):
                key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
                name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                     entity_id[:64] or "saml-idp")])
                now = clock.now()
                cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                        .public_key(key.public_key()).serial_number(x509.random_serial_number())
                        .not_valid_before(now - timedelta(minutes=5))
                        .not_valid_after(now + timedelta(days=365 * CERT_YEARS))
                        .sign(key, hashes.SHA256()))
                _write(key_path, key.private_bytes(serialization.Encoding.PEM,
                                                   serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
                _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
            if not secret_path.exists():
                _write(secret_path, secrets.token_bytes(32))
    return KeyFiles(key_path, cert_path, secret_path.read_bytes())
