"""SMART App Launch 2.x: the smart-configuration document (IdP and the EHR's FHIR base), SMART
scopes at /authorize, fhirUser, EHR launch (the EHR registers the context over the back
channel; the token response carries `patient`), standalone launch with the patient picker,
and the demo SMART app end to end. Four real apps under Flask test clients: the IdP, the EHR,
the SMART app, and the browser; their server-to-server calls are routed between the apps'
test clients (Router), so every token is signed and checked with the IdP's real keys."""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from flask import Flask
from joserfc import jwt
from joserfc.jwk import KeySet

from clients import smart_app
from idp import clock
from idp.audit.models import AuditEvent
from idp.context import settings
from idp.extensions import db
from idp.oidc.clients import ClientError, create_client
from idp.oidc.tokens import sign
from idp.smart.models import SmartLaunch
from tests.conftest import TEST_ISSUER
from tests.helpers import (
    auth_params,
    csrf_from,
    exchange,
    login,
    make_client,
    make_user,
    pkce,
    query,
)
from tests.rp_helpers import make_rp

EHR = "http://127.0.0.1:8002"      # the EHR's URL and (policy default) resource identifier
FHIR_BASE = f"{EHR}/fhir"
APP = "http://127.0.0.1:8003"
APP_CALLBACK = f"{APP}/callback"
APP_SCOPE = "openid fhirUser launch launch/patient patient/*.rs offline_access"
NPI = "1234567893"


class Answer:
    """What requests.get/post return, from a test client's response."""

    def __init__(self, response: Any) -> None:
        self.status_code = response.status_code
        self.text = response.get_data(as_text=True)
        self.content = response.get_data()
        self.headers = response.headers

    def json(self) -> Any:
        import json

        return json.loads(self.text)

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            import requests

            raise requests.HTTPError(f"HTTP {self.status_code}")


class Router:
    """requests.get / requests.post between the apps: each URL goes to the test client of the
    app that serves it, without cookies (server to server)."""

    def __init__(self) -> None:
        self.apps: dict[str, Flask] = {}
        self.calls: list[tuple[str, str]] = []

    def _client(self, url: str) -> tuple[Any, str]:
        for base, application in self.apps.items():
            if url.startswith(base + "/"):
                # The IdP's test client serves it as http://localhost (Authlib refuses plain
                # http elsewhere); the EHR answers only on its own host.
                return application.test_client(), url.removeprefix(
                    TEST_ISSUER if base == TEST_ISSUER else "")
        raise AssertionError(f"no app serves {url}")

    def get(self, url: str, headers: dict | None = None, timeout: float = 5, **_: Any
            ) -> Answer:
        self.calls.append(("GET", url))
        http, url = self._client(url)
        return Answer(http.get(url, headers=headers or {}))

    def post(self, url: str, data: dict | None = None, auth: tuple | None = None,
             headers: dict | None = None, timeout: float = 5, **_: Any) -> Answer:
        self.calls.append(("POST", url))
        http, url = self._client(url)
        headers = dict(headers or {})
        if auth:
            raw = f"{auth[0]}:{auth[1]}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        return Answer(http.post(url, data=data or {}, headers=headers))


@pytest.fixture
def stack(ctx, app, tmp_path, monkeypatch):
    """The IdP (in-process), the EHR registered as client `ehr` (a launch registrar in
    policies/smart.toml), the demo SMART app registered as a public client, and the router."""
    router = Router()
    router.apps = {TEST_ISSUER: app}
    ehr_client = create_client(name="EHR", client_id="ehr", redirect_uris=[f"{EHR}/callback"],
                               scope="openid profile roles ehr.patients.read",
                               first_party=True)
    create_client(name="Patient summary", client_id="smart-app", redirect_uris=[APP_CALLBACK],
                  public=True, scope=APP_SCOPE)
    db.session.commit()
    ehr = make_rp("ehr", tmp_path / "ehr", router, EHR_URL=EHR, EHR_AUDIENCE=EHR,
                  EHR_CLIENT_ID="ehr", EHR_CLIENT_SECRET=ehr_client.client_secret,
                  EHR_SMART_APP_LAUNCH_URL=f"{APP}/launch")
    ehr.extensions["ehr.http_post"] = router.post
    app_ = smart_app.create_app({"IDP_ISSUER": TEST_ISSUER, "SMART_APP_URL": APP,
                                 "SMART_APP_FHIR_BASE": FHIR_BASE,
                                 "SMART_APP_SECRET_KEY": "smart-app-cookie-key-0123456789"})
    app_.config["TESTING"] = True
    app_.extensions["smart_app.http"] = router
    app_.extensions["smart_app.keys"]._get = router.get
    router.apps = {TEST_ISSUER: app, EHR: ehr, APP: app_}
    monkeypatch.setitem(app.extensions, "smart.http_get", router.get)
    # The EHR holds the IdP's keys before the IdP asks it for the patient directory (in
    # production the processes are separate; here a nested request would share the IdP's
    # application context).
    ehr.extensions["ehr.verifier"].keys()
    return {"router": router, "ehr": ehr, "app": app_}


