"""The OpenAPI description of the JSON endpoints (GET /openapi.json) and schemathesis against it.

Schemathesis generates requests for every operation in the description (valid ones and, in
negative mode, ones that break the schema) and checks each answer: never a server error, a
status code the description lists, the documented content type and a body that matches the
documented schema. Calls go to the in-process app (WSGI). The client's real credentials, the
real initial access token and (for /register/{client_id}) a real registration and its access
token are sent, so the generated data reaches the grants and the registration logic rather
than stopping at authentication (tests/integration/test_hostile_input_property.py covers
garbage credentials). Bounded: MAX_EXAMPLES per operation, deadline=None.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from idp.web.openapi import SPEC
from tests.helpers import make_client, make_user

MAX_EXAMPLES = 30
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance, negative_data_rejection,
          ignored_auth, unsupported_method]


@dataclass
class Credentials:
    basic: str
    access_token: str
    initial_token: str
    client_id: str = ""
    registration_token: str = ""


# Schema-breaking requests must be refused: 413 (body over the limit) is a refusal too.
CONFIG = schemathesis.Config.from_dict({"checks": {"negative_data_rejection": {
    "expected-statuses": [400, 401, 403, 404, 405, 406, 409, 413, 415, 422]}}})


@pytest.fixture
def api_schema(app):
    return schemathesis.openapi.from_wsgi("/openapi.json", app, config=CONFIG)


@pytest.fixture
def creds(app, client):
    from idp.admin.service import issue_initial_token
    from idp.extensions import db
    from tests.helpers import exchange, get_code, login

    with app.app_context():
        make_user()
        rp = make_client()
        initial = issue_initial_token(actor="test", lifetime=3600, uses=100_000).token
        db.session.commit()
    assert login(client).status_code == 302
    code, verifier, _ = get_code(client, rp)
    tokens = exchange(client, rp, code, verifier).get_json()
    basic = base64.b64encode(f"{rp.client_id}:{rp.client_secret}".encode()).decode()
    found = Credentials(basic=f"Basic {basic}", access_token=tokens["access_token"],
                        initial_token=initial)
    _register(client, found)
    return found


def _register(client, creds: Credentials) -> None:
    answer = client.post("/register", json={"client_name": "Registered",
                                            "redirect_uris": ["https://reg.example/cb"]},
                         headers={"Authorization": f"Bearer {creds.initial_token}"})
    assert answer.status_code == 201, answer.text
    body = answer.get_json()
    creds.client_id, creds.registration_token = body["client_id"], body[
        "registration_access_token"]


def _negative_at(case, location: ParameterLocation) -> bool:
    return case.meta is not None and case.meta.is_negative_at(location)


def _headers(case, creds: Credentials) -> dict[str, str]:
    """Real credentials in place of generated ones, unless the case broke its headers on
    purpose (a negative case); a broken path or body stays broken too."""
    names = {k.lower() for k in (case.headers or {})}
    if "authorization" not in names or _negative_at(case, ParameterLocation.HEADER):
        return {}
    path = case.operation.path
    if path in ("/token", "/par", "/revoke", "/introspect"):
        return {"Authorization": creds.basic}
    if path == "/userinfo":
        return {"Authorization": f"Bearer {creds.access_token}"}
    if path == "/register":
        return {"Authorization": f"Bearer {creds.initial_token}"}
    if path == "/register/{client_id}":
        if not _negative_at(case, ParameterLocation.PATH):
            case.path_parameters = {**(case.path_parameters or {}),
                                    "client_id": creds.client_id}
        if case.method.upper() == "PUT" and isinstance(case.body, dict) \
                and not _negative_at(case, ParameterLocation.BODY):
            case.body = {**case.body, "client_id": creds.client_id}
        return {"Authorization": f"Bearer {creds.registration_token}"}
    return {}


def test_the_description_is_served_and_covers_the_json_endpoints(app, client):
    served = client.get("/openapi.json")
    assert served.status_code == 200 and served.is_json
    spec = served.get_json()
    assert spec["openapi"].startswith("3.") and spec["servers"] == [{"url": "http://idp.test"}]
    assert set(spec["paths"]) == {"/.well-known/openid-configuration", "/jwks.json", "/token",
                                  "/par", "/userinfo", "/revoke", "/introspect", "/register",
                                  "/register/{client_id}"}
    # every JSON route of the app is described (a new JSON endpoint must be added)
    rules = {rule.rule.replace("<client_id>", "{client_id}") for rule in app.url_map.iter_rules()}
    assert set(spec["paths"]) <= rules
    assert SPEC.exists()


def _operations() -> list[tuple[str, str, GenerationMode]]:
    """Every operation with valid data; the ones with inputs also with schema-breaking data."""
    import json

    spec = json.loads(SPEC.read_text())
    found = []
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method not in ("get", "post", "put", "delete"):
                continue
            found.append((path, method.upper(), GenerationMode.POSITIVE))
            if "requestBody" in operation or "parameters" in operation \
                    or "parameters" in item:
                found.append((path, method.upper(), GenerationMode.NEGATIVE))
    return found


# The Python API, not schemathesis' pytest plugin (its lazy fixture loader reads a private
# pytest attribute pytest 9 removed).
@pytest.mark.parametrize(("path", "method", "mode"), _operations(),
                         ids=lambda v: v.value if isinstance(v, GenerationMode) else v)
def test_api_conforms_to_its_description(api_schema, creds, client, path, method, mode):
    from idp.extensions import limiter

    operation = api_schema[path][method]
    statuses: list[int] = []

    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def conforms(case) -> None:
        limiter.reset()
        response = case.call_and_validate(headers=_headers(case, creds), checks=CHECKS)
        statuses.append(response.status_code)
        if path == "/register/{client_id}" and response.status_code == 204:
            _register(client, creds)  # deleted: the next example manages a new registration

    conforms()
    assert statuses, "no request was sent"
    if mode is GenerationMode.POSITIVE and (path, method) in SUCCEEDS:
        assert any(200 <= status < 300 for status in statuses), sorted(statuses)


# Operations whose valid requests (with the real credentials) must succeed at least once: the
# run reaches past authentication.
SUCCEEDS = {("/.well-known/openid-configuration", "GET"), ("/jwks.json", "GET"),
            ("/userinfo", "GET"), ("/register/{client_id}", "GET"),
            ("/register/{client_id}", "DELETE")}


def test_non_ascii_client_id_with_a_valid_registration_token_is_401_not_500(client, creds):
    """Found by schemathesis: hmac.compare_digest raised TypeError on a non-ASCII str."""
    for method in ("GET", "PUT", "DELETE"):
        answer = client.open("/register/P\U000f312b\u00e9", method=method, json={},
                             headers={"Authorization": f"Bearer {creds.registration_token}"})
        assert answer.status_code == 401 and answer.get_json()["error"] == "invalid_token"
