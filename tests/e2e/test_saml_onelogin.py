"""A second SAML service provider built with another SAML library than the IdP's: OneLogin's
python3-saml (with the `xmlsec` bindings) behind a small Flask app on loopback. In Chromium it
signs in SP-initiated through password, TOTP and the daily acknowledgment, shows the
attributes it verified, logs out by SLO (HTTP-Redirect, signed), and afterwards its protected
page leads to our login page again; then it signs in IdP-initiated through the portal's tile
(the provider portal, clients/portal, an OIDC relying party served in-process on loopback: its
tile links to /saml/launch, learnt from the IdP's /saml/apps)."""

from __future__ import annotations

import html
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from flask import Flask, redirect, request, session
from onelogin.saml2.auth import OneLogin_Saml2_Auth
from onelogin.saml2.settings import OneLogin_Saml2_Settings
from sqlalchemy import select
from werkzeug.serving import make_server

from clients import portal as portal_app
from idp.extensions import db
from idp.sessions.models import SsoSession
from tests.e2e.conftest import Person, free_port, seed_client
from tests.e2e.saml_sps import register_sp
from tests.e2e.test_saml_mellon import _sign_in
from tests.helpers import PASSWORD, TOTP_SECRETS, make_user
from tests.integration.saml_sp import make_keypair

pytestmark = pytest.mark.e2e

RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"


@dataclass
class OneLoginSp:
    base: str
    entity_id: str
    metadata_file: Path
    errors: list[str]

    def url(self, path: str) -> str:
        return self.base + path


def _settings(base: str, idp: str, idp_cert: str, key: str, cert: str) -> dict:
    return {
        "strict": True,
        "sp": {"entityId": f"{base}/metadata",
               "assertionConsumerService": {"url": f"{base}/acs", "binding":
                                            "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"},
               "singleLogoutService": {"url": f"{base}/sls", "binding":
                                       "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"},
               "NameIDFormat": "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
               "x509cert": cert, "privateKey": key},
        "idp": {"entityId": f"{idp}/saml/metadata",
                "singleSignOnService": {"url": f"{idp}/saml/sso", "binding":
                                        "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"},
                "singleLogoutService": {"url": f"{idp}/saml/slo", "binding":
                                        "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"},
                "x509cert": idp_cert},
        "security": {"authnRequestsSigned": True, "logoutRequestSigned": True,
                     "logoutResponseSigned": True, "wantAssertionsSigned": True,
                     "wantMessagesSigned": False, "signatureAlgorithm": RSA_SHA256,
                     "digestAlgorithm": "http://www.w3.org/2001/04/xmlenc#sha256"},
    }


def _sp_app(settings: dict, errors: list[str]) -> Flask:
    app = Flask("onelogin-sp")
    app.secret_key = "onelogin-test-sp"  # noqa: S105 - a throw-away test SP's cookie key

    def auth() -> OneLogin_Saml2_Auth:
        return OneLogin_Saml2_Auth({
            "https": "off", "http_host": request.host, "script_name": request.path,
            "get_data": request.args.copy(), "post_data": request.form.copy(),
            "query_string": request.query_string.decode()}, settings)

    @app.get("/protected")
    def protected():  # noqa: ANN202
        if "attrs" not in session:
            handler = auth()
            login = handler.login(return_to=request.url)
            session["request_id"] = handler.get_last_request_id()  # InResponseTo checked
            return redirect(login)
        rows = "".join(f'<dt>{html.escape(k)}</dt><dd id="{html.escape(k)}">'
                       f'{html.escape(",".join(v))}</dd>' for k, v in session["attrs"].items())
        return f"<!doctype html><title>OneLogin SP</title><h1>OneLogin protected page</h1>" \
               f"<dl>{rows}</dl>"

    @app.post("/acs")
    def acs():  # noqa: ANN202
        handler = auth()
        handler.process_response(request_id=session.pop("request_id", None))
        if handler.get_errors() or not handler.is_authenticated():
            errors.append(f"{handler.get_errors()} {handler.get_last_error_reason()}")
            return "refused", 403
        session["attrs"] = handler.get_attributes()
        session["name_id"] = handler.get_nameid()
        session["name_id_format"] = handler.get_nameid_format()
        session["nq"] = handler.get_nameid_nq()
        session["spnq"] = handler.get_nameid_spnq()
        session["session_index"] = handler.get_session_index()
        target = request.form.get("RelayState") or "/protected"
        return redirect(target if target.startswith(request.host_url) else "/protected")

    @app.get("/logout")
    def logout():  # noqa: ANN202
        return redirect(auth().logout(
            return_to=request.host_url + "bye", name_id=session.get("name_id"),
            session_index=session.get("session_index"), nq=session.get("nq"),
            name_id_format=session.get("name_id_format"), spnq=session.get("spnq")))

    @app.get("/sls")
    def sls():  # noqa: ANN202
        handler = auth()
        target = handler.process_slo(delete_session_cb=session.clear)
        if handler.get_errors():
            errors.append(f"slo {handler.get_errors()} {handler.get_last_error_reason()}")
            return "refused", 403
        return redirect(target or "/bye")

    @app.get("/bye")
    def bye():  # noqa: ANN202
        return "<!doctype html><p>Signed out of the OneLogin SP</p>"

    return app


