"""The in-process client cache (idp/oidc/client_cache.py): a change made in this process is
honoured at once, a change made elsewhere (another worker or node) within its TTL."""

from __future__ import annotations

import pytest
from sqlalchemy import text, update

from idp.core.crypto import digest
from idp.extensions import db
from idp.oidc import client_cache
from idp.oidc.models import Client
from tests.helpers import Rp, basic, make_client


def _cc(client, rp: Rp) -> int:
    return client.post("/token", headers=basic(rp),
                       data={"grant_type": "client_credentials"}).status_code


@pytest.fixture
def service(ctx) -> Rp:
    return make_client(name="Service", redirect_uri="https://svc.example/cb",
                       grant_types=["client_credentials"], scope="openid")


def test_secret_rotated_in_this_process_is_honoured_at_once(ctx, client, service):
    assert _cc(client, service) == 200  # cached now
    row = db.session.query(Client).filter_by(client_id=service.client_id).one()
    row.client_secret_hash = digest("a-new-secret-0123456789")
    db.session.commit()
    assert _cc(client, service) == 401
    assert _cc(client, Rp(service.client_id, "a-new-secret-0123456789", "")) == 200


def test_client_disabled_by_a_bulk_update_is_refused_at_once(ctx, client, service):
    assert _cc(client, service) == 200
    db.session.execute(update(Client).where(Client.client_id == service.client_id)
                       .values(disabled=True))
    db.session.commit()
    assert _cc(client, service) == 401


def test_change_made_by_another_process_is_seen_after_the_ttl(ctx, client, service,
                                                              monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(client_cache, "_clock", lambda: now[0])
    assert _cc(client, service) == 200
    # Another node disables the client: no event reaches this process.
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE oauth_clients SET disabled = :yes WHERE client_id = :cid"),
                     {"yes": True, "cid": service.client_id})
    assert _cc(client, service) == 200  # still cached
    now[0] += client_cache.TTL + 0.1
    assert _cc(client, service) == 401


def test_callers_get_copies_that_do_not_leak_into_the_cache(ctx, service):
    first = client_cache.get(service.client_id)
    first.redirect_uris.append("https://evil.example/cb")
    first.disabled = True
    again = client_cache.get(service.client_id)
    assert "https://evil.example/cb" not in again.redirect_uris and not again.disabled
    assert client_cache.get("no-such-client") is None
