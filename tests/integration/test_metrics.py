"""/metrics (Prometheus text format): absent unless IDP_METRICS_TOKEN is set, then only for
that bearer token; requests by route and status, logins by outcome, lockouts, tokens by
grant, alerts raised, counted when their transaction commits; under `idp serve` with several
gunicorn workers every scrape sums all workers (prometheus-client multiprocess mode)."""

from __future__ import annotations

import base64
import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from idp.audit import service as audit
from idp.extensions import db
from tests.conftest import free_port
from tests.helpers import login, make_client, make_user

TOKEN = "metrics-token-0123456789abcdef"
IDP = str(Path(sys.executable).parent / "idp")


@pytest.fixture
def metrics(ctx, monkeypatch):
    runtime = ctx.extensions["idp"]
    monkeypatch.setattr(runtime, "settings",
                        dataclasses.replace(runtime.settings, metrics_token=TOKEN))
    http = ctx.test_client()

    def scrape() -> dict[tuple[str, tuple], float]:
        response = http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return parse(response.text)
    return scrape


def parse(text: str) -> dict[tuple[str, tuple], float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_absent_without_a_configured_token(client):
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
                      ).status_code == 404


def test_only_the_bearer_token_may_read(ctx, metrics, client):
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"}
                      ).status_code == 401
    assert metrics()  # the right token


def test_requests_by_route_and_status(ctx, metrics, client):
    before = metrics()
    for _ in range(3):
        assert client.get("/healthz").status_code == 200
    assert client.get("/admin/users/12345").status_code == 302  # anonymous: sign in first
    assert client.get("/no/such/page").status_code == 404
    after = metrics()
    healthz = dict(route="/healthz", method="GET", status="200")
    assert value(after, "idp_http_requests_total", **healthz) - \
        value(before, "idp_http_requests_total", **healthz) == 3
    user_page = dict(route="/admin/users/<int(max=2147483647):user_id>", method="GET",
                     status="302")
    assert value(after, "idp_http_requests_total", **user_page) - \
        value(before, "idp_http_requests_total", **user_page) == 1
    assert value(after, "idp_http_requests_total", route="<unmatched>", method="GET",
                 status="404") >= 1
    assert not any("12345" in str(key) or "/no/such" in str(key) for key in after)
    assert value(after, "idp_http_request_duration_seconds_count", route="/healthz") - \
        value(before, "idp_http_request_duration_seconds_count", route="/healthz") == 3


def test_logins_lockouts_tokens_and_alerts(ctx, metrics, client):
    make_user()
    service = make_client(grant_types=["client_credentials"],
                          redirect_uri="https://svc.example/cb", scope="system/Patient.rs")
    before = metrics()
    assert login(client).status_code == 302
    other = ctx.test_client()
    other.environ_base.update({"HTTP_USER_AGENT": "Another browser/1.0"})
    assert login(other).status_code == 302  # a new device: one alert
    for _ in range(5):
        assert login(ctx.test_client(), password="Wrong-password-123!", mfa=False
                     ).status_code == 401
    auth = base64.b64encode(f"{service.client_id}:{service.client_secret}".encode()).decode()
    for _ in range(2):
        assert client.post("/token", headers={"Authorization": f"Basic {auth}"},
                           data={"grant_type": "client_credentials"}).status_code == 200
    after = metrics()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("idp_logins_total", outcome="success") == 2
    assert delta("idp_logins_total", outcome="failure") == 5
    assert delta("idp_lockouts_total") == 1
    assert delta("idp_tokens_issued_total", grant_type="client_credentials") == 2
    assert delta("idp_alerts_raised_total", kind="unusual_sign_in") == 1


def test_a_rolled_back_event_counts_nothing(ctx, metrics):
    before = metrics()
    audit.record("login.success", actor="test")
    db.session.rollback()
    audit.record("login.failure", actor="test")
    db.session.commit()
    after = metrics()
    assert value(after, "idp_logins_total", outcome="success") == \
        value(before, "idp_logins_total", outcome="success")
    assert value(after, "idp_logins_total", outcome="failure") - \
        value(before, "idp_logins_total", outcome="failure") == 1


def test_idp_serve_sums_every_worker(env, app, tmp_path):
    """Two gunicorn sync workers: whichever answers a scrape, the count covers both (granian's
    workers: test_serve_command's SIGHUP test)."""
    port = free_port()
    instance = tmp_path / "instance"
    child_env = {**os.environ, **env, "IDP_METRICS_TOKEN": TOKEN,
                 "IDP_INSTANCE_DIR": str(instance), "IDP_ISSUER": f"http://127.0.0.1:{port}"}
    child_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    server = subprocess.Popen([IDP, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "2",
                               "--server", "gunicorn", "--worker-class", "sync"], env=child_env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                if requests.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or workers still booting
                time.sleep(0.2)
        else:
            pytest.fail("idp serve did not start")
        assert (instance / "prometheus").is_dir()
        for _ in range(20):
            assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
        headers = {"Authorization": f"Bearer {TOKEN}"}
        counts = set()
        pids = set()
        for _ in range(6):
            response = requests.get(f"{base}/metrics", headers=headers, timeout=5)
            assert response.status_code == 200
            counts.add(value(parse(response.text), "idp_http_requests_total",
                             route="/healthz", method="GET", status="200"))
            pids |= {p.name for p in (instance / "prometheus").glob("*.db")}
        assert counts == {20.0}
        assert len({name.rsplit("_", 1)[-1] for name in pids}) >= 2  # both workers write there
    finally:
        server.terminate()
        server.wait(timeout=30)