@pytest.fixture
def onelogin(idp_server, tmp_path) -> Iterator[OneLoginSp]:
    import requests

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    key_path, cert_path = make_keypair(tmp_path, "onelogin")
    metadata = requests.get(idp_server.url("/saml/metadata"), timeout=10).text
    idp_cert = metadata.split("X509Certificate>", 1)[1].split("<", 1)[0]
    settings = _settings(base, idp_server.base, idp_cert, key_path.read_text(),
                         cert_path.read_text())
    sp_metadata = OneLogin_Saml2_Settings(settings).get_sp_metadata()
    metadata_file = tmp_path / "onelogin.xml"
    metadata_file.write_bytes(sp_metadata if isinstance(sp_metadata, bytes)
                              else sp_metadata.encode())
    errors: list[str] = []
    with _serve(_sp_app(settings, errors), port):
        yield OneLoginSp(base, f"{base}/metadata", metadata_file, errors)


@contextmanager
def _serve(app: Flask, port: int) -> Iterator[None]:
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()


@pytest.fixture
def portal(idp_server, ctx, tmp_path) -> Iterator[str]:
    """The provider portal (a first-party OIDC client of the IdP, as `make run` registers
    it) on a free loopback port, in a thread of this process: its base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    rp = seed_client(name="Provider Portal", scope=portal_app.SCOPE,
                     redirect_uri=f"{base}/callback", first_party=True,
                     post_logout_redirect_uris=[f"{base}/"])
    app = portal_app.create_app({
        "IDP_ISSUER": idp_server.base, "PORTAL_URL": base, "PORTAL_CLIENT_ID": rp.client_id,
        "PORTAL_CLIENT_SECRET": rp.client_secret,
        "PORTAL_SECRET_KEY": "onelogin-test-portal-cookie-key",  # noqa: S106 - throw-away
        "PORTAL_STATE_DIR": str(tmp_path), "EHR_API": f"http://127.0.0.1:{free_port()}"})
    with _serve(app, port):
        yield base


@pytest.fixture
def unacknowledged(ctx) -> Person:
    user = make_user("drone", npi="1245319599", acknowledged=False, facility="North Clinic",
                     given_name="Rui", family_name="Okafor")
    found = Person(user.username, user.npi, user.subject, PASSWORD, user.email,
                   TOTP_SECRETS[user.username])
    db.session.commit()
    return found


def test_onelogin_sp_signs_in_both_ways_and_logs_out(idp_server, env, browser, unacknowledged,
                                                     onelogin, portal):
    person = unacknowledged
    assert register_sp(env, onelogin.metadata_file, "--name", "OneLogin SP")["entity_id"] == \
        onelogin.entity_id
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(onelogin.url("/protected"))
        _sign_in(page, idp_server, person)
        page.wait_for_url(f"{idp_server.base}/account/acknowledge**")
        page.locator("#acknowledge").check()
        page.get_by_role("button", name="Continue").click()
        page.wait_for_url(onelogin.url("/protected"))
        assert onelogin.errors == []
        assert page.locator("h1").inner_text() == "OneLogin protected page"
        assert page.locator("#email").inner_text() == person.email
        assert page.locator("#roles").inner_text() == "physician"
        assert page.locator("#npi").inner_text() == "1245319599"
        assert page.locator("#facility").inner_text() == "North Clinic"

        page.goto(onelogin.url("/logout"))
        page.wait_for_url(onelogin.url("/bye"))
        assert onelogin.errors == []
        db.session.rollback()
        assert db.session.execute(select(SsoSession).where(
            SsoSession.ended_at.is_(None))).scalars().all() == []
        page.goto(onelogin.url("/protected"))
        page.wait_for_url(f"{idp_server.base}/login?**")

        # IdP-initiated through the portal's tile: signed in at the OIDC portal (password,
        # TOTP), its tile for the SP opens /saml/launch, and the SP's page follows with no
        # second password prompt (the IdP's SSO session).
        page.goto(f"{portal}/")
        page.locator("#sign-in").click()
        _sign_in(page, idp_server, person)
        page.wait_for_url(f"{portal}/")
        tile = page.locator("#apps").get_by_role("link", name="OneLogin SP")
        assert tile.get_attribute("href") == (
            idp_server.url("/saml/launch?sp=") + quote(onelogin.entity_id, safe=""))
        visited: list[str] = []
        page.on("framenavigated", lambda frame: visited.append(frame.url)
                if frame == page.main_frame else None)
        tile.click()
        page.wait_for_url(onelogin.url("/protected"))
        assert onelogin.errors == []
        assert page.locator("#preferred_username").inner_text() == person.username
        assert not [u for u in visited if u.startswith(idp_server.url("/login"))], visited
    finally:
        context.close()