def sign_in(ehr_http, *, sub: str, access_token: str = "opaque") -> None:
    """A signed-in EHR session (as its /callback would make) for the EHR's host."""
    import time

    with ehr_http.session_transaction(f"{EHR}/") as session:
        session["sid"] = None
        session["signed_in_at"] = int(time.time())
        session["user"] = {"sub": sub, "name": "Ana Smith", "username": "drsmith",
                           "email": None, "npi": NPI, "roles": ["physician"],
                           "facility": None, "department": None}
        session["token"] = {"access_token": access_token, "expires_at": int(time.time()) + 600}
        session["id_token"] = None


def _verify(client, token: str) -> dict:
    keys = KeySet.import_key_set(client.get("/jwks.json").get_json())
    return jwt.decode(token, keys, algorithms=["RS256", "ES256"]).claims


def _register_launch(client, patient: str = "DEMO-0003", app_client_id: str = "smart-app",
                     secret: str | None = None, **extra: str):
    from idp.oidc.models import Client

    data = {"app_client_id": app_client_id, "patient": patient, **extra}
    headers = {}
    if secret:
        headers["Authorization"] = "Basic " + base64.b64encode(f"ehr:{secret}".encode()).decode()
    assert db.session.query(Client).filter_by(client_id="ehr").count() == 1
    return client.post("/smart/launch", data=data, headers=headers)


def _ehr_secret(stack) -> str:
    return stack["ehr"].extensions["rp"].client_secret


def _app_rp():
    from tests.helpers import Rp

    return Rp("smart-app", None, APP_CALLBACK)


def _consent(client, response):
    """A third-party app: allow on the consent page."""
    assert response.status_code == 200 and 'name="decision"' in response.text, response.text
    url = urlsplit(response.request.url)
    return client.post(f"{url.path}?{url.query}", data={
        "decision": "allow", "csrf_token": csrf_from(response.text)})


# -- the smart-configuration document ----------------------------------------------------------
def test_smart_configuration_has_the_required_fields(stack, client):
    document = client.get("/.well-known/smart-configuration")
    assert document.status_code == 200
    body = document.get_json()
    assert body["issuer"] == TEST_ISSUER
    assert body["authorization_endpoint"] == f"{TEST_ISSUER}/authorize"
    assert body["token_endpoint"] == f"{TEST_ISSUER}/token"
    assert body["jwks_uri"] == f"{TEST_ISSUER}/jwks.json"
    assert body["code_challenge_methods_supported"] == ["S256"]
    assert body["response_types_supported"] == ["code"]
    assert "authorization_code" in body["grant_types_supported"]
    for capability in ("launch-ehr", "launch-standalone", "client-public",
                       "client-confidential-symmetric", "context-ehr-patient",
                       "context-standalone-patient", "permission-v2", "permission-patient",
                       "permission-user", "sso-openid-connect"):
        assert capability in body["capabilities"], capability
    for scope in ("openid", "fhirUser", "launch", "launch/patient", "offline_access",
                  "patient/*.rs", "user/*.rs"):
        assert scope in body["scopes_supported"], scope
    assert None not in body["capabilities"]
    assert document.headers["Access-Control-Allow-Origin"] == "*"
    # Every endpoint it names exists.
    assert client.get("/jwks.json").status_code == 200


def test_the_ehr_fhir_base_publishes_the_same_document(stack, client):
    http = stack["ehr"].test_client()
    relayed = http.get(f"{FHIR_BASE}/.well-known/smart-configuration")
    assert relayed.status_code == 200, relayed.text
    assert relayed.get_json() == client.get("/.well-known/smart-configuration").get_json()
    assert relayed.get_json()["authorization_endpoint"] == f"{TEST_ISSUER}/authorize"


def test_the_ehr_document_is_unavailable_when_the_idp_is_not(stack):
    stack["router"].apps.pop(TEST_ISSUER)
    stack["router"].get = lambda *a, **k: (_ for _ in ()).throw(
        __import__("requests").ConnectionError("down"))
    stack["ehr"].extensions["ehr.verifier"]._get = stack["router"].get
    answer = stack["ehr"].test_client().get(f"{FHIR_BASE}/.well-known/smart-configuration")
    assert answer.status_code == 503


