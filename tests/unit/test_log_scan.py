"""The end-of-run log scan (tests/log_scan.py): it finds planted secrets of every shape, names
their kind and never the secret, and a run whose app logs a registered secret fails."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from idp.config import PROJECT_ROOT
from tests.log_scan import Scanner, register, registered, scan_files

SECRETS = {
    "Sturdy-Cedar-Lantern-42!": "password",
    "483920": "TOTP code",
    "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl": "id token",
    "q1w2e3r4t5y6u7i8o9p0-_zz": "refresh token",
    "!!--!!--": "odd secret",
}


def _kinds(text: str, secrets: dict[str, str] = SECRETS) -> list[str]:
    return list(Scanner(secrets).line(text))


def test_each_shape_of_secret_is_found_wherever_it_sits_in_a_line():
    assert _kinds("login failed password=Sturdy-Cedar-Lantern-42! for x") == ["password"]
    assert _kinds('{"code":"483920","x":1}') == ["TOTP code"]
    assert _kinds("code=483920") == ["TOTP code"]
    assert _kinds("GET /logout?id_token_hint=eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0."
                  "c2lnbmF0dXJl&state=1") == ["id token"]
    assert _kinds("tokenq1w2e3r4t5y6u7i8o9p0-_zzz") == ["refresh token"]  # glued to text
    assert _kinds("weird !!--!!-- here") == ["odd secret"]
    both = _kinds("pw Sturdy-Cedar-Lantern-42! and code 483920 and Sturdy-Cedar-Lantern-42!")
    assert sorted(both) == ["TOTP code", "password"]


def test_near_misses_and_clean_lines_are_not_hits():
    clean = ("2026-11-25 05:52:32,483 INFO idp.request request request_id=4839201a "
             "route=/token status=200 latency_ms=483.92 user=x4839200")
    assert _kinds(clean) == []
    assert _kinds("Sturdy-Cedar-Lantern-41!") == []           # one character differs
    assert _kinds("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.") == []  # a prefix of the token
    assert _kinds("1483920") == [] and _kinds("4839201") == []


def test_scan_files_reports_kind_file_and_line_but_never_the_secret(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("fine\nleak Sturdy-Cedar-Lantern-42!\nfine\ncode=483920\n")
    hits = scan_files([log], SECRETS)
    assert [(h.kind, h.line_number) for h in hits] == [("password", 2), ("TOTP code", 4)]
    for hit in hits:
        assert "Sturdy" not in str(hit) and "483920" not in str(hit)
        assert str(log) in str(hit)


def test_register_keeps_secrets_long_enough_to_mean_something():
    register("client secret", "s3cr3t-value-for-the-registry")
    register("nothing", "")
    register("nothing", None)
    register("nothing", "12345")  # shorter than any secret the IdP issues
    known = registered()
    assert known["s3cr3t-value-for-the-registry"] == "client secret"
    assert "12345" not in known and "" not in known


PLANTED = '''
    import logging

    from tests.log_scan import register


    def test_the_app_logs_a_password():
        register("password", "Planted-Password-0042!")
        logging.getLogger("idp.accounts").warning("login with Planted-Password-0042! failed")


    def test_the_app_logs_a_code():
        register("emailed one-time code", "918273")
        logging.getLogger("idp").info("sent code 918273")
'''


def test_a_run_that_logs_a_registered_secret_fails_and_names_the_kind(tmp_path):
    """A real pytest run with the plugin: its tests pass, the log scan fails the run."""
    (tmp_path / "test_planted.py").write_text(textwrap.dedent(PLANTED))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.log_scan", "-p", "no:cacheprovider",
         "-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    out = run.stdout + run.stderr
    assert "2 passed" in out, out
    assert run.returncode == 1, out
    assert "SECRETS IN LOGS" in out and "password" in out and "emailed one-time code" in out
    assert "Planted-Password-0042!" not in out and "918273" not in out
    # the same run without the leak passes
    (tmp_path / "test_planted.py").write_text(textwrap.dedent(PLANTED).replace(
        "login with Planted-Password-0042! failed", "login failed").replace(
        "sent code 918273", "sent a code"))
    clean = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.log_scan", "-p", "no:cacheprovider",
         "-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "no secret found" in clean.stdout
