"""DPoP (RFC 9449) at the token endpoint, userinfo and introspection: bound tokens, and every
misuse of a proof refused with the spec's error code, changing nothing."""

import dataclasses

import pytest
from sqlalchemy import func, select

from idp.context import runtime
from idp.extensions import db
from idp.oidc.models import AccessTokenRecord, RefreshToken
from tests.fapi_support import ISSUER, dpop_proof, new_key
from tests.helpers import get_code, login, make_client, make_user

TOKEN_URL = f"{ISSUER}/token"
USERINFO = f"{ISSUER}/userinfo"


@pytest.fixture
def signed_in(ctx, client):
    make_user()
    assert login(client).status_code == 302
    return client


def token_request(http, rp, data, proof=None):
    headers = {"DPoP": proof} if proof else {}
    auth = (rp.client_id, rp.client_secret) if rp.client_secret else None
    if auth is None:
        data = {**data, "client_id": rp.client_id}
    return http.post("/token", data=data, headers=headers, auth=auth)


def code_exchange(http, rp, key, **proof_options):
    code, verifier, _ = get_code(http, rp)
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": rp.redirect_uri,
            "code_verifier": verifier}
    proof = dpop_proof(key, "POST", TOKEN_URL, **proof_options) if key else None
    return token_request(http, rp, data, proof)


def issued() -> int:
    return db.session.scalar(select(func.count()).select_from(AccessTokenRecord))


def userinfo(http, token, proof=None, scheme="DPoP"):
    headers = {"Authorization": f"{scheme} {token}"}
    if proof:
        headers["DPoP"] = proof
    return http.get("/userinfo", headers=headers)


def test_dpop_bound_tokens_work_only_with_a_proof_by_their_key(signed_in):
    rp = make_client(public=True)
    key = new_key()
    response = code_exchange(signed_in, rp, key)
    assert response.status_code == 200, response.text
    body = response.get_json()
    assert body["token_type"] == "DPoP"
    access = body["access_token"]
    ok = userinfo(signed_in, access, dpop_proof(key, "GET", USERINFO, access_token=access))
    assert ok.status_code == 200 and ok.get_json()["sub"]
    # without its proof, as a Bearer token, with another key's proof
    missing = userinfo(signed_in, access)
    assert missing.status_code == 401 and 'error="invalid_dpop_proof"' in \
        missing.headers["WWW-Authenticate"]
    as_bearer = userinfo(signed_in, access, scheme="Bearer")
    assert as_bearer.status_code == 401 and 'error="invalid_token"' in \
        as_bearer.headers["WWW-Authenticate"]
    other = new_key()
    stolen = userinfo(signed_in, access, dpop_proof(other, "GET", USERINFO, access_token=access))
    assert stolen.status_code == 401 and 'error="invalid_token"' in \
        stolen.headers["WWW-Authenticate"]


def test_a_bound_refresh_token_needs_the_same_key(signed_in):
    rp = make_client(public=True)
    key = new_key()
    refresh = code_exchange(signed_in, rp, key).get_json()["refresh_token"]
    data = {"grant_type": "refresh_token", "refresh_token": refresh}
    other = token_request(signed_in, rp, data, dpop_proof(new_key(), "POST", TOKEN_URL))
    assert other.status_code == 400 and other.get_json()["error"] == "invalid_dpop_proof"
    without = token_request(signed_in, rp, data)
    assert without.status_code == 400 and without.get_json()["error"] == "invalid_dpop_proof"
    row = db.session.execute(select(RefreshToken)).scalars().one()
    db.session.refresh(row)
    assert row.rotated_at is None and row.revoked_at is None  # nothing changed
    good = token_request(signed_in, rp, data, dpop_proof(key, "POST", TOKEN_URL))
    assert good.status_code == 200 and good.get_json()["token_type"] == "DPoP"


def test_introspection_shows_the_binding(signed_in):
    rp = make_client(public=True)
    key = new_key()
    access = code_exchange(signed_in, rp, key).get_json()["access_token"]
    server = make_client(grant_types=["client_credentials"], introspect_any=True,
                         scope="openid")
    answer = signed_in.post("/introspect", data={"token": access},
                            auth=(server.client_id, server.client_secret)).get_json()
    assert answer["active"] is True and answer["token_type"] == "DPoP"
    assert answer["cnf"] == {"jkt": key.thumbprint()}


@pytest.mark.parametrize("case", ["replayed", "wrong method", "wrong url", "old iat",
                                  "future iat", "private key in header", "no typ", "alg none",
                                  "signed by another key", "two proofs"])
