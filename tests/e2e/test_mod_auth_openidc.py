"""Apache httpd with mod_auth_openidc (Debian's apache2 + libapache2-mod-auth-openidc) as a
hospital portal would configure it: scope `openid profile email`, PKCE S256,
client_secret_basic, and OIDCRefreshAccessTokenBeforeExpiry so that it refreshes the access
token while the person works (our access tokens live 10 minutes: a one-hour margin makes
every request to the protected location refresh). Its logout handler
(`<redirect_uri>?logout=`) sends the stored ID token, refreshed by then, as id_token_hint to
the end_session endpoint.

What the session holds is read from response headers (test-only configuration), not from
the info hook: in Debian's 2.4.12 a refresh the info hook triggers is not saved in the
session, so the next request presents the rotated-away refresh token, which the IdP takes
for a reuse (family revoked). Page requests save their refreshes.

The fixture starts its own httpd on a free loopback port with a configuration in a temp dir,
and stops it by pid."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from sqlalchemy import select

from idp.accounts.models import User
from idp.extensions import db
from idp.oidc.models import RefreshToken
from idp.sessions.models import SsoSession
from tests.e2e.apache import MODULES, require_module, run_as, running_httpd
from tests.e2e.conftest import Server, browser_sign_in, free_port, seed_client
from tests.e2e.refresh_checks import at_hash, refused, verified_claims
from tests.helpers import Rp, register_secret

pytestmark = pytest.mark.e2e

SCOPE = "openid profile email"

CONFIG = """\
ServerRoot "{root}"
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile "{root}/httpd.pid"
DefaultRuntimeDir "{root}"
ErrorLog "{root}/error.log"
LogLevel warn auth_openidc:info
{user}
LoadModule mpm_event_module {modules}/mod_mpm_event.so
LoadModule authn_core_module {modules}/mod_authn_core.so
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule authz_user_module {modules}/mod_authz_user.so
LoadModule dir_module {modules}/mod_dir.so
LoadModule headers_module {modules}/mod_headers.so
LoadModule auth_openidc_module {modules}/mod_auth_openidc.so
DirectoryIndex index.html
DocumentRoot "{docroot}"
<Directory "{docroot}">
  Require all granted
</Directory>

OIDCProviderMetadataURL {issuer}/.well-known/openid-configuration
OIDCClientID {client_id}
OIDCClientSecret {client_secret}
OIDCRedirectURI http://127.0.0.1:{port}/protected/redirect_uri
OIDCCryptoPassphrase {passphrase}
OIDCScope "{scope}"
OIDCPKCEMethod S256
OIDCProviderTokenEndpointAuth client_secret_basic
OIDCRefreshAccessTokenBeforeExpiry 3600
OIDCSessionInactivityTimeout 3600
# What the session holds after each request, for the test to read (never in production):
# the tokens as environment variables, echoed in response headers.
OIDCPassClaimsAs environment
OIDCPassIDTokenAs serialized
OIDCPassRefreshToken On
<Location /protected>
  AuthType openid-connect
  Require valid-user
  Header always set X-Test-Id-Token "%{{OIDC_id_token}}e"
  Header always set X-Test-Access-Token "%{{OIDC_access_token}}e"
  Header always set X-Test-Refresh-Token "%{{OIDC_refresh_token}}e"
