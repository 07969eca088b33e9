"""Upstream OpenID Providers for the federation tests (idp/federation/upstream).

- NodeUpstream: panva's oidc-provider (tests/e2e/node/upstream.mjs), a real provider that is
  not ours, standing in for Entra ID or Okta; started on a free loopback port, stopped by pid.
- ForgingUpstream: a small provider on loopback whose ID tokens a test can spoil one way at a
  time (wrong aud, wrong iss, nonce, expired, alg none, an unknown key): the attacks a careful
  relying party must refuse. Real HTTP, real signatures; nothing of the IdP is replaced.
- drive(): plays the browser at the node upstream (its sign-in form) until it redirects back.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import pyotp
import requests
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from tests.conftest import free_port
from tests.helpers import csrf_from
from tests.udap_client import sign

NODE_DIR = Path(__file__).parent / "e2e" / "node"
UPSTREAM_SECRET = "upstream-client-secret-0123456789abcdef"


class NodeUpstream:
    """oidc-provider with one client (ours) per redirect base; accounts as given."""

    def __init__(self, workdir: Path, bases: list[str], accounts: dict, name: str = "node",
                 client_id: str = "healthidp") -> None:
        node = shutil.which("node")
        assert node, "node is not installed (the federation tests need it)"
        assert (NODE_DIR / "node_modules" / "oidc-provider").is_dir(), \
            "oidc-provider is not installed: cd tests/e2e/node && npm ci"
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.client_id = client_id
        clients = [{"client_id": client_id, "client_secret": UPSTREAM_SECRET,
                    "redirect_uris": [f"{b}/upstream/{name}/callback" for b in bases],
                    "post_logout_redirect_uris": [f"{b}/login" for b in bases] +
                    [f"{b}/upstream/signed-out" for b in bases],
                    "backchannel_logout_uri": f"{bases[-1]}/upstream/{name}/backchannel-logout",
                    "backchannel_logout_session_required": True}]
        config = {"issuer": self.issuer, "port": self.port, "clients": clients,
                  "accounts": accounts}
        path = workdir / f"upstream-{self.port}.json"
        path.write_text(json.dumps(config))
        self.log = workdir / f"upstream-{self.port}.log"
        self.proc = subprocess.Popen([node, str(NODE_DIR / "upstream.mjs"), str(path)],
                                     stdout=self.log.open("w"), stderr=subprocess.STDOUT,
                                     cwd=NODE_DIR)
        deadline = time.monotonic() + 30
        while "listening" not in self.log.read_text():
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "upstream did not start: " + self.log.read_text()
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)


def drive(authorization_url: str, login: str, password: str,
          session: requests.Session | None = None) -> tuple[str, requests.Session]:
    """The browser at the upstream: follow its redirects, fill its sign-in form, follow again
    until it sends us back (a URL outside the upstream). Returns (that URL, the session)."""
    http = session or requests.Session()
    url = authorization_url
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(authorization_url))
    for _ in range(12):
        response = http.get(url, allow_redirects=False, timeout=10)
        if response.status_code in (302, 303):
            url = urljoin(url, response.headers["Location"])
            if not url.startswith(origin):
                return url, http
            continue
        assert response.status_code == 200, response.text[:300]
        assert "/interaction/" in url, response.text[:300]
        posted = http.post(url, data={"login": login, "password": password},
                           allow_redirects=False, timeout=10)
        assert posted.status_code in (302, 303), posted.text[:300]
        url = urljoin(url, posted.headers["Location"])
        if not url.startswith(origin):
            return url, http
    raise AssertionError("the upstream never sent the browser back")


class ForgingUpstream:
    """An OpenID Provider on loopback that signs in whoever is asked for (`subject`, `claims`)
    and spoils its ID token as `tamper` says: {"aud": ..., "iss": ..., "nonce": ... (None:
    left out), "exp": ..., "alg": "none", "unknown_key": True, "azp": ...}; `iss_param` what
    the authorization response's RFC 9207 iss is (default: the issuer; None: left out)."""

    def __init__(self, client_id: str = "healthidp") -> None:
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.client_id = client_id
        self.key = RSAKey.generate_key(2048, parameters={"kid": "forge-1", "alg": "RS256"})
        self.other = RSAKey.generate_key(2048, parameters={"kid": "stranger", "alg": "RS256"})
        self.subject = "forge-user-1"
        self.claims: dict = {"email": "someone@partner.example", "email_verified": True}
        self.tamper: dict = {}
        self.iss_param: str | None = self.issuer
        self.codes: dict[str, dict] = {}
        self.jwks_fetches = 0
        self.token_requests: list[dict] = []
        self.server = make_server("127.0.0.1", self.port, self._app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()

    def metadata(self) -> dict:
        return {"issuer": self.issuer, "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token", "jwks_uri": f"{self.issuer}/jwks",
                "end_session_endpoint": f"{self.issuer}/logout",
                "authorization_response_iss_parameter_supported": self.iss_param is not None,
                "response_types_supported": ["code"], "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"]}

    def id_token(self, nonce: str | None) -> str:
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": self.subject, "aud": self.client_id,
                  "iat": now, "exp": now + 300, "nonce": nonce, **self.claims}
        for name in ("aud", "iss", "exp", "azp", "sub"):
            if name in self.tamper:
                claims[name] = self.tamper[name]
        if "nonce" in self.tamper:
            claims["nonce"] = self.tamper["nonce"]
        claims = {k: v for k, v in claims.items() if v is not None}
        if self.tamper.get("alg") == "none":
            head = {"alg": "none", "typ": "JWT", "kid": "forge-1"}
            enc = [base64.urlsafe_b64encode(json.dumps(p).encode()).rstrip(b"=").decode()
                   for p in (head, claims)]
            return f"{enc[0]}.{enc[1]}."
        key = self.other if self.tamper.get("unknown_key") else self.key
        return jwt.encode({"alg": "RS256", "kid": key.kid, "typ": "JWT"}, claims, key)

    def logout_token(self, sid: str | None = None, sub: str | None = None, **extra) -> str:
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": self.client_id, "iat": now, "exp": now + 120,
                  "jti": secrets.token_hex(8),
                  "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
                  **({"sid": sid} if sid else {}), **({"sub": sub} if sub else {}), **extra}
        claims = {k: v for k, v in claims.items() if v is not None}  # jti=None: no jti
        return jwt.encode({"alg": "RS256", "kid": self.key.kid, "typ": "logout+jwt"}, claims,
                          self.key)

    def _app(self, environ, start_response):  # noqa: ANN001, ANN202
        request = Request(environ)
        path = request.path
        if path == "/.well-known/openid-configuration":
            response = Response(json.dumps(self.metadata()), mimetype="application/json")
        elif path == "/jwks":
            self.jwks_fetches += 1
            keys = KeySet([self.key]).as_dict(private=False)
            response = Response(json.dumps(keys), mimetype="application/json")
        elif path == "/authorize":
            code = secrets.token_urlsafe(16)
            self.codes[code] = dict(request.args)
            params = {"code": code, "state": request.args.get("state", "")}
            if self.iss_param is not None:
                params["iss"] = self.iss_param
            response = Response(status=302, headers={
                "Location": f"{request.args['redirect_uri']}?{urlencode(params)}"})
        elif path == "/token":
            form = dict(request.form)
            self.token_requests.append({**form, "authorization": request.headers.get(
                "Authorization", "")})
            asked = self.codes.pop(form.get("code", ""), None)
            if asked is None:
                response = Response(json.dumps({"error": "invalid_grant"}), status=400,
                                    mimetype="application/json")
            else:
                body = {"access_token": secrets.token_urlsafe(16), "token_type": "Bearer",
                        "expires_in": 300, "id_token": self.id_token(asked.get("nonce"))}
                response = Response(json.dumps(body), mimetype="application/json")
        else:
            response = Response("not found", status=404)
        return response(environ, start_response)