def test_bad_proofs_at_the_token_endpoint_change_nothing(signed_in, case):
    rp = make_client(public=True)
    key = new_key()
    code, verifier, _ = get_code(signed_in, rp)
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": rp.redirect_uri,
            "code_verifier": verifier, "client_id": rp.client_id}
    headers = {"DPoP": _bad_proof(signed_in, rp, key, case)}
    if case == "two proofs":
        headers = [("DPoP", dpop_proof(key, "POST", TOKEN_URL)),
                   ("DPoP", dpop_proof(key, "POST", TOKEN_URL))]
    refused = signed_in.post("/token", data=data, headers=headers)
    assert refused.status_code == 400 and refused.get_json()["error"] == "invalid_dpop_proof"
    assert issued() == (1 if case == "replayed" else 0)  # the replayed proof's first use
    # the code was not used up: the same exchange with a good proof works
    good = signed_in.post("/token", data=data,
                          headers={"DPoP": dpop_proof(key, "POST", TOKEN_URL)})
    assert good.status_code == 200, good.text


def _bad_proof(http, rp, key, case):
    if case == "replayed":  # a proof already used for another exchange
        proof = dpop_proof(key, "POST", TOKEN_URL)
        code, verifier, _ = get_code(http, rp)
        first = token_request(http, rp, {"grant_type": "authorization_code", "code": code,
                                         "redirect_uri": rp.redirect_uri,
                                         "code_verifier": verifier}, proof)
        assert first.status_code == 200
        return proof
    return {
        "wrong method": lambda: dpop_proof(key, "GET", TOKEN_URL),
        "wrong url": lambda: dpop_proof(key, "POST", f"{ISSUER}/userinfo"),
        "old iat": lambda: dpop_proof(key, "POST", TOKEN_URL, iat_offset=-300),
        "future iat": lambda: dpop_proof(key, "POST", TOKEN_URL, iat_offset=300),
        "private key in header": lambda: dpop_proof(key, "POST", TOKEN_URL,
                                                    jwk=key.as_dict(private=True)),
        "no typ": lambda: dpop_proof(key, "POST", TOKEN_URL, typ="JWT"),
        "alg none": lambda: _unsigned(key),
        "signed by another key": lambda: dpop_proof(key, "POST", TOKEN_URL,
                                                    sign_with=new_key()),
        "two proofs": lambda: "x",
    }[case]()


def _unsigned(key):
    import base64
    import json
    import time

    def part(data):
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return (f"{part({'typ': 'dpop+jwt', 'alg': 'none', 'jwk': key.as_dict(private=False)})}."
            f"{part({'jti': 'j', 'htm': 'POST', 'htu': TOKEN_URL, 'iat': int(time.time())})}.")


def test_htu_is_compared_normalised(signed_in):
    rp = make_client(public=True)
    key = new_key()
    response = code_exchange(signed_in, rp, None)
    assert response.get_json()["token_type"] == "Bearer"  # no proof: a bearer token
    spelled = "HTTP://IDP.TEST:80/token?x=1#f"
    code, verifier, _ = get_code(signed_in, rp)
    ok = token_request(signed_in, rp, {"grant_type": "authorization_code", "code": code,
                                       "redirect_uri": rp.redirect_uri,
                                       "code_verifier": verifier},
                       dpop_proof(key, "POST", spelled))
    assert ok.status_code == 200


def test_a_proof_replayed_at_userinfo_is_refused(signed_in):
    rp = make_client(public=True)
    key = new_key()
    access = code_exchange(signed_in, rp, key).get_json()["access_token"]
    proof = dpop_proof(key, "GET", USERINFO, access_token=access)
    assert userinfo(signed_in, access, proof).status_code == 200
    again = userinfo(signed_in, access, proof)
    assert again.status_code == 401 and 'invalid_dpop_proof' in again.headers["WWW-Authenticate"]
    no_ath = userinfo(signed_in, access, dpop_proof(key, "GET", USERINFO))
    assert no_ath.status_code == 401 and 'invalid_dpop_proof' in \
        no_ath.headers["WWW-Authenticate"]


def test_a_client_registered_for_dpop_cannot_get_bearer_tokens(signed_in):
    rp = make_client(dpop_bound=True)
    refused = code_exchange(signed_in, rp, None)
    assert refused.status_code == 400 and refused.get_json()["error"] == "invalid_dpop_proof"
    assert issued() == 0
    service = make_client(dpop_bound=True, grant_types=["client_credentials"], scope="openid")
    plain = signed_in.post("/token", data={"grant_type": "client_credentials"},
                           auth=(service.client_id, service.client_secret))
    assert plain.status_code == 400 and plain.get_json()["error"] == "invalid_dpop_proof"
    key = new_key()
    bound = signed_in.post("/token", data={"grant_type": "client_credentials"},
                           auth=(service.client_id, service.client_secret),
                           headers={"DPoP": dpop_proof(key, "POST", TOKEN_URL)})
    assert bound.status_code == 200 and bound.get_json()["token_type"] == "DPoP"


