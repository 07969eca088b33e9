"""A small FHIR server for tests: accepts `POST <base>/AuditEvent` (application/fhir+json),
keeps each resource in arrival order with a server-assigned id, answers 201 + Location. Not
listening until start(), and stop() closes the port (a FHIR server that is down)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.conftest import free_port


class FhirReceiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.resources: list[dict[str, Any]] = []
        self.refused: list[str] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    def start(self) -> FhirReceiver:
        box = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                kind = self.headers.get("Content-Type", "")
                try:
                    resource = json.loads(body)
                except ValueError:
                    resource = None
                if self.path != "/fhir/AuditEvent" or \
                        not kind.startswith("application/fhir+json") or \
                        not isinstance(resource, dict) or \
                        resource.get("resourceType") != "AuditEvent":
                    box.refused.append(self.path)
                    self._answer(400, {"resourceType": "OperationOutcome", "issue": [
                        {"severity": "error", "code": "invalid"}]})
                    return
                resource["id"] = str(len(box.resources) + 1)
                box.resources.append(resource)
                self._answer(201, resource, f"{box.base}/AuditEvent/{resource['id']}")

            def _answer(self, status: int, body: dict, location: str | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(data)))
                if location:
                    self.send_header("Location", location)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
