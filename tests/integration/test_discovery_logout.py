"""Discovery is truthful; RP-initiated logout ends the SSO session."""

from joserfc import jws

from tests.helpers import authorize, exchange, get_code, login, make_client, make_user, pkce, query


def test_discovery_document(ctx, client):
    response = client.get("/.well-known/openid-configuration")
    assert response.status_code == 200 and response.headers["ETag"]
    meta = response.get_json()
    assert meta["issuer"] == "http://idp.test"
    for name in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri",
                 "revocation_endpoint", "introspection_endpoint", "end_session_endpoint"):
        assert meta[name].startswith("http://idp.test/")
        path = meta[name].removeprefix("http://idp.test")
        assert client.options(path).status_code != 404, name
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["response_types_supported"] == ["code"]
    assert meta["request_uri_parameter_supported"] is False  # the default would be true
    assert meta["authorization_response_iss_parameter_supported"] is True
    assert set(meta["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic", "client_secret_post", "private_key_jwt", "none"}
    assert meta["registration_endpoint"] == meta["issuer"] + "/register"  # RFC 7591
    conditional = client.get("/.well-known/openid-configuration",
                             headers={"If-None-Match": response.headers["ETag"]})
    assert conditional.status_code == 304


def test_every_advertised_id_token_alg_works(ctx, client):
    make_user()
    login(client)
    algs = client.get("/.well-known/openid-configuration").get_json()[
        "id_token_signing_alg_values_supported"]
    for alg in algs:
        rp = make_client(name=f"rp-{alg}", id_token_alg=alg)
        code, verifier, _ = get_code(client, rp)
        id_token = exchange(client, rp, code, verifier).get_json()["id_token"]
        assert jws.extract_compact(id_token.encode()).headers()["alg"] == alg


def _tokens(client, rp):
    code, verifier, _ = get_code(client, rp)
    return exchange(client, rp, code, verifier).get_json()


def test_logout_with_id_token_hint_redirects_and_ends_session(ctx, client):
    make_user()
    rp = make_client(post_logout_redirect_uris=["https://rp.example/bye"])
    login(client)
    id_token = _tokens(client, rp)["id_token"]
    response = client.get("/logout", query_string={
        "id_token_hint": id_token, "post_logout_redirect_uri": "https://rp.example/bye",
        "state": "s1"})
    assert response.status_code == 302
    assert response.headers["Location"] == "https://rp.example/bye?state=s1"
    again, _ = authorize(client, rp, pkce()[1], prompt="none")
    assert query(again.headers["Location"])["error"] == "login_required"


def test_logout_refuses_unregistered_post_logout_redirect(ctx, client):
    make_user()
    rp = make_client(post_logout_redirect_uris=["https://rp.example/bye"])
    login(client)
    id_token = _tokens(client, rp)["id_token"]
    response = client.get("/logout", query_string={
        "id_token_hint": id_token, "post_logout_redirect_uri": "https://evil.example/"})
    assert response.status_code == 400 and "Location" not in response.headers
    # the session is untouched
    assert client.get("/account").status_code == 200


def test_logout_without_hint_asks_for_confirmation_and_needs_csrf(ctx, client):
    make_user()
    login(client)
    page = client.get("/logout")
    assert page.status_code == 200 and "Sign out?" in page.text
    forged = client.post("/logout", data={"confirm": "yes"})
    assert forged.status_code == 400
    assert client.get("/account").status_code == 200
    from tests.helpers import csrf_from

    done = client.post("/logout", data={"confirm": "yes", "csrf_token": csrf_from(page.text)})
    assert done.status_code == 200 and "signed out" in done.text
    assert client.get("/account").status_code == 302


def test_forged_id_token_hint_is_refused(ctx, client):
    response = client.get("/logout", query_string={"id_token_hint": "a.b.c"})
    assert response.status_code == 400
