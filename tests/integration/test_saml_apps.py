"""GET /saml/apps: the SAML service providers a user may open, for the portal's tiles (issue
25: IdP-initiated sign-in "through the portal's tile"). A first-party relying party asks with
the user's access token; the answer follows the per-SP role restrictions of saml.toml, and
each tile's link is the IdP-initiated launch. Anything else is refused with RFC 6750 errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from click.testing import CliRunner

from idp.cli import main
from idp.context import runtime
from idp.extensions import db
from idp.oidc import tokens
from idp.policy import SamlSpPolicy
from tests.helpers import (
    authorize,
    csrf_from,
    exchange,
    get_code,
    login,
    make_client,
    make_user,
    pkce,
    query,
)
from tests.integration.saml_sp import SamlTestSp, make_keypair

ISSUER_LAUNCH = "http://idp.test/saml/launch?"


def _register(env: dict[str, str], tmp_path: Path, entity_id: str, name: str) -> None:
    key, cert = make_keypair(tmp_path, name.replace(" ", "-"))
    path = tmp_path / f"{name.replace(' ', '-')}.xml"
    path.write_bytes(SamlTestSp(entity_id, key, cert).metadata())
    result = CliRunner().invoke(main, ["saml", "sps", "create", "--metadata-file", str(path),
                                       "--name", name, "--json"], env=env,
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["entity_id"] == entity_id


@pytest.fixture
def sps(ctx, env, tmp_path):
    _register(env, tmp_path, "http://scribe.test/metadata", "Ambient Scribe")
    _register(env, tmp_path, "http://billing.test/metadata", "Billing Desk")
    db.session.rollback()


def _token(client, *, first_party: bool = True, scope: str = "openid profile") -> str:
    rp = make_client(first_party=first_party, name="Portal" if first_party else "Third party")
    if first_party:
        code, verifier, _ = get_code(client, rp, scope=scope)
    else:  # the consent page first
        verifier, challenge = pkce()
        page, params = authorize(client, rp, challenge, scope=scope)
        assert page.status_code == 200 and 'value="allow"' in page.text
        allowed = client.post("/authorize?" + urlencode(params),
                              data={"decision": "allow", "csrf_token": csrf_from(page.text)})
        assert allowed.status_code == 302, allowed.text
        code = query(allowed.headers["Location"])["code"]
    answer = exchange(client, rp, code, verifier)
    assert answer.status_code == 200, answer.text
    return answer.get_json()["access_token"]


def test_lists_the_users_service_providers_with_their_launch_links(client, sps, ctx):
    make_user()
    assert login(client).status_code == 302
    token = _token(client)
    answer = client.get("/saml/apps", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["Cache-Control"] == "no-store"
    apps = answer.get_json()["apps"]
    assert [a["name"] for a in apps] == ["Ambient Scribe", "Billing Desk"]
    for app in apps:
        assert app["launch_url"].startswith(ISSUER_LAUNCH)
        assert parse_qs(urlsplit(app["launch_url"]).query) == {"sp": [app["entity_id"]]}
    # The link is the IdP-initiated sign-in: this browser's SSO session answers at once.
    launch = client.get(apps[0]["launch_url"].removeprefix("http://idp.test"))
    assert launch.status_code == 302
    assert launch.headers["Location"].startswith("/saml/resume/")


def test_per_sp_role_restrictions_hide_the_tile(client, sps, ctx, monkeypatch):
    rt = runtime()
    rules = dataclasses.replace(rt.policy.saml, sps={
        "http://billing.test/metadata": SamlSpPolicy(None, ("admin_staff",), None)})
    monkeypatch.setattr(rt, "policy", dataclasses.replace(rt.policy, saml=rules))
    make_user()  # a physician
    assert login(client).status_code == 302
    token = _token(client)
    apps = client.get("/saml/apps", headers={"Authorization": f"Bearer {token}"}).get_json()
    assert [a["entity_id"] for a in apps["apps"]] == ["http://scribe.test/metadata"]


@pytest.mark.parametrize("header", [
    None, "Bearer not-a-jwt", "Basic dXNlcjpwYXNz", "Bearer ",
])
def test_without_a_valid_bearer_token_nothing_is_listed(client, sps, header):
    answer = client.get("/saml/apps", headers={"Authorization": header} if header else {})
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith('Bearer realm="http://idp.test"')
    assert "apps" not in (answer.get_json() or {})


def test_a_third_party_clients_token_is_refused(client, sps, ctx):
    make_user()
    assert login(client).status_code == 302
    token = _token(client, first_party=False)
    answer = client.get("/saml/apps", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 403
    assert answer.get_json()["error"] == "insufficient_scope"
    assert "apps" not in answer.get_json()


def test_a_revoked_token_or_a_disabled_account_is_refused(client, sps, ctx):
    user = make_user()
    assert login(client).status_code == 302
    token = _token(client)
    auth = {"Authorization": f"Bearer {token}"}
    assert client.get("/saml/apps", headers=auth).status_code == 200
    claims, _ = tokens.verify_access_token(token)
    tokens.revoke_access_token(claims["jti"])
    db.session.commit()
    answer = client.get("/saml/apps", headers=auth)
    assert answer.status_code == 401 and answer.get_json()["error"] == "invalid_token"

    other = {"Authorization": f"Bearer {_token(client)}"}
    assert client.get("/saml/apps", headers=other).status_code == 200
    user.disabled = True
    db.session.commit()
    answer = client.get("/saml/apps", headers=other)
    assert answer.status_code == 401 and answer.get_json()["error"] == "invalid_token"
