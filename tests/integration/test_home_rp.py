"""Flows that begin outside any application end at the "home" relying party
(policies/session.toml home_client_id, home_path): the approval mail and the page after a
password reset lead to the portal's sign-in, not to the IdP's bare account page."""

from __future__ import annotations

import dataclasses

from idp.context import runtime
from idp.extensions import db
from idp.oidc.home import home_url
from idp.onboarding.service import approved_mail
from tests.helpers import make_client, make_user
from tests.integration.test_reset import one_link, reset


def test_home_is_the_portal_sign_in_when_the_portal_is_registered(ctx):
    assert home_url() == "http://idp.test/login"  # no client "portal" yet: the IdP itself
    make_client(redirect_uri="https://portal.hospital.example/callback", client_id="portal",
                name="Provider Portal")
    assert home_url() == "https://portal.hospital.example/login"
    user = make_user()
    body = approved_mail(user, "Temp-Pass-123!")[2]
    assert "https://portal.hospital.example/login" in body and "idp.test/login" not in body


def test_a_disabled_or_unnamed_home_falls_back_to_the_idp(ctx, monkeypatch):
    from idp.oidc.models import Client

    make_client(redirect_uri="https://portal.hospital.example/callback", client_id="portal")
    db.session.query(Client).filter_by(client_id="portal").one().disabled = True
    db.session.commit()
    assert home_url() == "http://idp.test/login"
    rt = runtime()
    monkeypatch.setattr(rt, "policy", dataclasses.replace(rt.policy, session=dataclasses.replace(
        rt.policy.session, home_client_id="")))
    assert home_url() == "http://idp.test/login"


def test_the_reset_done_page_leads_to_the_portal(ctx, client, mailbox):
    make_client(redirect_uri="https://portal.hospital.example/callback", client_id="portal",
                name="Provider Portal")
    user = make_user()
    done = reset(client, one_link(client, mailbox, user))
    assert done.status_code == 200 and "Password changed" in done.text
    assert 'id="home" href="https://portal.hospital.example/login"' in done.text
    assert "Sign in to Provider Portal" in done.text
