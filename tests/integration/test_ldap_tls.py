"""The directory over TLS: ldaps:// and ldap:// with StartTLS, the certificate checked against
the policy's CA file; a cleartext ldap:// without StartTLS and an unknown CA are refused (the
password never crosses the network in clear, never to a server that cannot prove itself)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from idp import create_app
from idp.accounts import service as accounts
from idp.accounts.models import User
from idp.config import Settings
from idp.extensions import db
from idp.federation.ldap import directory, service
from tests.conftest import TEST_POLICY
from tests.ldap_server import (
    LDAP_POLICY,
    PASSWORD,
    SERVICE_DN,
    SERVICE_PASSWORD,
    Slapd,
    free_port,
    user_dn,
)


@pytest.fixture
def tls_slapd():
    server = Slapd(free_port(), tls_port=free_port())
    try:
        server.start()
        yield server
    finally:
        server.close()


def _sign_in(env: dict[str, str], url: str, **ldap: object) -> accounts.LoginResult:
    application = create_app(Settings.from_env({
        **env, "LDAP_URL": url, "LDAP_BIND_DN": SERVICE_DN,
        "LDAP_BIND_PASSWORD": SERVICE_PASSWORD}),
        policy_overrides={**TEST_POLICY, "federation.ldap": {**LDAP_POLICY, **ldap}})
    with application.app_context():
        directory.reset_pool()
        try:
            result = accounts.authenticate("ajones", PASSWORD)
            db.session.commit()
            return result
        finally:
            directory.reset_pool()


def test_ldaps_and_starttls_with_the_ca_file(app, env, tls_slapd):
    ca = str(tls_slapd.ca_file)
    secure = {"plaintext_loopback": False, "ca_file": ca}
    result = _sign_in(env, tls_slapd.ldaps_url, **secure, start_tls=False)
    assert result.user is not None  # imported at first sign-in, over ldaps://
    assert _sign_in(env, tls_slapd.url, **secure, start_tls=True).user is not None
    assert tls_slapd.binds(user_dn("ajones")) == 2
    log = tls_slapd.log.read_text()
    assert "STARTTLS" in log


def test_cleartext_and_unknown_ca_are_refused(app, env, tls_slapd, tmp_path):
    plain = _sign_in(env, tls_slapd.url, plaintext_loopback=False, start_tls=False)
    assert plain.unavailable and plain.user is None
    other_ca = tmp_path / "other-ca.pem"
    other = Slapd(free_port(), tls_port=free_port())  # another CA, never started
    other_ca.write_bytes(other.ca_file.read_bytes())
    other.close()
    for url, start_tls in ((tls_slapd.ldaps_url, False), (tls_slapd.url, True)):
        refused = _sign_in(env, url, plaintext_loopback=False, ca_file=str(other_ca),
                           start_tls=start_tls)
        assert refused.unavailable and refused.user is None, url
    assert tls_slapd.all_binds() == 0  # not even the service account's password was sent
    with app.app_context():
        assert db.session.execute(select(User)).first() is None
    assert service.normalise_name("ajones") == "ajones"
