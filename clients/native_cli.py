"""A tiny native app: signs in through the system browser with an RFC 8252 loopback redirect.

    python -m clients.native_cli [--issuer http://127.0.0.1:8000] [--client-id native-cli]

It listens on 127.0.0.1 on a random port, opens the authorization URL (PKCE S256, state,
nonce) in the browser, receives the code on the loopback redirect, checks `state` and RFC 9207
`iss`, exchanges the code as a public client and prints the verified ID token's claims as JSON.
`--no-browser` prints the URL instead of opening it (tests, remote shells).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.server
import json
import secrets
import sys
import threading
import webbrowser
from urllib.parse import parse_qs, urlencode, urlsplit

import requests
from joserfc import jwt
from joserfc.jwk import KeySet

PAGE = b"<!doctype html><title>Signed in</title><p>Signed in. You can close this window.</p>"


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class _Callback(http.server.BaseHTTPRequestHandler):
    result: dict[str, str] | None = None
    done = threading.Event()

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        parts = urlsplit(self.path)
        if parts.path != "/callback":
            self.send_error(404)
            return
        type(self).result = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.end_headers()
        self.wfile.write(PAGE)
        type(self).done.set()

    def log_message(self, *args: object) -> None:  # the query holds the code: keep it quiet
        return


def sign_in(issuer: str, client_id: str, scope: str, open_browser: bool = True,
            timeout: float = 300.0) -> dict:
    """Run the whole flow; returns the verified ID token claims and the token response."""
    meta = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=10).json()
    server = http.server.HTTPServer(("127.0.0.1", 0), _Callback)
    redirect_uri = f"http://127.0.0.1:{server.server_port}/callback"
    verifier, challenge = _pkce()
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    url = meta["authorization_endpoint"] + "?" + urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
        "scope": scope, "state": state, "nonce": nonce, "code_challenge": challenge,
        "code_challenge_method": "S256"})
    _Callback.result, _Callback.done = None, threading.Event()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        if open_browser:
            webbrowser.open(url)
        print(url, flush=True)
        if not _Callback.done.wait(timeout):
            raise SystemExit("no answer from the browser in time")
    finally:
        server.shutdown()
    got = _Callback.result or {}
    if got.get("state") != state:
        raise SystemExit("state does not match: not our sign-in")
    if got.get("iss") != meta["issuer"]:
        raise SystemExit("iss does not match the issuer (RFC 9207)")
    if "error" in got:
        raise SystemExit(f"sign-in refused: {got['error']}")
    tokens = requests.post(meta["token_endpoint"], timeout=10, data={
        "grant_type": "authorization_code", "code": got["code"], "redirect_uri": redirect_uri,
        "client_id": client_id, "code_verifier": verifier}).json()
    if "id_token" not in tokens:
        raise SystemExit(f"token request refused: {tokens.get('error')}")
    keys = KeySet.import_key_set(requests.get(meta["jwks_uri"], timeout=10).json())
    claims = jwt.decode(tokens["id_token"], keys, algorithms=["RS256", "ES256"]).claims
    registry = jwt.JWTClaimsRegistry(iss={"essential": True, "value": meta["issuer"]},
                                     aud={"essential": True, "value": client_id},
                                     nonce={"essential": True, "value": nonce})
    registry.validate(claims)
    return {"claims": claims, "refresh_token": bool(tokens.get("refresh_token"))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--issuer", default="http://127.0.0.1:8000")
    parser.add_argument("--client-id", default="native-cli")
    parser.add_argument("--scope", default="openid profile roles offline_access")
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    result = sign_in(args.issuer.rstrip("/"), args.client_id, args.scope,
                     open_browser=not args.no_browser, timeout=args.timeout)
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