class ForgingUdapUpstream(ForgingUpstream):
    """A ForgingUpstream that is also a UDAP server (Tiered OAuth upstream, FAST Security IG
    §6): /.well-known/udap with signed_metadata signed by `holder` (a tests.udap_pki Holder:
    trusted, or from an untrusted root), /register answering any software statement with
    `client_id` (kept: its ID tokens name it as aud unless tampered), and token requests
    recorded with their client assertion."""

    def __init__(self, holder_for: Any, client_id: str = "tiered-client-1") -> None:
        super().__init__(client_id)
        self.holder = holder_for(self.issuer)
        self.registrations: list[dict] = []

    def metadata(self) -> dict:
        return {**super().metadata(),
                "token_endpoint_auth_methods_supported": ["private_key_jwt"]}

    def udap_metadata(self) -> dict:
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": self.issuer, "iat": now, "exp": now + 3600,
                  "jti": secrets.token_hex(8),
                  "authorization_endpoint": f"{self.issuer}/authorize",
                  "token_endpoint": f"{self.issuer}/token",
                  "registration_endpoint": f"{self.issuer}/register"}
        return {"udap_versions_supported": ["1"], "udap_profiles_supported": ["udap_dcr",
                                                                              "udap_to"],
                "scopes_supported": ["openid", "udap", "profile", "email"],
                **{k: v for k, v in claims.items() if k.endswith("endpoint")},
                "signed_metadata": sign(self.holder, claims)}

    def _app(self, environ, start_response):  # noqa: ANN001, ANN202
        request = Request(environ)
        if request.path == "/.well-known/udap":
            response = Response(json.dumps(self.udap_metadata()), mimetype="application/json")
        elif request.path == "/register" and request.method == "POST":
            self.registrations.append(request.get_json(silent=True) or {})
            response = Response(json.dumps({"client_id": self.client_id,
                                            "scope": "openid udap"}),
                                status=201, mimetype="application/json")
        else:
            return super()._app(environ, start_response)
        return response(environ, start_response)


def sign_in_at_this_idp(http: requests.Session, url: str, base: str, username: str,
                        password: str, totp_secret: str) -> str:
    """The browser at another instance of this IdP acting as the upstream: its login,
    authenticator app, acknowledgment and consent pages; returns the first URL outside `base`
    it is sent to (the caller's callback)."""
    for _ in range(12):
        response = http.get(url, allow_redirects=False, timeout=10)
        if response.status_code in (302, 303):
            url = urljoin(url, response.headers["Location"])
            if not url.startswith(base):
                return url
            continue
        assert response.status_code == 200, response.text[:500]
        page = response.text
        if 'name="password"' in page:
            data = {"username": username, "password": password,
                    "next": html.unescape(re.search(r'name="next" value="([^"]*)"',
                                                    page).group(1))}
        elif 'name="code"' in page:
            data = {"code": pyotp.TOTP(totp_secret).now()}
        elif 'name="acknowledge"' in page:
            data = {"acknowledge": "y"}
        elif 'name="decision"' in page:
            data = {"decision": "allow"}
        else:
            raise AssertionError(page[:800])
        posted = http.post(url, data={**data, "csrf_token": csrf_from(page)},
                           allow_redirects=False, timeout=10)
        assert posted.status_code in (302, 303), posted.text[:800]
        url = urljoin(url, posted.headers["Location"])
        if not url.startswith(base):
            return url
    raise AssertionError("the upstream IdP never sent the browser back")


def callback_path(url: str) -> str:
    """The path and query of a URL the upstream sent the browser to (for the test client)."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