# -- scopes ------------------------------------------------------------------------------------
def _authorize(client, rp, scope: str, **extra):
    verifier, challenge = pkce()
    params = auth_params(rp, challenge, scope=scope, **extra)
    return client.get("/authorize?" + urlencode(params)), params, verifier


@pytest.mark.parametrize("scope", [
    "openid patient/Observation.rs",              # another resource than registered
    "openid user/Patient.rs",                     # user context not registered
    "openid patient/Patient.rs?category=vital-signs patient/Patient.cruds",  # c, u, d not
])  # system/ scopes: refused at /authorize whatever the registration (the backend test)
def test_a_smart_scope_the_client_is_not_registered_for_is_refused(stack, client, scope):
    make_user()
    create_client(name="Narrow", client_id="narrow", redirect_uris=[APP_CALLBACK],
                  public=True, scope="openid launch/patient patient/Patient.rs")
    db.session.commit()
    login(client)
    from tests.helpers import Rp

    response, params, _ = _authorize(client, Rp("narrow", None, APP_CALLBACK), scope)
    assert response.status_code == 302, response.text
    got = query(response.headers["Location"])
    assert got["error"] == "invalid_scope", got
    assert "not registered" in got["error_description"]
    assert got["state"] == params["state"]


@pytest.mark.parametrize("scope", [
    "openid patient/Patient.xyz", "openid patient/Patient.sr", "openid patient/patient.rs",
    "openid patient/Patient.", "openid clinician/Patient.rs",
])
def test_a_malformed_smart_scope_is_invalid_scope(stack, client, scope):
    make_user()
    login(client)
    response, _, _ = _authorize(client, _app_rp(), scope)
    assert query(response.headers["Location"])["error"] == "invalid_scope"


@pytest.mark.parametrize("scope", [
    "openid launch/patient patient/Patient.r",             # narrower than patient/*.rs
    "openid launch/patient patient/Observation.rs?category=laboratory",  # v2 query suffix
    "openid launch/patient patient/Patient.read",          # v1: read = rs
])
def test_a_covered_smart_scope_is_granted_as_asked(stack, client, scope):
    make_user()
    login(client)
    response, _, _ = _authorize(client, _app_rp(), scope)
    consented = _consent(client, response)
    assert consented.status_code == 302
    # standalone launch: the patient picker comes next (the scope was accepted)
    assert consented.headers["Location"].startswith("/smart/patient?"), \
        consented.headers["Location"]


def test_aud_must_name_our_fhir_server(stack, client):
    make_user()
    login(client)
    response, _, _ = _authorize(client, _app_rp(), "openid patient/Patient.rs launch/patient",
                                aud="https://elsewhere.example/fhir")
    got = query(response.headers["Location"])
    assert got["error"] == "invalid_request" and "aud" in got["error_description"]


def test_client_registration_carries_smart_scopes(ctx):
    new = create_client(name="App", redirect_uris=[APP_CALLBACK], public=True,
                        scope="openid fhirUser launch patient/Observation.rs?category=laboratory"
                              " user/Patient.cruds patient/*.read")
    assert "user/Patient.cruds" in new.client.scope.split()
    with pytest.raises(ClientError, match="unknown patient/Patient.xyz"):
        create_client(name="Bad", redirect_uris=[APP_CALLBACK], public=True,
                      scope="openid patient/Patient.xyz")


def test_a_public_smart_app_must_use_pkce(stack, client):
    make_user()
    login(client)
    params = auth_params(_app_rp(), None, scope="openid launch/patient patient/Patient.rs")
    response = client.get("/authorize?" + urlencode(params))
    got = query(response.headers["Location"])
    assert got["error"] == "invalid_request" and "PKCE" in got["error_description"]


def test_a_confidential_smart_app_must_use_pkce_too(stack, client):
    make_user()
    confidential = create_client(name="Confidential SMART app", redirect_uris=[APP_CALLBACK],
                                 scope="openid launch/patient patient/Patient.rs")
    db.session.commit()
    assert not confidential.client.require_pkce
    login(client)
    from tests.helpers import Rp

    rp = Rp(confidential.client.client_id, confidential.client_secret, APP_CALLBACK)
    params = auth_params(rp, None, scope="openid launch/patient patient/Patient.rs")
    got = query(client.get("/authorize?" + urlencode(params)).headers["Location"])
    assert got["error"] == "invalid_request" and "PKCE" in got["error_description"]
    # without SMART scopes the client's own rule applies (no PKCE required of it)
    plain = client.get("/authorize?" + urlencode(auth_params(rp, None, scope="openid")))
    assert plain.status_code == 200 and 'name="decision"' in plain.text  # the consent page


