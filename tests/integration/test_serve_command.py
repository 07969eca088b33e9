"""`idp serve`: worker class, workers and threads from options or IDP_WORKERS / IDP_THREADS."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from idp import cli


@pytest.fixture
def serve(env, app, monkeypatch):
    """Runs `idp serve ...` and returns the gunicorn command it would exec."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    calls = []
    monkeypatch.setattr("os.execvp", lambda path, argv: calls.append(argv))

    def _serve(*args: str, **environ: str) -> tuple[list[str], dict]:
        result = CliRunner().invoke(cli.main, ["serve", "--json", *args], env=environ)
        assert result.exit_code == 0, result.output
        return calls[-1], json.loads(result.output.strip().splitlines()[-1])
    return _serve


def _opt(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_defaults_are_gthread_with_workers_and_threads(serve):
    argv, shown = serve()
    assert _opt(argv, "--worker-class") == "gthread"
    assert shown == {"bind": "127.0.0.1:8000", "workers": 2, "threads": 4,
                     "worker_class": "gthread"}


def test_workers_and_threads_come_from_the_environment(serve):
    argv, _ = serve(IDP_WORKERS="3", IDP_THREADS="8")
    assert _opt(argv, "--workers") == "3" and _opt(argv, "--threads") == "8"
    argv, _ = serve("--workers", "5", IDP_WORKERS="3")  # the option wins
    assert _opt(argv, "--workers") == "5"


def test_sync_workers_run_one_thread(serve):
    argv, shown = serve("--worker-class", "sync", IDP_THREADS="8")
    assert _opt(argv, "--worker-class") == "sync" and _opt(argv, "--threads") == "1"
    assert shown["threads"] == 1


def test_bad_values_are_refused(env, app, monkeypatch):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("os.execvp", lambda path, argv: pytest.fail("must not start"))
    result = CliRunner().invoke(cli.main, ["serve", "--worker-class", "eventlet"])
    assert result.exit_code == 2
    result = CliRunner().invoke(cli.main, ["serve"], env={"IDP_WORKERS": "0"})
    assert result.exit_code == 2
