"""The portal's application tiles (clients/portal/apps.py) from the IdP's GET /saml/apps: the
user's access token is sent as a Bearer token, only links to the IdP's own /saml/launch become
tiles (a list naming another target is not followed), and an IdP without SAML (404) means no
tiles and no error."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from clients.portal import apps
from tests.receiver import free_port


class FakeIdp:
    def __init__(self) -> None:
        self.status = 200
        self.body: object = {"apps": []}
        self.seen: list[str] = []
        box = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                box.seen.append(f"{self.path} {self.headers.get('Authorization')}")
                data = json.dumps(box.body).encode()
                self.send_response(box.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def idp() -> Iterator[FakeIdp]:
    fake = FakeIdp()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def test_tiles_are_the_launch_links_of_the_idp_only(idp):
    launch = f"{idp.issuer}/saml/launch?sp=http%3A%2F%2Fsp.test%2Fsp"
    idp.body = {"apps": [
        {"entity_id": "http://sp.test/sp", "name": "Scribe", "launch_url": launch},
        {"entity_id": "x", "name": "Elsewhere", "launch_url": "https://evil.example/saml/launch?"},
        {"entity_id": "y", "name": "Script", "launch_url": "javascript:alert(1)"},
        {"entity_id": "z", "name": "", "launch_url": launch},
        "not an object",
    ]}
    found = apps.load(idp.issuer, "the-access-token")
    assert found.error is None
    assert found.items == [apps.Tile("Scribe", launch)]
    assert idp.seen == ["/saml/apps Bearer the-access-token"]


def test_an_idp_without_saml_means_no_tiles_and_no_error(idp):
    idp.status, idp.body = 404, {}
    assert apps.load(idp.issuer, "t") == apps.Tiles([])


@pytest.mark.parametrize(("status", "body"), [(401, {"error": "invalid_token"}),
                                              (200, {"no": "apps"}), (200, ["x"]),
                                              (200, {"apps": 3})])
def test_a_refusal_or_an_unreadable_answer_is_said_plainly(idp, status, body):
    idp.status, idp.body = status, body
    found = apps.load(idp.issuer, "t")
    assert found.items == [] and found.error


def test_an_unreachable_idp_is_said_plainly():
    found = apps.load(f"http://127.0.0.1:{free_port()}", "t")
    assert found.items == [] and found.error == "Your applications cannot be listed right now."