@pytest.fixture
def run(env, app):
    """The `idp` console script against the test database (as tests/integration/test_cli)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([str(Path(sys.executable).parent / "idp"), *args],
                                env={**os.environ, **env}, capture_output=True, text=True,
                                timeout=60)
        assert not check or result.returncode == 0, result.stderr
        return result
    return _run


def test_the_cli_registers_a_smart_app(run, ctx):
    import json

    out = json.loads(run("clients", "create", "--name", "Growth charts", "--redirect-uri",
                         APP_CALLBACK, "--public", "--scope",
                         "openid fhirUser launch patient/*.rs user/Observation.read", "--json"
                         ).stdout)
    from idp.oidc.models import Client

    stored = db.session.query(Client).filter_by(client_id=out["client_id"]).one()
    assert stored.scope == "openid fhirUser launch patient/*.rs user/Observation.read"
    bad = run("clients", "create", "--name", "Bad", "--redirect-uri", APP_CALLBACK,
              "--public", "--scope", "openid patient/*.rws", check=False)
    assert bad.returncode == 2 and "patient/*.rws" in bad.stderr


def test_dynamic_registration_carries_smart_scopes(ctx, client):
    from idp.admin import service as admin

    issued = admin.issue_initial_token(actor="test", lifetime=600, uses=2)
    db.session.commit()
    body = {"client_name": "Growth charts", "redirect_uris": [APP_CALLBACK],
            "grant_types": ["authorization_code"], "token_endpoint_auth_method": "none",
            "scope": "openid fhirUser launch patient/Observation.rs?category=vital-signs"}
    headers = {"Authorization": f"Bearer {issued.token}"}
    created = client.post("/register", json=body, headers=headers)
    assert created.status_code == 201, created.text
    # SMART scopes are carried as a request an admin approves (never self-served)
    doc = created.get_json()
    assert doc["scope"] == "openid" and doc["approval_status"] == "pending"
    assert doc["pending_scope"] == "fhirUser launch patient/Observation.rs?category=vital-signs"
    from idp.admin import approval
    from idp.oidc.models import Client

    row = db.session.execute(db.select(Client).filter_by(client_id=doc["client_id"])).scalar_one()
    approval.approve(row, actor="test")
    db.session.commit()
    read = client.get(f"/register/{doc['client_id']}", headers={
        "Authorization": f"Bearer {doc['registration_access_token']}"}).get_json()
    assert read["scope"] == body["scope"]
    bad = client.post("/register", json={**body, "scope": "openid patient/Observation.rx"},
                      headers=headers)
    assert bad.status_code == 400 and bad.get_json()["error"] == "invalid_client_metadata"


# -- fhirUser ----------------------------------------------------------------------------------
def test_fhir_user_is_in_the_id_token_and_userinfo(stack, client):
    from idp.smart import practitioners

    user = make_user(npi=NPI)
    practitioner = practitioners.resolve(user).practitioner_id  # the EHR's logical id
    assert practitioner and practitioner != NPI
    login(client)
    launch = _register_launch(client, secret=_ehr_secret(stack)).get_json()["launch"]
    response, params, verifier = _authorize(client, _app_rp(), "openid fhirUser launch "
                                            "patient/Patient.rs", launch=launch, aud=FHIR_BASE)
    redirected = _consent(client, response)
    code = query(redirected.headers["Location"])["code"]
    body = exchange(client, _app_rp(), code, verifier).get_json()
    claims = _verify(client, body["id_token"])
    assert claims["fhirUser"] == f"{FHIR_BASE}/Practitioner/{practitioner}"
    info = client.get("/userinfo", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert info.get_json()["fhirUser"] == f"{FHIR_BASE}/Practitioner/{practitioner}"


def test_without_the_fhir_user_scope_there_is_no_fhir_user(stack, client):
    make_user(npi=NPI)
    login(client)
    launch = _register_launch(client, secret=_ehr_secret(stack)).get_json()["launch"]
    response, _, verifier = _authorize(client, _app_rp(), "openid launch patient/Patient.rs",
                                       launch=launch)
    code = query(_consent(client, response).headers["Location"])["code"]
    body = exchange(client, _app_rp(), code, verifier).get_json()
    assert body["patient"] == "DEMO-0003"
    assert "fhirUser" not in _verify(client, body["id_token"])


# -- EHR launch --------------------------------------------------------------------------------
def test_ehr_launch_returns_the_patient_context_in_the_token_response(stack, client):
    user = make_user(npi=NPI)
    login(client)
    registered = _register_launch(client, secret=_ehr_secret(stack), encounter="ENC-77",
                                  sub=user.subject)
    assert registered.status_code == 200, registered.text
    assert registered.headers["Cache-Control"] == "no-store"
    launch = registered.get_json()["launch"]
    assert registered.get_json()["expires_in"] == 300
    response, params, verifier = _authorize(
        client, _app_rp(), "openid fhirUser launch patient/Patient.rs offline_access",
        launch=launch, aud=FHIR_BASE)
    redirected = _consent(client, response)
    assert redirected.status_code == 302
    code = query(redirected.headers["Location"])["code"]
    token = exchange(client, _app_rp(), code, verifier)
    assert token.status_code == 200, token.text
    body = token.get_json()
    assert body["patient"] == "DEMO-0003" and body["encounter"] == "ENC-77"
    access = _verify(client, body["access_token"])
    assert access["patient"] == "DEMO-0003" and access["aud"] == EHR
    # the refresh of this grant carries the same context
    refreshed = client.post("/token", data={"grant_type": "refresh_token",
                                            "refresh_token": body["refresh_token"],
                                            "client_id": "smart-app"}).get_json()
    assert refreshed["patient"] == "DEMO-0003" and refreshed["encounter"] == "ENC-77"
    # the launch was single use
    again, _, _ = _authorize(client, _app_rp(), "openid launch patient/Patient.rs",
                             launch=launch)
    got = query(again.headers["Location"])
    assert got["error"] == "invalid_request" and "launch" in got["error_description"]
    events = [e.event for e in db.session.query(AuditEvent).order_by(AuditEvent.seq)]
    assert "smart.launch_registered" in events and "smart.launch_used" in events


def test_a_launch_is_bound_to_its_app_its_user_and_its_lifetime(stack, client, frozen):
    user = make_user(npi=NPI)
    make_user("drjones", npi=None)
    create_client(name="Other app", client_id="other-app", redirect_uris=[APP_CALLBACK],
                  public=True, scope=APP_SCOPE)
    db.session.commit()
    login(client)
    secret = _ehr_secret(stack)
    from tests.helpers import Rp

    # another app cannot use it
    launch = _register_launch(client, secret=secret).get_json()["launch"]
    response, _, _ = _authorize(client, Rp("other-app", None, APP_CALLBACK),
                                "openid launch patient/Patient.rs", launch=launch)
    assert query(response.headers["Location"])["error"] == "invalid_request"
    # a launch made for another user is refused when the code would be issued
    other = db.session.query(type(user)).filter_by(username="drjones").one()
    launch = _register_launch(client, secret=secret, sub=other.subject).get_json()["launch"]
    response, _, _ = _authorize(client, _app_rp(), "openid launch patient/Patient.rs",
                                launch=launch)
    refused = _consent(client, response)
    got = query(refused.headers["Location"])
    assert got["error"] == "invalid_request" and "another user" in got["error_description"]
    assert "code" not in got
    # an expired one
    launch = _register_launch(client, secret=secret).get_json()["launch"]
    frozen.advance(301)
    response, _, _ = _authorize(client, _app_rp(), "openid launch patient/Patient.rs",
                                launch=launch)
    assert query(response.headers["Location"])["error"] == "invalid_request"
    # scope launch without a launch value
    response, _, _ = _authorize(client, _app_rp(), "openid launch patient/Patient.rs")
    assert query(response.headers["Location"])["error"] == "invalid_request"
    # stored hashed
    values = [row.launch_hash for row in db.session.query(SmartLaunch)]
    assert launch not in values and len(values) == 3


def test_only_a_registrar_may_register_launches(stack, client):
    anonymous = _register_launch(client)
    assert anonymous.status_code == 401 and anonymous.get_json()["error"] == "invalid_client"
    wrong = _register_launch(client, secret="not-the-secret")
    assert wrong.status_code == 401
    portal = create_client(name="Portal", client_id="portal-x", redirect_uris=[APP_CALLBACK],
                           scope="openid")
    db.session.commit()
    raw = f"portal-x:{portal.client_secret}".encode()
    not_registrar = client.post("/smart/launch", data={"app_client_id": "smart-app",
                                                       "patient": "DEMO-0001"},
                                headers={"Authorization": "Basic " +
                                         base64.b64encode(raw).decode()})
    assert not_registrar.status_code == 403
    assert not_registrar.get_json()["error"] == "unauthorized_client"
    secret = _ehr_secret(stack)
    for data, message in (({"patient": "DEMO 1; drop"}, "FHIR id"),
                          ({"patient": ""}, "patient is required"),
                          ({"app_client_id": "nobody"}, "no active client"),
                          ({"app_client_id": "ehr"}, "launch scope")):
        answer = _register_launch(client, secret=secret, **{"patient": "DEMO-0001", **data})
        assert answer.status_code == 400, answer.text
        assert message in answer.get_json()["error_description"]
    assert db.session.query(SmartLaunch).count() == 0


def test_ehr_launch_end_to_end_with_the_demo_app(stack, client):
    """EHR patient list → "Launch app" → the SMART app → the IdP (consent) → the app's
    callback, which reads the launched patient from the EHR's FHIR API."""
    from idp.smart import practitioners

    user = make_user(npi=NPI)
    practitioner = practitioners.resolve(user).practitioner_id
    login(client)
    ehr_http = stack["ehr"].test_client()
    now = clock.timestamp()
    ehr_token = sign({"iss": settings().issuer, "aud": EHR, "sub": user.subject,
                      "client_id": "ehr", "iat": now, "exp": now + 600, "jti": f"j{now}",
                      "scope": "openid ehr.patients.read", "roles": ["physician"]},
                     "RS256", typ="at+jwt")
    sign_in(ehr_http, sub=user.subject, access_token=ehr_token)
    page = ehr_http.get(f"{EHR}/")
    assert page.status_code == 200 and "Launch app" in page.text, page.text
    form = re.search(r'action="(/patients/DEMO-0003/launch)"', page.text)
    assert form, page.text
    csp = page.headers["Content-Security-Policy"]
    assert f"form-action 'self' {TEST_ISSUER} {APP}" in csp
    launched = ehr_http.post(EHR + form.group(1), data={"csrf_token": csrf_from(page.text)})
    assert launched.status_code == 302, launched.text
    target = urlsplit(launched.headers["Location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == f"{APP}/launch"
    args = {k: v[0] for k, v in parse_qs(target.query).items()}
    assert args["iss"] == FHIR_BASE and args["launch"]

    app_http = stack["app"].test_client()
    to_idp = app_http.get(launched.headers["Location"])
    assert to_idp.status_code == 302, to_idp.text
    authorize_url = urlsplit(to_idp.headers["Location"])
    sent = {k: v[0] for k, v in parse_qs(authorize_url.query).items()}
    assert sent["launch"] == args["launch"] and sent["aud"] == FHIR_BASE
    assert sent["code_challenge_method"] == "S256" and "launch" in sent["scope"].split()
    consent = client.get(f"{authorize_url.path}?{authorize_url.query}")
    assert "the selected patient" in consent.text  # the clinical scope, in words
    back = _consent(client, consent)
    assert back.headers["Location"].startswith(APP_CALLBACK + "?")
    shown = app_http.get(back.headers["Location"])
    assert shown.status_code == 200, shown.text
    assert 'id="patient-id">DEMO-0003<' in shown.text and "Marcus Bell" in shown.text
    assert f"{FHIR_BASE}/Practitioner/{practitioner}" in shown.text
    # without the launch, a replay of the callback is refused (state is single use)
    assert app_http.get(back.headers["Location"]).status_code == 400


def test_the_app_refuses_a_launch_from_an_unknown_ehr(stack):
    answer = stack["app"].test_client().get("/launch?" + urlencode(
        {"iss": "https://evil.example/fhir", "launch": "x"}))
    assert answer.status_code == 400 and "does not know" in answer.text


def test_a_launch_button_without_csrf_is_refused(stack):
    ehr_http = stack["ehr"].test_client()
    sign_in(ehr_http, sub="s")
    answer = ehr_http.post(f"{EHR}/patients/DEMO-0003/launch")
    assert answer.status_code == 400
    assert db.session.query(SmartLaunch).count() == 0


# -- standalone launch -------------------------------------------------------------------------
def test_standalone_launch_lets_the_user_pick_the_patient(stack, client):
    make_user(npi=NPI)
    login(client)
    app_http = stack["app"].test_client()
    to_idp = app_http.get(f"{APP}/start")
    assert to_idp.status_code == 302
    authorize_url = urlsplit(to_idp.headers["Location"])
    assert "launch/patient" in parse_qs(authorize_url.query)["scope"][0].split()
    to_picker = _consent(client, client.get(f"{authorize_url.path}?{authorize_url.query}"))
    assert to_picker.status_code == 302
    picker_path = to_picker.headers["Location"]
    assert picker_path.startswith("/smart/patient?")
    picker = client.get(picker_path)
    assert picker.status_code == 200, picker.text
    for name in ("Eleanor Whitfield", "Priya Natarajan", "Ruth Delacroix"):
        assert name in picker.text
    # the IdP read the directory as the user, from the EHR's FHIR API, and its token is
    # revoked now
    assert ("GET", f"{FHIR_BASE}/Patient") in stack["router"].calls
    from idp.oidc.models import AccessTokenRecord

    record = db.session.query(AccessTokenRecord).filter_by(
        client_id="idp-patient-picker").one()
    assert record.revoked_at is not None
    issued = db.session.query(AuditEvent).filter_by(event="token.issued",
                                                    client_id="idp-patient-picker").one()
    assert issued.detail["grant_type"] == "smart_patient_directory"
    next_path = re.search(r'name="next" value="([^"]+)"', picker.text).group(1)
    import html

    refused = client.post("/smart/patient", data={
        "next": html.unescape(next_path), "patient": "DEMO-9999",
        "csrf_token": csrf_from(picker.text)})
    assert refused.status_code == 400 and "Choose one of the patients" in refused.text
    chosen = client.post("/smart/patient", data={
        "next": html.unescape(next_path), "patient": "DEMO-0002",
        "csrf_token": csrf_from(picker.text)})
    assert chosen.status_code == 302
    back = client.get(chosen.headers["Location"])
    assert back.status_code == 302 and back.headers["Location"].startswith(APP_CALLBACK)
    shown = app_http.get(back.headers["Location"])
    assert shown.status_code == 200, shown.text
    assert 'id="patient-id">DEMO-0002<' in shown.text and "Priya Natarajan" in shown.text
    assert "smart.patient_selected" in {e.event for e in db.session.query(AuditEvent)}


def test_the_picker_only_returns_to_our_authorize_endpoint(stack, client):
    make_user()
    login(client)
    answer = client.get("/smart/patient?" + urlencode({"next": "https://evil.example/"}))
    assert answer.status_code == 400
    signed_out = client.application.test_client().get(  # a browser without an IdP session
        "/smart/patient?" + urlencode({"next": "/authorize?x=1"}))
    assert signed_out.status_code == 302 and "/login" in signed_out.headers["Location"]


def test_prompt_none_cannot_show_the_picker(stack, client):
    make_user()
    login(client)
    response, _, _ = _authorize(client, _app_rp(), "openid launch/patient patient/Patient.rs")
    _consent(client, response)  # remember the consent
    again, _, _ = _authorize(client, _app_rp(), "openid launch/patient patient/Patient.rs",
                             prompt="none")
    assert query(again.headers["Location"])["error"] == "interaction_required"


# -- the EHR's FHIR API ------------------------------------------------------------------------
def _fhir_token(scope: str, **claims: Any) -> str:
    now = clock.timestamp()
    return sign({"iss": settings().issuer, "aud": EHR, "sub": "s", "client_id": "smart-app",
                 "iat": now, "exp": now + 600, "jti": f"f{now}", "scope": scope, **claims},
                "RS256", typ="at+jwt")


@pytest.mark.parametrize(("scope", "claims", "path", "status"), [
    ("patient/Patient.rs", {"patient": "DEMO-0003"}, "/Patient/DEMO-0003", 200),
    ("patient/Patient.rs", {"patient": "DEMO-0003"}, "/Patient/DEMO-0001", 403),
    ("patient/Patient.rs", {}, "/Patient/DEMO-0003", 403),              # no patient context
    ("patient/Observation.rs", {"patient": "DEMO-0003"}, "/Patient/DEMO-0003", 403),
    ("patient/Patient.s", {"patient": "DEMO-0003"}, "/Patient/DEMO-0003", 403),  # no read
    ("patient/Patient.read", {"patient": "DEMO-0003"}, "/Patient/DEMO-0003", 200),  # v1
    ("user/Patient.rs", {"roles": ["physician"]}, "/Patient/DEMO-0001", 200),
    ("user/Patient.rs", {}, "/Patient/DEMO-0001", 403),                 # no staff role
    ("ehr.patients.read", {"roles": ["physician"]}, "/Patient/DEMO-0001", 403),
    # system/: only a backend service's own token (the client is the subject, no user)
    ("system/Patient.rs", {"sub": "smart-app"}, "/Patient/DEMO-0001", 200),
    ("system/Patient.rs", {}, "/Patient/DEMO-0001", 403),               # a user's token
    ("system/Patient.rs", {"sub": "smart-app", "auth_time": 1}, "/Patient/DEMO-0001", 403),
    ("system/Observation.rs", {"sub": "smart-app"}, "/Patient/DEMO-0001", 403),
])
def test_the_fhir_api_applies_smart_scopes(stack, scope, claims, path, status):
    http = stack["ehr"].test_client()
    answer = http.get(FHIR_BASE + path,
                      headers={"Authorization": f"Bearer {_fhir_token(scope, **claims)}"})
    assert answer.status_code == status, answer.text


def test_a_patient_token_searches_only_its_patient(stack):
    http = stack["ehr"].test_client()
    answer = http.get(f"{FHIR_BASE}/Patient", headers={
        "Authorization": f"Bearer {_fhir_token('patient/Patient.rs', patient='DEMO-0004')}"})
    assert [e["resource"]["id"] for e in answer.get_json()["entry"]] == ["DEMO-0004"]
    assert http.get(f"{FHIR_BASE}/Patient").status_code == 401


def test_launch_token_responses_pass_the_banner_and_style_through(stack, client):
    """SMART 2.x context-passthrough-banner and -style: beside a patient context the token
    responses (code exchange and refresh) say need_patient_banner and name the style
    document; the access token itself carries neither."""
    capabilities = client.get("/.well-known/smart-configuration").get_json()["capabilities"]
    assert {"context-passthrough-banner", "context-passthrough-style"} <= set(capabilities)
    user = make_user(npi=NPI)
    login(client)
    launch = _register_launch(client, secret=_ehr_secret(stack),
                              sub=user.subject).get_json()["launch"]
    response, _, verifier = _authorize(
        client, _app_rp(), "openid fhirUser launch patient/Patient.rs offline_access",
        launch=launch, aud=FHIR_BASE)
    code = query(_consent(client, response).headers["Location"])["code"]
    body = exchange(client, _app_rp(), code, verifier).get_json()
    assert body["patient"] == "DEMO-0003"
    assert body["need_patient_banner"] is True
    assert body["smart_style_url"] == f"{TEST_ISSUER}/smart/style.json"
    access = _verify(client, body["access_token"])
    assert "need_patient_banner" not in access and "smart_style_url" not in access
    refreshed = client.post("/token", data={"grant_type": "refresh_token",
                                            "refresh_token": body["refresh_token"],
                                            "client_id": "smart-app"}).get_json()
    assert refreshed["need_patient_banner"] is True
    assert refreshed["smart_style_url"] == body["smart_style_url"]
    style = client.get(urlsplit(body["smart_style_url"]).path)
    assert style.status_code == 200 and style.headers["Access-Control-Allow-Origin"] == "*"
    document = style.get_json()
    assert document["color_highlight"] == "#5b2a86" and document["font_family_body"]
    from idp.policy import SMART_STYLE_KEYS

    assert set(document) <= SMART_STYLE_KEYS


def test_without_a_patient_context_there_is_no_banner_or_style(stack, client):
    make_user(npi=NPI)
    login(client)
    response, _, verifier = _authorize(client, _app_rp(), "openid fhirUser")
    code = query(_consent(client, response).headers["Location"])["code"]
    body = exchange(client, _app_rp(), code, verifier).get_json()
    assert "access_token" in body
    assert "need_patient_banner" not in body and "smart_style_url" not in body


def test_a_backend_service_reads_the_fhir_api_with_system_scopes(stack, client):
    """SMART Backend Services: a confidential client authenticating with private_key_jwt gets a
    client_credentials token with system/Patient.rs for the FHIR server, which lets it search
    every patient; a user's sign-in cannot ask for system/ scopes."""
    from joserfc.jwk import RSAKey

    from clients.ehr import data as ehr_data

    key = RSAKey.generate_key(2048, private=True)
    public = {**key.as_dict(private=False), "kid": "svc-1", "use": "sig", "alg": "RS256"}
    service = create_client(name="Population health", redirect_uris=[],
                            grant_types=["client_credentials"], scope="system/Patient.rs",
                            auth_method="private_key_jwt", jwks={"keys": [public]})
    db.session.commit()
    service_id = service.client.client_id
    now = clock.timestamp()
    assertion = jwt.encode({"alg": "RS256", "kid": "svc-1"}, {
        "iss": service_id, "sub": service_id, "aud": f"{TEST_ISSUER}/token",
        "jti": f"a{now}", "iat": now, "exp": now + 120}, key)
    answer = client.post("/token", data={
        "grant_type": "client_credentials", "scope": "system/Patient.rs",
        "client_assertion": assertion,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"})
    assert answer.status_code == 200, answer.text
    body = answer.get_json()
    assert body["scope"] == "system/Patient.rs" and "refresh_token" not in body
    access = _verify(client, body["access_token"])
    assert access["aud"] == EHR and access["sub"] == service_id and "auth_time" not in access
    http = stack["ehr"].test_client()
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    found = http.get(f"{FHIR_BASE}/Patient", headers=bearer)
    assert found.status_code == 200, found.text
    assert {e["resource"]["id"] for e in found.get_json()["entry"]} == {
        p["mrn"] for p in ehr_data.patients()}
    assert http.get(f"{FHIR_BASE}/Patient/DEMO-0002", headers=bearer).status_code == 200
    # A user's sign-in cannot carry a system/ scope, even for a client registered with it.
    make_user(npi=NPI)
    login(client)
    rp = make_client(scope="openid system/Patient.rs")
    refused, _, _ = _authorize(client, rp, "openid system/Patient.rs")
    got = query(refused.headers["Location"])
    assert got["error"] == "invalid_scope" and "backend services" in got["error_description"]
