"""A SAML service provider for integration tests, built on pysaml2's client side
(saml2.client.Saml2Client): its own key and certificate, its metadata, signed AuthnRequests
and LogoutRequests, and the checks an SP makes of our Responses."""

from __future__ import annotations

import base64
import re
import zlib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, BINDING_SOAP, xmldsig
from saml2.client import Saml2Client
from saml2.config import SPConfig
from saml2.metadata import entity_descriptor

from idp import clock

SP_BASE = "http://sp.test"


def make_keypair(directory: Path, name: str = "sp") -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = clock.now()
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .sign(key, hashes.SHA256()))
    key_path, cert_path = directory / f"{name}.key", directory / f"{name}.crt"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


@dataclass
class SamlTestSp:
    entity_id: str
    key_file: Path
    cert_file: Path
    base: str = SP_BASE
    idp_metadata: str | None = None
    # its metadata offers its certificate for encryption too (KeyDescriptor use="encryption")
    # and it decrypts EncryptedAssertions with its key
    encrypts: bool = False
    # its metadata lists a SOAP SingleLogoutService beside the HTTP-Redirect one (False: it
    # hears of a logout at the IdP only through the browser, front-channel)
    soap: bool = True

    @property
    def acs(self) -> str:
        return f"{self.base}/acs"

    def config(self) -> SPConfig:
        conf: dict = {
            "entityid": self.entity_id,
            "xmlsec_binary": "/usr/bin/xmlsec1",
            "key_file": str(self.key_file), "cert_file": str(self.cert_file),
            "signing_algorithm": xmldsig.SIG_RSA_SHA256,
            "digest_algorithm": xmldsig.DIGEST_SHA256,
            "accepted_time_diff": 60,
            "allow_unknown_attributes": True,
            "service": {"sp": {
                "endpoints": {
                    "assertion_consumer_service": [(self.acs, BINDING_HTTP_POST)],
                    "single_logout_service": [(f"{self.base}/slo", BINDING_HTTP_REDIRECT)]
                    + ([(f"{self.base}/soap", BINDING_SOAP)] if self.soap else []),
                },
                "authn_requests_signed": True,
                "logout_requests_signed": True,
                "want_assertions_signed": True,
                "want_response_signed": False,
                "allow_unsolicited": True,
            }},
        }
        if self.encrypts:
            conf["encryption_keypairs"] = [{"key_file": str(self.key_file),
                                            "cert_file": str(self.cert_file)}]
        if self.idp_metadata:
            conf["metadata"] = {"inline": [self.idp_metadata]}
        return SPConfig().load(conf)

    def metadata(self) -> bytes:
        return str(entity_descriptor(self.config())).encode()

    def client(self) -> Saml2Client:
        assert self.idp_metadata, "load the IdP's metadata first"
        return Saml2Client(config=self.config())

    def authn_redirect(self, idp_entity: str, relay_state: str = "rs-1", **kwargs) -> str:
        """The /saml/sso?... URL (path and query) of a signed Redirect-binding request."""
        _, info = self.client().prepare_for_authenticate(
            entityid=idp_entity, relay_state=relay_state, binding=BINDING_HTTP_REDIRECT,
            sigalg=xmldsig.SIG_RSA_SHA256, digest_alg=xmldsig.DIGEST_SHA256, **kwargs)
        location = dict(info["headers"])["Location"]
        parts = urlsplit(location)
        return f"{parts.path}?{parts.query}"

    def authn_request_xml(self, idp_entity: str, destination: str, **kwargs) -> str:
        _, request = self.client().create_authn_request(destination, **kwargs)
        return str(request)



def form_fields(html: str) -> dict[str, str]:
    import html as html_lib

    return {m.group(1): html_lib.unescape(m.group(2)) for m in re.finditer(
        r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html)}


def form_action(html: str) -> str:
    found = re.search(r'<form method="post" action="([^"]+)"', html)
    assert found, html[:500]
    import html as html_lib

    return html_lib.unescape(found.group(1))


def redirect_payload(xml: str) -> str:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return base64.b64encode(compressor.compress(xml.encode()) + compressor.flush()).decode()


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
