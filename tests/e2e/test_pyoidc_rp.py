"""pyoidc (PyPI `oic`, oic.oic.Client) as a hospital would configure it: discovery, dynamic
configuration of the client from its registration, scope `openid profile email`, PKCE S256,
client_secret_basic. It signs in, refreshes twice (pyoidc verifies each refresh's ID token
itself and keeps it in its grant) and logs out with construct_EndSessionRequest, which takes
the newest ID token it holds as id_token_hint: before the IdP answered ID tokens at refresh,
pyoidc found none ("No valid id token available")."""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

import pytest
import requests
from oic.oic import Client
from oic.oic.message import AccessTokenResponse, AuthorizationResponse, RegistrationResponse
from oic.utils.authn.client import CLIENT_AUTHN_METHOD

from tests.e2e.conftest import browser_sign_in, free_port, seed_client
from tests.e2e.refresh_checks import check_refreshed, refused, verified_claims

pytestmark = pytest.mark.e2e

SCOPE = "openid profile email"


def test_pyoidc_signs_in_refreshes_twice_and_logs_out(idp_server, person):
    port = free_port()
    redirect_uri, bye = f"http://127.0.0.1:{port}/cb", f"http://127.0.0.1:{port}/bye"
    rp = seed_client(redirect_uri=redirect_uri, name="pyoidc portal", scope=SCOPE,
                     post_logout_redirect_uris=[bye])
    rp_client = Client(client_authn_method=CLIENT_AUTHN_METHOD)
    info = rp_client.provider_config(idp_server.base)
    assert info["issuer"] == idp_server.base
    rp_client.store_registration_info(RegistrationResponse(
        client_id=rp.client_id, client_secret=rp.client_secret, redirect_uris=[redirect_uri],
        post_logout_redirect_uris=[bye], token_endpoint_auth_method="client_secret_basic"))
    rp_client.redirect_uris = [redirect_uri]

    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    challenge, verifier = rp_client.add_code_challenge()
    request = rp_client.construct_AuthorizationRequest(request_args={
        "client_id": rp.client_id, "response_type": "code", "scope": SCOPE.split(),
        "nonce": nonce, "redirect_uri": redirect_uri, "state": state, **challenge})
    url = request.request(rp_client.authorization_endpoint)
    browser = requests.Session()
    callback = browser_sign_in(idp_server, url, person.username, person.password, redirect_uri,
                               http=browser)
    answer = rp_client.parse_response(AuthorizationResponse, info=urlsplit(callback).query,
                                      sformat="urlencoded")
    assert answer["state"] == state

    token = rp_client.do_access_token_request(
        state=state, request_args={"code": answer["code"], "code_verifier": verifier,
                                   "redirect_uri": redirect_uri},
        authn_method="client_secret_basic")
    assert isinstance(token, AccessTokenResponse), token
    assert token["refresh_token"] and set(token["scope"]) == set(SCOPE.split())
    original = verified_claims(idp_server, token["id_token"].jwt)
    assert original["sub"] == person.subject and original["nonce"] == nonce

    latest = token
    for _ in range(2):
        refreshed = rp_client.do_access_token_refresh(state=state,
                                                      authn_method="client_secret_basic")
        assert isinstance(refreshed, AccessTokenResponse), refreshed
        assert refreshed["refresh_token"] != latest["refresh_token"]
        assert "id_token" in refreshed, "pyoidc found no ID token in the refresh response"
        check_refreshed(idp_server, original, refreshed["id_token"].jwt,
                        refreshed["access_token"])
        latest = refreshed
    userinfo = rp_client.do_user_info_request(state=state)
    assert userinfo["sub"] == person.subject and userinfo["email"] == person.email

    # pyoidc picks the id_token_hint itself: the newest ID token of the grant.
    end = rp_client.construct_EndSessionRequest(state=state, request_args={
        "post_logout_redirect_uri": bye, "state": "bye"})
    hint = end["id_token_hint"]
    assert hint == latest["id_token"].jwt, "pyoidc did not send the refreshed ID token"
    gone = browser.get(end.request(rp_client.end_session_endpoint), allow_redirects=False,
                       timeout=10)
    assert gone.status_code == 302 and gone.headers["Location"] == f"{bye}?state=bye"
    assert browser.get(idp_server.url("/account"), allow_redirects=False,
                       timeout=10).status_code == 302  # signed out at the IdP
    refused(idp_server, rp.client_id, rp.client_secret, latest["refresh_token"])