</Location>
"""


@dataclass(frozen=True)
class Portal:
    base: str
    rp: Rp
    log: Path

    def url(self, path: str) -> str:
        return self.base + path

    @property
    def redirect_uri(self) -> str:
        return self.url("/protected/redirect_uri")


@pytest.fixture
def portal(idp_server: Server, ctx) -> Iterator[Portal]:
    require_module("mod_auth_openidc.so", "libapache2-mod-auth-openidc")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    rp = seed_client(redirect_uri=f"{base}/protected/redirect_uri", name="Apache portal",
                     scope=SCOPE, post_logout_redirect_uris=[f"{base}/bye"])
    root = Path(tempfile.mkdtemp(prefix="mod-auth-openidc-"))
    docroot = root / "htdocs"
    (docroot / "protected").mkdir(parents=True)
    (docroot / "protected" / "index.html").write_text("<!doctype html><p>Portal home</p>")
    (docroot / "bye").write_text("<!doctype html><p>Signed out</p>")
    (docroot / "readyz").write_text('{"status": "ready"}')
    # httpd's children drop root (apache.run_as), and must read the document root.
    for path in (root, docroot, docroot / "protected"):
        path.chmod(0o755)
    passphrase = secrets.token_urlsafe(24)
    register_secret("mod_auth_openidc passphrase", passphrase)
    conf = root / "httpd.conf"
    conf.write_text(CONFIG.format(root=root, port=port, user=run_as(), modules=MODULES,
                                  docroot=docroot, issuer=idp_server.base,
                                  client_id=rp.client_id, client_secret=rp.client_secret,
                                  passphrase=passphrase, scope=SCOPE))
    conf.chmod(0o600)  # it holds the client secret; the root parent reads it
    try:
        with running_httpd(conf, base, "httpd (mod_auth_openidc)"):
            yield Portal(base, rp, root / "error.log")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _page(browser: requests.Session, portal: Portal, idp_server: Server) -> dict:
    """A page of the portal, and the tokens its session holds once the request is served
    (mod_auth_openidc refreshed before serving it)."""
    page = browser.get(portal.url("/protected/"), allow_redirects=False, timeout=10)
    assert page.status_code == 200 and "Portal home" in page.text, page.status_code
    tokens = {name: page.headers.get(f"X-Test-{name.title().replace('_', '-')}", "")
              for name in ("id_token", "access_token", "refresh_token")}
    assert all(tokens.values()), f"session without tokens: {sorted(page.headers)}"
    register_secret("refresh token", tokens["refresh_token"])
    return {**tokens, "claims": verified_claims(idp_server, tokens["id_token"])}


def test_mod_auth_openidc_signs_in_refreshes_twice_and_logs_out(idp_server, person, portal):
    browser = requests.Session()
    start = browser.get(portal.url("/protected/"), allow_redirects=False, timeout=10)
    assert start.status_code == 302, start.text[:500]
    authorize = start.headers["Location"]
    asked = {k: v[0] for k, v in parse_qs(urlsplit(authorize).query).items()}
    assert authorize.startswith(idp_server.url("/authorize?"))
    assert asked["scope"] == SCOPE and asked["code_challenge_method"] == "S256"
    callback = browser_sign_in(idp_server, authorize, person.username, person.password,
                               portal.redirect_uri, http=browser)
    back = browser.get(callback, allow_redirects=False, timeout=10)
    assert back.status_code == 302, (back.status_code, portal.log.read_text()[-2000:])
    assert back.headers["Location"] == portal.url("/protected/")
    db.session.rollback()
    sso = db.session.execute(select(SsoSession).join(User).where(
        User.username == person.username, SsoSession.ended_at.is_(None))).scalar_one()
    signed_in_at = int(sso.auth_time.timestamp())

    # Each page refreshes (the access token expires within the one-hour margin): two pages,
    # two refreshes, each answering a new ID token of the same authentication.
    seen: set[str] = set()
    previous: dict | None = None
    for _ in range(2):
        held = _page(browser, portal, idp_server)
        claims = held["claims"]
        assert held["refresh_token"] not in seen, "mod_auth_openidc did not refresh"
        seen.add(held["refresh_token"])
        assert claims["sub"] == person.subject and claims["auth_time"] == signed_in_at
        assert claims["sid"] == sso.id and claims["aud"] == [portal.rp.client_id]
        assert "nonce" not in claims  # a refresh's ID token (the sign-in's carried one)
        assert claims["at_hash"] == at_hash(held["access_token"])
        if previous is not None:
            for same in ("iss", "sub", "aud", "azp", "auth_time", "acr", "amr", "sid"):
                assert claims[same] == previous[same], same
            assert claims["iat"] >= previous["iat"]
        previous = claims
        latest = held
    db.session.rollback()
    rows = db.session.execute(select(RefreshToken).where(
        RefreshToken.client_id == portal.rp.client_id)).scalars().all()
    assert len(rows) == 3 and sum(r.rotated_at is not None for r in rows) == 2  # 2 refreshes
    assert all(r.session_bound for r in rows)

    # Its logout handler: to the end_session endpoint with the stored ID token as hint.
    out = browser.get(portal.redirect_uri, params={"logout": portal.url("/bye")},
                      allow_redirects=False, timeout=10)
    assert out.status_code == 302, out.text[:500]
    end_session = out.headers["Location"]
    assert end_session.startswith(idp_server.url("/logout?")), end_session
    sent = {k: v[0] for k, v in parse_qs(urlsplit(end_session).query).items()}
    assert sent["post_logout_redirect_uri"] == portal.url("/bye")
    assert sent["id_token_hint"] == latest["id_token"], "the hint is not the refreshed ID token"
    bye = browser.get(end_session, allow_redirects=False, timeout=10)
    assert bye.status_code == 302, bye.text[:500]
    assert bye.headers["Location"].startswith(portal.url("/bye"))
    assert browser.get(idp_server.url("/account"), allow_redirects=False,
                       timeout=10).status_code == 302  # signed out at the IdP
    refused(idp_server, portal.rp.client_id, portal.rp.client_secret, latest["refresh_token"])
