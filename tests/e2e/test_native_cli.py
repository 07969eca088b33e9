"""The native command-line app (clients/native_cli.py): system browser, loopback redirect on a
random port (RFC 8252), PKCE, public client; and private-use-scheme redirect registration."""

import json
import subprocess
import sys

import pytest
import requests

from idp.config import PROJECT_ROOT
from idp.oidc.clients import ClientError, create_client
from tests.e2e.conftest import browser_sign_in
from tests.helpers import make_client

pytestmark = pytest.mark.e2e


def test_native_app_signs_in_through_the_loopback_redirect(ctx, idp_server, person):
    rp = make_client(redirect_uri="http://127.0.0.1/callback", public=True,
                     loopback_any_port=True, scope="openid profile roles offline_access")
    from idp.extensions import db

    db.session.commit()
    app = subprocess.Popen(
        [sys.executable, "-m", "clients.native_cli", "--issuer", idp_server.base,
         "--client-id", rp.client_id, "--no-browser", "--timeout", "60"],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = app.stdout.readline().strip()
    if "redirect_uri=" not in url:  # the app gave up before printing the authorization URL
        app.kill()
        pytest.fail(f"native app printed {url!r}; stderr:\n{app.communicate()[1][-2000:]}")
    redirect_uri = url.split("redirect_uri=")[1].split("&")[0]
    port_uri = requests.utils.unquote(redirect_uri)
    assert port_uri.startswith("http://127.0.0.1:") and port_uri != "http://127.0.0.1/callback"
    location = browser_sign_in(idp_server, url, person.username, person.password, port_uri)
    assert requests.get(location, timeout=10).status_code == 200  # the app's loopback page
    out, err = app.communicate(timeout=60)
    assert app.returncode == 0, err
    result = json.loads(out)
    assert result["claims"]["sub"] == person.subject and result["refresh_token"] is True
    assert result["claims"]["amr"] == ["pwd", "otp", "mfa"]


def test_private_use_scheme_redirects_for_public_clients_only(ctx):
    native = create_client(name="Mobile", redirect_uris=["org.hospital.provider:/oauth2redirect"],
                           public=True)
    assert native.client.redirect_uris == ["org.hospital.provider:/oauth2redirect"]
    with pytest.raises(ClientError):
        create_client(name="Web", redirect_uris=["org.hospital.provider:/cb"])
    for bad in ("myapp:/cb", "org.hospital.provider://host/cb", "org.hospital.app:/cb#x"):
        with pytest.raises(ClientError):
            create_client(name="Bad", redirect_uris=[bad], public=True)
