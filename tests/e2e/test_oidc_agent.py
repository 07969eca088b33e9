"""oidc-agent (Debian's oidc-agent 4.2.6), the command-line agent that keeps a person's
tokens for CLIs and obtains ID tokens only by refresh. Configured as its documentation says
(`oidc-gen` with an existing client, the code flow, scope `openid profile email`), it appends
`offline_access` to the scope by itself whenever discovery lists it: an agent is built to keep
tokens while the person is away. So its registration holds offline_access too, and what it
gets is an offline refresh token (docs/refresh-tokens.md).

The person signs in at the IdP (the agent's own web server takes the redirect); two
`oidc-token --id-token` calls are two refreshes, each answering a new ID token of the same
sign-in; the person logs out at the IdP with the newest as id_token_hint (the offline token
outlives that, by design), and the agent's own logout, `oidc-gen -d`, revokes the refresh
token at the revocation endpoint.

The agent runs in the foreground (-d) on a socket in a temp dir, with its configuration
directory there too, and is stopped by pid."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from idp.extensions import db
from idp.oidc.models import RefreshToken
from tests.e2e.conftest import Server, browser_sign_in, seed_client
from tests.e2e.refresh_checks import check_refreshed, logout, verified_claims
from tests.helpers import Rp, register_secret

pytestmark = pytest.mark.e2e

SCOPE = "openid profile email"
ACCOUNT = "portal"
POST_LOGOUT = "http://localhost:{port}/bye"


@dataclass
class Agent:
    env: dict[str, str]
    dir: Path

    def run(self, *args: str, timeout: float = 30, check: bool = True
            ) -> subprocess.CompletedProcess:
        done = subprocess.run(list(args), env=self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        if check:
            assert done.returncode == 0, f"{args[0]} failed:\n{done.stdout}\n{done.stderr}"
        return done


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    for tool in ("oidc-agent", "oidc-gen", "oidc-token"):
        assert shutil.which(tool), f"{tool} is not installed (Debian package oidc-agent)"
    home = tmp_path / "home"
    (home / "config").mkdir(parents=True)
    socket = tmp_path / "agent.sock"
    password = secrets.token_urlsafe(16)
    register_secret("oidc-agent encryption password", password)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
           "TMPDIR": str(tmp_path), "OIDC_CONFIG_DIR": str(home / "config"),
           "OIDC_SOCK": str(socket), "OIDC_ENCRYPTION_PW": password, "LANG": "C"}
    log = (tmp_path / "agent.log").open("wb")
    proc = subprocess.Popen(["oidc-agent", "-d", f"--socket-path={socket}",
                             "--always-allow-idtoken", "--no-autoreauthenticate",
                             "--no-scheme"],
                            env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if socket.exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert proc.poll() is None and socket.exists(), \
            (tmp_path / "agent.log").read_text(errors="replace")
        yield Agent(env, tmp_path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


def _agent_port() -> int:
    """A free loopback port oidc-gen accepts for its redirect (1024-49151: below the usual
    ephemeral range that free_port draws from)."""
    for _ in range(200):
        port = secrets.randbelow(49151 - 20000) + 20000
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.fail("no free port in 20000-49151")


def _client(port: int) -> Rp:
    return seed_client(redirect_uri=f"http://localhost:{port}", name="oidc-agent",
                       scope=f"{SCOPE} offline_access",
                       post_logout_redirect_uris=[POST_LOGOUT.format(port=port)])


def test_oidc_agent_signs_in_refreshes_twice_and_logs_out(idp_server: Server, person, agent):
    port = _agent_port()
    rp = _client(port)
    gen = subprocess.Popen(
        ["oidc-gen", ACCOUNT, "-m", f"--iss={idp_server.base}", f"--client-id={rp.client_id}",
         f"--client-secret={rp.client_secret}", f"--redirect-uri=http://localhost:{port}",
         f"--scope={SCOPE}", "--flow=code", "--no-url-call", "--pw-env", "--confirm-default",
         "--prompt=none"],
        env=agent.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        stdin=subprocess.DEVNULL)
    output = ""
    url = None
    try:
        assert gen.stdout is not None
        for line in gen.stdout:
            output += line
            found = re.search(r"(http\S+/authorize\?\S+)", line)
            if found:
                url = found.group(1)
                break
        assert url, f"oidc-gen printed no authorization URL:\n{output}"
        browser = requests.Session()
        callback = browser_sign_in(idp_server, url, person.username, person.password,
                                   f"http://localhost:{port}", http=browser, consent=True)
        # The agent's own web server takes the redirect and exchanges the code.
        done = requests.get(callback, timeout=20)
        assert done.status_code == 200, done.text[:500]
        rest, _ = gen.communicate(timeout=60)
        output += rest
        assert gen.returncode == 0, output
    finally:
        if gen.poll() is None:
            gen.kill()
            gen.wait(timeout=5)

    tokens = []
    for _ in range(2):
        got = agent.run("oidc-token", "--id-token", ACCOUNT).stdout.strip()
        register_secret("ID token", got)
        tokens.append(got)
    assert tokens[0] != tokens[1]
    first = verified_claims(idp_server, tokens[0])
    assert first["sub"] == person.subject and "nonce" not in first
    check_refreshed(idp_server, first, tokens[1])
    db.session.rollback()
    rows = db.session.execute(select(RefreshToken).where(
        RefreshToken.client_id == rp.client_id)).scalars().all()
    assert rows and not any(r.session_bound for r in rows)  # offline_access: offline
    assert sum(r.rotated_at is not None for r in rows) >= 2  # each ID token was a refresh

    logout(idp_server, browser, tokens[1], POST_LOGOUT.format(port=port))
    still = agent.run("oidc-token", "--force-new", ACCOUNT).stdout.strip()
    register_secret("access token", still)
    assert verified_claims(idp_server, still)["sub"] == person.subject  # offline outlives it
    # The agent's own logout: delete the account, revoking its refresh token.
    agent.run("oidc-gen", "-d", ACCOUNT, "--pw-env", "--confirm-yes", "--prompt=none")
    db.session.rollback()
    live = db.session.execute(select(RefreshToken).where(
        RefreshToken.client_id == rp.client_id, RefreshToken.revoked_at.is_(None),
        RefreshToken.rotated_at.is_(None))).scalars().all()
    assert live == [], "oidc-gen -d did not revoke the refresh token"