def test_server_nonce_when_policy_requires_it(signed_in, monkeypatch):
    rt = runtime()
    fapi = rt.policy.fapi
    monkeypatch.setattr(rt, "policy", dataclasses.replace(rt.policy, fapi=dataclasses.replace(
        fapi, dpop=dataclasses.replace(fapi.dpop, require_nonce=True))))
    rp = make_client(public=True)
    key = new_key()
    code, verifier, _ = get_code(signed_in, rp)
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": rp.redirect_uri,
            "code_verifier": verifier}
    first = token_request(signed_in, rp, data, dpop_proof(key, "POST", TOKEN_URL))
    assert first.status_code == 400 and first.get_json()["error"] == "use_dpop_nonce"
    nonce = first.headers["DPoP-Nonce"]
    forged = token_request(signed_in, rp, data, dpop_proof(key, "POST", TOKEN_URL,
                                                           nonce="1.abc"))
    assert forged.get_json()["error"] == "use_dpop_nonce"
    ok = token_request(signed_in, rp, data, dpop_proof(key, "POST", TOKEN_URL, nonce=nonce))
    assert ok.status_code == 200, ok.text
    access = ok.get_json()["access_token"]
    at_userinfo = userinfo(signed_in, access, dpop_proof(key, "GET", USERINFO,
                                                         access_token=access))
    assert at_userinfo.status_code == 401 and "DPoP-Nonce" in at_userinfo.headers
    assert 'error="use_dpop_nonce"' in at_userinfo.headers["WWW-Authenticate"]


def test_discovery_advertises_dpop(ctx, client):
    meta = client.get("/.well-known/openid-configuration").get_json()
    assert meta["dpop_signing_alg_values_supported"] == ["ES256", "PS256", "RS256"]



def test_used_proofs_are_forgotten_after_their_window(signed_in, frozen):
    from idp.oidc import dpop
    from idp.oidc.models import UsedDpopProof

    rp = make_client(public=True)
    assert code_exchange(signed_in, rp, new_key()).status_code == 200

    def remembered() -> int:
        return db.session.scalar(select(func.count()).select_from(UsedDpopProof))
    dpop.purge_used()
    assert remembered() == 1  # still within the window: a replay must be caught
    frozen.advance(2 * 60 + 2)
    dpop.purge_used()
    assert remembered() == 0


def test_a_code_bound_at_par_needs_the_same_key(signed_in):
    """RFC 9449 §10: a proof with the pushed request (or dpop_jkt) binds the code."""
    from urllib.parse import urlencode

    from tests.fapi_support import authorization_params
    from tests.helpers import query

    rp = make_client()
    key = new_key()
    params, verifier = authorization_params(rp)
    pushed = signed_in.post("/par", data=params, auth=(rp.client_id, rp.client_secret),
                            headers={"DPoP": dpop_proof(key, "POST", f"{ISSUER}/par")})
    assert pushed.status_code == 201, pushed.text
    answer = signed_in.get("/authorize?" + urlencode(
        {"client_id": rp.client_id, "request_uri": pushed.get_json()["request_uri"]}))
    code = query(answer.headers["Location"])["code"]
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": rp.redirect_uri,
            "code_verifier": verifier}
    for proof in (None, dpop_proof(new_key(), "POST", TOKEN_URL)):
        refused = token_request(signed_in, rp, data, proof)
        assert refused.status_code == 400
        assert refused.get_json()["error"] == "invalid_dpop_proof"
    assert issued() == 0
    assert token_request(signed_in, rp, data, dpop_proof(key, "POST", TOKEN_URL)
                         ).status_code == 200


def test_dpop_jkt_at_authorize_binds_the_code(signed_in):
    rp = make_client(public=True)
    key = new_key()
    code, verifier, _ = get_code(signed_in, rp, dpop_jkt=key.thumbprint())
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": rp.redirect_uri,
            "code_verifier": verifier}
    assert token_request(signed_in, rp, data, dpop_proof(new_key(), "POST", TOKEN_URL)
                         ).get_json()["error"] == "invalid_dpop_proof"
    assert token_request(signed_in, rp, data, dpop_proof(key, "POST", TOKEN_URL)
                         ).status_code == 200


def test_bad_dpop_jkt_values_are_refused(signed_in):
    from tests.fapi_support import authorization_params
    from tests.helpers import authorize, pkce, query

    rp = make_client()
    response, _ = authorize(signed_in, rp, pkce()[1], dpop_jkt="not-a-thumbprint")
    assert query(response.headers["Location"])["error"] == "invalid_request"
    key = new_key()
    params, _ = authorization_params(rp, dpop_jkt=new_key().thumbprint())
    mismatch = signed_in.post("/par", data=params, auth=(rp.client_id, rp.client_secret),
                              headers={"DPoP": dpop_proof(key, "POST", f"{ISSUER}/par")})
    assert mismatch.status_code == 400
    assert mismatch.get_json()["error"] == "invalid_dpop_proof"
    wrong_url = signed_in.post("/par", data=authorization_params(rp)[0],
                               auth=(rp.client_id, rp.client_secret),
                               headers={"DPoP": dpop_proof(key, "POST", TOKEN_URL)})
    assert wrong_url.get_json()["error"] == "invalid_dpop_proof"
