"""The provider registry adapters: the offline NPPES dissemination file (a small sample written
here in the real layout) and the NPPES API adapter against a local HTTP server this test runs
(answers, errors, a server that hangs, nobody listening): never a mock of requests. The API is
called through the app's outbound client; the tests' allow-list (IDP_OUTBOUND_ALLOW in the
`env` fixture) lets it reach loopback."""

from __future__ import annotations

import csv
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from idp.config import ConfigError, Settings
from idp.core import outbound
from idp.onboarding.registry import (
    DEACTIVATION,
    ENTITY_TYPE,
    FIRST_NAME,
    LAST_NAME,
    NPI,
    ORGANIZATION,
    STATE,
    TAXONOMY,
    NppesRegistry,
    OfflineRegistry,
    configured,
)

# The first columns of the NPPES "npidata_pfile" header, in order, plus those we read.
HEADER = [NPI, ENTITY_TYPE, "Replacement NPI", "Employer Identification Number (EIN)",
          ORGANIZATION, LAST_NAME, FIRST_NAME, "Provider Middle Name",
          "Provider Name Prefix Text", "Provider Name Suffix Text", "Provider Credential Text",
          "Provider First Line Business Practice Location Address",
          "Provider Business Practice Location Address City Name", STATE,
          "Provider Business Practice Location Address Postal Code",
          "Provider Enumeration Date", "Last Update Date", "NPI Deactivation Reason Code",
          DEACTIVATION, "NPI Reactivation Date", "Provider Gender Code",
          "Healthcare Provider Taxonomy Code_1", "Provider License Number_1",
          "Provider License Number State Code_1", "Healthcare Provider Primary Taxonomy Switch_1"]
assert HEADER.count(TAXONOMY) == 1

ROWS = [
    {NPI: "1245319599", ENTITY_TYPE: "1", LAST_NAME: "LOPEZ", FIRST_NAME: "MARIA", STATE: "CA",
     TAXONOMY: "207R00000X", "Provider License Number_1": "A123456"},
    {NPI: "1679576722", ENTITY_TYPE: "1", LAST_NAME: "NGUYEN", FIRST_NAME: "TAM", STATE: "TX",
     TAXONOMY: "363LF0000X", DEACTIVATION: "05/01/2024"},
    {NPI: "1003000126", ENTITY_TYPE: "2", ORGANIZATION: "GENERAL HOSPITAL INC", STATE: "NY",
     TAXONOMY: "282N00000X"},
]


def write_sample(path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=HEADER, quoting=csv.QUOTE_ALL)
        writer.writeheader()
        for row in ROWS:
            writer.writerow({k: row.get(k, "") for k in HEADER})
    return path


def test_offline_file_found_name_match_taxonomy_state(tmp_path):
    registry = OfflineRegistry(write_sample(tmp_path / "npidata.csv"))
    found = registry.lookup("1245319599", "María", "López")  # accents and case ignored
    assert found.name_matches is True
    assert found.available and found.found and found.name == "MARIA LOPEZ"
    assert found.taxonomy == "207R00000X" and found.state == "CA" and not found.deactivated
    assert registry.lookup("1245319599", "maria", "lopez").name_matches is True
    assert registry.lookup("1245319599", "Mario", "Lopez").name_matches is False


def test_offline_file_deactivated_organization_and_unknown(tmp_path):
    registry = OfflineRegistry(write_sample(tmp_path / "npidata.csv"))
    assert registry.lookup("1679576722", "Tam", "Nguyen").deactivated
    org = registry.lookup("1003000126", "Any", "One")
    assert org.found and org.name == "GENERAL HOSPITAL INC" and org.name_matches is False
    assert "organization" in org.note
    unknown = registry.lookup("1234567893", "A", "B")
    assert unknown.available and not unknown.found


def test_offline_file_missing_is_unavailable(tmp_path):
    result = OfflineRegistry(tmp_path / "absent.csv").lookup("1245319599", "Maria", "Lopez")
    assert not result.available and result.note == "registry unavailable"


NPPES_ANSWER = {"result_count": 1, "results": [{
    "number": "1245319599", "enumeration_type": "NPI-1",
    "basic": {"first_name": "MARIA", "last_name": "LOPEZ", "status": "A"},
    "addresses": [{"address_purpose": "MAILING", "state": "NV"},
                  {"address_purpose": "LOCATION", "state": "CA"}],
    "taxonomies": [{"code": "207R00000X", "desc": "Internal Medicine", "primary": True,
                    "state": "CA", "license": "A123456"}]}]}


class _Api(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.server.seen.append(self.path)
        mode = self.server.mode
        if mode == "hang":
            time.sleep(3)
        if mode == "error":
            body, status = b"oops", 500
        elif mode == "garbage":
            body, status = b"<html>maintenance</html>", 200
        elif mode == "empty":
            body, status = json.dumps({"result_count": 0, "results": []}).encode(), 200
        elif mode == "errors":
            body, status = json.dumps({"Errors": [{"description": "bad"}]}).encode(), 200
        else:
            body, status = json.dumps(NPPES_ANSWER).encode(), 200
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client gave up (timeout test)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    httpd.mode, httpd.seen = "ok", []
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def http(ctx) -> outbound.OutboundClient:
    return outbound.client()


def _url(api) -> str:
    return f"http://127.0.0.1:{api.server_address[1]}/api/"


def test_nppes_api_answer(api, http):
    result = NppesRegistry(_url(api), 2, http).lookup("1245319599", "Maria", "Lopez")
    assert api.seen == ["/api/?version=2.1&number=1245319599"]
    assert result.available and result.found and result.name_matches
    assert result.state == "CA" and result.taxonomy == "207R00000X Internal Medicine"
    assert not result.deactivated


@pytest.mark.parametrize("mode", ["error", "garbage", "errors", "hang"])
def test_nppes_api_failure_is_registry_unavailable(api, http, mode):
    api.mode = mode
    started = time.monotonic()
    result = NppesRegistry(_url(api), 1, http).lookup("1245319599", "Maria", "Lopez")
    assert not result.available and result.note == "registry unavailable"
    assert time.monotonic() - started < 2.5  # the timeout held


def test_nppes_api_not_found(api, http):
    api.mode = "empty"
    result = NppesRegistry(_url(api), 2, http).lookup("1245319599", "Maria", "Lopez")
    assert result.available and not result.found


def test_nppes_api_nobody_listening_is_registry_unavailable(http):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed when the block ends: nothing listens there
    result = NppesRegistry(f"http://127.0.0.1:{port}/api/", 2, http).lookup("1245319599", "M",
                                                                            "L")
    assert not result.available


def test_configuration_chooses_the_adapter(tmp_path, env, ctx):
    sample = write_sample(tmp_path / "npidata.csv")
    assert configured(None, 5, "https://x.example/api") is None
    assert isinstance(configured(f"offline:{sample}", 5, "u"), OfflineRegistry)
    api = configured("nppes", 5, "https://npiregistry.cms.hhs.gov/api")
    assert isinstance(api, NppesRegistry) and api.url == "https://npiregistry.cms.hhs.gov/api"
    assert configured("nppes:http://127.0.0.1:9/api", 5, "u").url == "http://127.0.0.1:9/api"
    assert Settings.from_env({**env, "IDP_NPI_REGISTRY": f"offline:{sample}"}).npi_registry
    for bad in ("offline:/no/such/file.csv", "ldap", "nppes:ftp://x", "offline:"):
        with pytest.raises(ConfigError, match="IDP_NPI_REGISTRY"):
            Settings.from_env({**env, "IDP_NPI_REGISTRY": bad})
