"""Discovery and JWKS replayed in front of Flask (idp/web/public_documents.py): the replay must
be indistinguishable from Flask's own answer, and never serve what Flask would refuse or
would now answer differently."""

import logging

from idp.context import keystore
from idp.web.public_documents import PublicDocuments

DISCOVERY = "/.well-known/openid-configuration"


def _replayer(app) -> PublicDocuments:
    layer = app.wsgi_app
    while not isinstance(layer, PublicDocuments):  # under ProxyFix and the fast lane
        layer = getattr(layer, "wsgi_app", None) or layer.app
    return layer


def test_a_replayed_answer_is_flasks_answer_with_its_own_request_id(ctx, app, client):
    first = client.get(DISCOVERY)
    assert DISCOVERY in _replayer(app).answers  # kept after Flask answered
    second = client.get(DISCOVERY, headers={"X-Request-ID": "rp-42"})
    assert second.status_code == 200 and second.data == first.data
    same = {"Content-Type", "Cache-Control", "ETag", "Content-Security-Policy",
            "X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy",
            "Access-Control-Allow-Origin", "Content-Length"}
    for name in same:
        assert second.headers.get(name) == first.headers.get(name), name
    assert second.headers["X-Request-ID"] == "rp-42"
    third = client.get(DISCOVERY, headers={"X-Request-ID": "not an id; injected=1"})
    assert third.headers["X-Request-ID"] not in (first.headers["X-Request-ID"], "rp-42")
    assert "injected" not in third.headers["X-Request-ID"]


def test_replay_answers_if_none_match_with_304(ctx, client):
    etag = client.get(DISCOVERY).headers["ETag"]
    client.get(DISCOVERY)
    conditional = client.get(DISCOVERY, headers={"If-None-Match": f'"other", {etag}'})
    assert conditional.status_code == 304 and conditional.data == b""
    assert conditional.headers["ETag"] == etag
    assert client.get(DISCOVERY, headers={"If-None-Match": '"other"'}).status_code == 200


def test_a_host_flask_refuses_is_never_replayed(ctx, client):
    client.get(DISCOVERY)
    assert client.get(DISCOVERY).status_code == 200  # now replayed for the trusted host
    for path in (DISCOVERY, "/jwks.json"):
        refused = client.get(path, headers={"Host": "attacker.example"})
        assert refused.status_code == 400, path


def test_a_key_rotation_is_served_at_once(ctx, client):
    before = {k["kid"] for k in client.get("/jwks.json").get_json()["keys"]}
    client.get("/jwks.json")
    created = keystore().rotate(0)
    after = {k["kid"] for k in client.get("/jwks.json").get_json()["keys"]}
    assert set(created) <= after and before <= after  # new keys published, old ones kept


def test_other_methods_and_queries_go_through_flask(ctx, client):
    client.get("/jwks.json")
    assert client.post("/jwks.json").status_code == 405
    assert client.get("/jwks.json?x=1").status_code == 200
    assert client.head("/jwks.json").status_code == 200


def test_a_replayed_request_is_logged_and_counted(ctx, client, caplog):
    from idp.core import metrics

    client.get("/jwks.json")
    sample = metrics.REQUESTS.labels("/jwks.json", "GET", "200")
    before = sample._value.get()
    with caplog.at_level(logging.INFO, logger="idp.request"):
        client.get("/jwks.json", headers={"X-Request-ID": "poll-7"})
    lines = [r for r in caplog.records if getattr(r, "fields", {}).get("request_id") == "poll-7"]
    assert len(lines) == 1
    assert lines[0].fields["route"] == "/jwks.json" and lines[0].fields["status"] == 200
    assert sample._value.get() == before + 1
