"""A FAPI 2.0 flow with a client not written against this project: panva's openid-client v6
(tests/e2e/node/fapi.mjs) registered with the fapi2 profile: PAR, private_key_jwt, PKCE S256,
DPoP-bound tokens, `iss` in the response; then the demo EHR's API (its own gunicorn) accepts
the token only with a proof by its key."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from sqlalchemy import select

from idp.config import PROJECT_ROOT
from idp.extensions import db
from idp.oidc.models import AuthorizationCode
from tests.e2e.conftest import browser_sign_in, free_port
from tests.fapi_support import make_keyed_client

NODE_DIR = Path(__file__).parent / "node"
SCOPE = "openid profile roles ehr.patients.read"
EHR_AUDIENCE = "http://127.0.0.1:8002"  # policies/scopes.toml [resources.ehr]

pytestmark = pytest.mark.e2e


def _node(*args: str) -> dict:
    node = shutil.which("node")
    assert node, "node is not on PATH: the non-Python FAPI client cannot run"
    assert (NODE_DIR / "node_modules" / "openid-client").is_dir(), \
        "openid-client is not installed: run `npm ci` in tests/e2e/node"
    done = subprocess.run([node, "fapi.mjs", *args], cwd=NODE_DIR, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, f"node fapi.mjs {args[0]} failed:\n{done.stderr}\n{done.stdout}"
    return json.loads(done.stdout)


@pytest.fixture
def ehr_api(idp_server, tmp_path):
    """The demo EHR under gunicorn, trusting the test IdP; yields its base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "IDP_ISSUER": idp_server.base, "EHR_URL": base,
           "EHR_AUDIENCE": EHR_AUDIENCE, "EHR_CLIENT_ID": "ehr-e2e",
           "EHR_CLIENT_SECRET": "not-used-here", "EHR_SECRET_KEY": "ehr-cookie-key-0123456789",
           "EHR_STATE_DIR": str(tmp_path)}
    log = tmp_path / "ehr.stderr"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
             "--no-control-socket", "clients.ehr:create_app()"], cwd=PROJECT_ROOT, env=env,
            stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if requests.get(f"{base}/api/patients", timeout=2).status_code == 401:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_openid_client_fapi2_par_private_key_jwt_dpop(idp_server, person, ehr_api, tmp_path):
    rp = make_keyed_client(profile="fapi2", first_party=True, scope=SCOPE,
                           redirect_uri=f"http://127.0.0.1:{free_port()}/cb",
                           id_token_alg="ES256", name="Node FAPI client")
    db.session.commit()
    key_file = tmp_path / "client-key.json"
    key_file.write_text(json.dumps({**rp.key.as_dict(private=True), "kid": rp.kid}))
    key_file.chmod(0o600)
    state_file = tmp_path / "fapi-state.json"
    started = _node("start", f"--issuer={idp_server.base}", f"--client-id={rp.client_id}",
                    f"--client-key={key_file}", f"--redirect-uri={rp.redirect_uri}",
                    "--scope", SCOPE, "--state-file", str(state_file))
    meta = started["server_metadata"]
    assert meta["par"] == idp_server.url("/par") and "ES256" in meta["dpop_algs"]
    url = started["authorization_url"]
    asked = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert set(asked) == {"client_id", "request_uri"}  # everything else was pushed
    assert asked["request_uri"].startswith("urn:ietf:params:oauth:request_uri:")

    callback = browser_sign_in(idp_server, url, person.username, person.password,
                               rp.redirect_uri)
    assert parse_qs(urlsplit(callback).query)["iss"] == [idp_server.base]
    # The same request_uri a second time: used up.
    again = requests.get(url, allow_redirects=False, timeout=10)
    assert again.status_code == 400 and "invalid_request_uri" in again.text

    result = _node("finish", "--state-file", str(state_file), "--callback", callback,
                   f"--api={ehr_api}/api/patients")
    assert result["token_type"].lower() == "dpop"
    db.session.rollback()  # a fresh read of what gunicorn wrote
    bound = db.session.scalar(select(AuthorizationCode.dpop_jkt).where(
        AuthorizationCode.client_id == rp.client_id))
    assert bound  # the proof sent with the push bound the code (RFC 9449 §10.1)
    assert result["sub"] == person.subject == result["userinfo"]["sub"]
    assert result["id_token_claims"]["aud"] == [rp.client_id]
    assert result["api"]["status"] == 200 and result["api"]["patients"]
    for refused, error in (("api_without_proof", "invalid_dpop_proof"),
                           ("api_as_bearer", "invalid_token"),
                           ("api_with_another_key", "invalid_token")):
        assert result[refused]["status"] == 401, refused
        assert result[refused]["www_authenticate"].startswith("DPoP ")
        assert f'error="{error}"' in result[refused]["www_authenticate"], refused
