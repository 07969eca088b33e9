"""The structured request log: one line per request, its fields, the request id, the formats,
and no query string, path secret or token in it."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from idp import cli
from idp.config import ConfigError, Settings
from idp.core.request_log import JsonFormatter, TextFormatter
from tests.helpers import basic, exchange, get_code, login, make_client, make_user

FIELDS = {"request_id", "method", "route", "status", "latency_ms", "user", "client_id",
          "remote_addr"}


@pytest.fixture
def lines(caplog):
    caplog.set_level(logging.INFO, logger="idp.request")

    def _lines() -> list[dict]:
        return [r.fields for r in caplog.records if r.name == "idp.request"]
    return _lines


def test_one_line_per_request_with_its_fields(ctx, client, lines):
    client.get("/healthz")
    client.post("/token", data={"grant_type": "x"})
    got = lines()
    assert len(got) == 2
    first, second = got
    assert set(first) == FIELDS
    assert first["method"] == "GET" and first["route"] == "/healthz"
    assert first["status"] == 200 and isinstance(first["latency_ms"], float)
    assert first["latency_ms"] >= 0 and re.fullmatch(r"[0-9a-f]{32}", first["request_id"])
    assert second["route"] == "/token" and second["status"] == 400
    assert first["request_id"] != second["request_id"]


def test_request_id_is_honoured_when_sane_and_emitted(ctx, client, lines):
    given = client.get("/healthz", headers={"X-Request-ID": "lb-7f3a.42:x_y"})
    assert given.headers["X-Request-ID"] == "lb-7f3a.42:x_y"
    assert lines()[-1]["request_id"] == "lb-7f3a.42:x_y"
    for hostile in ("a forged=1", "a\"b", "x" * 129, "", "id with spaces", "é"):
        answer = client.get("/healthz", headers={"X-Request-ID": hostile})
        assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["X-Request-ID"]), hostile
        assert lines()[-1]["request_id"] == answer.headers["X-Request-ID"]


def test_user_subject_and_client_id_when_known(ctx, client, lines):
    user = make_user()
    rp = make_client()
    login(client)
    client.get("/account")
    assert lines()[-1]["route"] == "/account" and lines()[-1]["user"] == user.subject
    code, verifier, _ = get_code(client, rp)
    authorize = lines()[-1]
    assert authorize["route"] == "/authorize" and authorize["client_id"] == rp.client_id
    tokens = exchange(client, rp, code, verifier).get_json()
    token_line = lines()[-1]
    assert token_line["route"] == "/token" and token_line["status"] == 200
    assert token_line["client_id"] == rp.client_id and token_line["user"] == user.subject
    client.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert lines()[-1]["user"] == user.subject and lines()[-1]["client_id"] == rp.client_id
    anonymous = client.application.test_client()
    anonymous.get("/healthz")
    assert lines()[-1]["user"] is None and lines()[-1]["client_id"] is None
    # client_credentials: the client, no user
    cc = make_client(grant_types=["client_credentials"], scope="system/Patient.rs")
    client.post("/token", headers=basic(cc), data={"grant_type": "client_credentials",
                                                   "scope": "system/Patient.rs"})
    assert lines()[-1]["client_id"] == cc.client_id


def test_no_query_string_path_secret_or_token_in_the_line(ctx, client, lines, caplog):
    make_user()
    rp = make_client()
    login(client)
    code, verifier, params = get_code(client, rp)
    tokens = exchange(client, rp, code, verifier).get_json()
    client.get("/password/reset/SECRET-RESET-TOKEN-123456")
    client.get(f"/logout?id_token_hint={tokens['id_token']}&state=st")
    assert lines()[-2]["route"] == "/password/reset/<token>"
    formatted = [JsonFormatter().format(r) for r in caplog.records if r.name == "idp.request"]
    text = "\n".join(formatted)
    for secret in (code, verifier, params["state"], tokens["id_token"], tokens["access_token"],
                   tokens["refresh_token"], "SECRET-RESET-TOKEN-123456"):
        assert secret not in text


def _record(**fields) -> logging.LogRecord:
    record = logging.LogRecord("idp.request", logging.INFO, __file__, 1, "request", (), None)
    record.fields = fields
    return record


def test_json_and_text_formats():
    line = JsonFormatter().format(_record(request_id="r1", status=200, user=None))
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "request" and parsed["level"] == "INFO"
    assert parsed["logger"] == "idp.request" and parsed["request_id"] == "r1"
    assert parsed["status"] == 200 and parsed["user"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", parsed["ts"])
    text = TextFormatter().format(_record(request_id="r1", status=200, user=None))
    assert text.endswith("INFO idp.request request request_id=r1 status=200")
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("idp", logging.ERROR, __file__, 1, "x", (), sys.exc_info())
    error = json.loads(JsonFormatter().format(record))
    assert error["exc_type"] == "ValueError" and "Traceback" in error["exc"]


def test_log_format_setting():
    base = {"IDP_SECRET_KEY": "k" * 32}
    assert Settings.from_env(base).log_format == "text"
    assert Settings.from_env({**base, "IDP_LOG_FORMAT": "json"}).log_format == "json"
    with pytest.raises(ConfigError, match="IDP_LOG_FORMAT"):
        Settings.from_env({**base, "IDP_LOG_FORMAT": "xml"})


def test_idp_serve_defaults_to_json_and_drops_the_gunicorn_access_log(env, app, monkeypatch):
    """Under gunicorn; under granian (the default): test_serve_command."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("IDP_LOG_FORMAT", raising=False)
    calls = []
    monkeypatch.setattr("os.execvp", lambda path, argv: calls.append(argv))
    result = CliRunner().invoke(cli.main, ["serve", "--server", "gunicorn", "--json"])
    assert result.exit_code == 0, result.output
    argv = calls[-1]
    assert argv[argv.index("--env") + 1] == "IDP_LOG_FORMAT=json"
    assert "--access-logfile" not in argv
    monkeypatch.setenv("IDP_LOG_FORMAT", "text")  # the operator's choice wins
    assert CliRunner().invoke(cli.main, ["serve", "--server", "gunicorn", "--json"]
                              ).exit_code == 0
    assert calls[-1][calls[-1].index("--env") + 1] == "IDP_LOG_FORMAT=text"


def test_the_wsgi_entry_point_writes_json_lines_to_stderr(env):
    """What gunicorn loads (idp.wsgi) logs one JSON line per request to stderr."""
    code = ("from idp.wsgi import app\n"
            "app.test_client().get('/healthz', headers={'X-Request-ID': 'probe-1'})\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**env, "IDP_LOG_FORMAT": "json", "PATH": "/usr/bin:/bin"},
                          timeout=60)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(x) for x in done.stderr.splitlines() if x.startswith("{")]
    probe = [x for x in lines if x.get("request_id") == "probe-1"]
    assert len(probe) == 1, done.stderr
    assert probe[0]["route"] == "/healthz" and probe[0]["status"] == 200
    assert probe[0]["logger"] == "idp.request"
