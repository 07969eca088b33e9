"""A relying party not written in Python (node, panva's openid-client v6) against gunicorn.

openid-client does its own checks: discovery issuer, RFC 9207 `iss` in the authorization
response, state, PKCE, ID token signature (fetched from jwks_uri), iss/aud/azp/exp/iat/nonce,
userinfo `sub` equal to the ID token's. The test plays the browser between `start` and
`finish`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.e2e.conftest import browser_sign_in, free_port, seed_client
from tests.e2e.refresh_checks import check_refreshed, verified_claims

NODE_DIR = Path(__file__).parent / "node"

pytestmark = pytest.mark.e2e


def _node(*args: str) -> dict:
    node = shutil.which("node")
    assert node, "node is not on PATH: the non-Python relying party cannot run"
    assert (NODE_DIR / "node_modules" / "openid-client").is_dir(), \
        "openid-client is not installed: run `npm ci` in tests/e2e/node"
    done = subprocess.run([node, "rp.mjs", *args], cwd=NODE_DIR, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, f"node rp.mjs {args[0]} failed:\n{done.stderr}\n{done.stdout}"
    return json.loads(done.stdout)


def test_openid_client_code_flow_userinfo_refresh_revoke(idp_server, person, tmp_path):
    rp = seed_client(redirect_uri=f"http://127.0.0.1:{free_port()}/cb", name="Node RP")
    state_file = tmp_path / "rp-state.json"
    # --name=value: a random client_id or secret may begin with "-"
    started = _node("start", f"--issuer={idp_server.base}", f"--client-id={rp.client_id}",
                    f"--client-secret={rp.client_secret}", f"--redirect-uri={rp.redirect_uri}",
                    "--scope", "openid profile email npi roles offline_access",
                    "--state-file", str(state_file))
    assert started["server_metadata"] == {"issuer": idp_server.base, "iss_parameter": True}
    url = started["authorization_url"]
    asked = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert url.startswith(idp_server.url("/authorize?"))
    assert asked["code_challenge_method"] == "S256" and asked["code_challenge"]

    callback = browser_sign_in(idp_server, url, person.username, person.password,
                               rp.redirect_uri)
    got = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
    assert got["iss"] == idp_server.base and got["state"] == asked["state"]

    result = _node("finish", "--state-file", str(state_file), "--callback", callback)

    claims = result["id_token_claims"]
    assert result["sub"] == person.subject != person.username
    assert claims["iss"] == idp_server.base
    assert claims["aud"] == [rp.client_id] and claims["azp"] == rp.client_id
    assert claims["nonce"] == asked["nonce"]
    # Password then authenticator app (mandatory MFA): AAL2, RFC 8176 pwd + otp + mfa.
    assert claims["acr"] == "urn:healthidp:acr:aal2"
    assert claims["amr"] == ["pwd", "otp", "mfa"]
    assert isinstance(claims["auth_time"], int) and claims["auth_time"] <= claims["iat"]
    assert claims["sid"] and claims["at_hash"]
    assert result["token_type"].lower() == "bearer"
    assert set(result["scope"].split()) == {"openid", "profile", "email", "npi", "roles",
                                            "offline_access"}

    userinfo = result["userinfo"]
    assert userinfo["sub"] == person.subject
    assert userinfo["preferred_username"] == person.username
    assert userinfo["name"] == "Ana Smith" and userinfo["email"] == person.email
    assert userinfo["email_verified"] is True
    assert userinfo["npi"] == person.npi and userinfo["license_state"] == "CA"
    assert userinfo["roles"] == ["physician"] and userinfo["facility"] == "General Hospital"
    assert "phone_number" not in userinfo  # no phone scope asked

    # Refresh tokens rotate: every refresh returns a new access and refresh token.
    refreshed, again = result["refreshed"], result["refreshed_again"]
    assert refreshed["access_token"] and refreshed["access_token"] != result["access_token"]
    assert refreshed["refresh_token"] and refreshed["refresh_token"] != result["refresh_token"]
    assert again["refresh_token"] not in (refreshed["refresh_token"], result["refresh_token"])
    assert result["userinfo_after_refresh"]["sub"] == person.subject
    # After revocation (RFC 7009) the refresh token no longer works.
    assert result["refresh_after_revoke"]["error"] == "invalid_grant"


def test_openid_client_as_configured_by_default_refreshes_twice_and_logs_out(
        idp_server, person, tmp_path):
    """The portal's default configuration: scope `openid profile email`, the client registered
    for refresh_token. It gets a session-bound refresh token, a new ID token of the same
    authentication at each refresh, and logs out with the newest one as id_token_hint; the
    refresh token ends with the session."""
    port = free_port()
    rp = seed_client(redirect_uri=f"http://127.0.0.1:{port}/cb", name="Node portal",
                     scope="openid profile email",
                     post_logout_redirect_uris=[f"http://127.0.0.1:{port}/bye"])
    state_file = tmp_path / "rp-state.json"
    started = _node("start", f"--issuer={idp_server.base}", f"--client-id={rp.client_id}",
                    f"--client-secret={rp.client_secret}", f"--redirect-uri={rp.redirect_uri}",
                    "--scope", "openid profile email", "--state-file", str(state_file))
    browser = requests.Session()
    callback = browser_sign_in(idp_server, started["authorization_url"], person.username,
                               person.password, rp.redirect_uri, http=browser)
    result = _node("session", "--state-file", str(state_file), "--callback", callback,
                   f"--post-logout-redirect-uri=http://127.0.0.1:{port}/bye")
    assert result["scope"] == "openid profile email" and result["refresh_token"]
    original = verified_claims(idp_server, result["id_token"]["id_token"])
    assert original["sub"] == person.subject and original["nonce"]
    seen = {result["refresh_token"]}
    for refresh in result["refreshes"]:
        assert refresh["id_token"], "a refresh of an openid grant answers an ID token"
        claims = check_refreshed(idp_server, original, refresh["id_token"]["id_token"],
                                 refresh["access_token"])
        assert refresh["id_token"]["claims"]["sub"] == claims["sub"]  # openid-client's view
        assert refresh["refresh_token"] not in seen
        seen.add(refresh["refresh_token"])
    newest = result["refreshes"][-1]["id_token"]["id_token"]
    asked = {k: v[0] for k, v in parse_qs(urlsplit(result["logout_url"]).query).items()}
    assert result["logout_url"].startswith(idp_server.url("/logout?"))
    assert asked["id_token_hint"] == newest and asked["client_id"] == rp.client_id
    bye = browser.get(result["logout_url"], allow_redirects=False, timeout=10)
    assert bye.status_code == 302 and bye.headers["Location"] == \
        f"http://127.0.0.1:{port}/bye?state=bye", bye.text[:300]
    after = _node("refresh", "--state-file", str(state_file))
    assert after["error"] == "invalid_grant", after
