"""The device authorization grant (RFC 8628) on Authlib's server: the device authorization
endpoint (codes for a device) and the token endpoint's device_code grant (polling)."""

from __future__ import annotations

import secrets
from typing import Any

from authlib.common.security import generate_token
from authlib.oauth2.rfc6749.errors import (
    AccessDeniedError,
    InvalidGrantError,
    UnauthorizedClientError,
)
from authlib.oauth2.rfc8628 import DeviceAuthorizationEndpoint, DeviceCodeGrant
from authlib.oauth2.rfc8628.endpoint import create_string_user_code
from authlib.oauth2.rfc8628.errors import (
    AuthorizationPendingError,
    ExpiredTokenError,
    SlowDownError,
)

from idp.accounts.models import User
from idp.context import policy, settings
from idp.extensions import db
from idp.oidc import device
from idp.oidc.auth_context import AuthContext
from idp.oidc.server import (
    ALL_AUTH_METHODS,
    RefreshIdToken,
    Server,
    UserGrant,
    carry,
    refuse_unregistered,
)
from idp.policy import DEVICE_CODE_GRANT


def verification_uri() -> str:
    return f"{settings().issuer}/device"


class DeviceAuthorization(DeviceAuthorizationEndpoint):
    """POST /device_authorization: a client registered for the grant gets a device_code and a
    user_code for the scope it is registered for."""

    ENDPOINT_NAME = "device_authorization"
    CLIENT_AUTH_METHODS = ALL_AUTH_METHODS

    def create_endpoint_response(self, request: Any) -> tuple[int, dict, list]:
        client = self.authenticate_client(request)
        if not client.check_grant_type(DEVICE_CODE_GRANT):
            raise UnauthorizedClientError("the client is not registered for the device grant")
        scope = request.payload.scope
        self.server.validate_requested_scope(scope)
        refuse_unregistered(client, scope)
        device_code, user_code = generate_token(42), create_string_user_code()
        device.create(client.client_id, scope or "", device_code, user_code)
        db.session.commit()
        rules = policy().device
        data = {"device_code": device_code, "user_code": user_code,
                "verification_uri": verification_uri(),
                "verification_uri_complete": f"{verification_uri()}?user_code={user_code}",
                "expires_in": rules.expires_in, "interval": rules.interval}
        return 200, data, [("Content-Type", "application/json"),
                           ("Cache-Control", "no-store"), ("Pragma", "no-cache")]


class DeviceGrant(UserGrant, DeviceCodeGrant):
    """Polling at /token with the device_code: authorization_pending until the person
    answers, slow_down when polled faster than the interval, access_denied, expired_token;
    an allowed grant gives tokens once (refresh only with offline_access: no SSO session
    stands behind a shared device)."""

    TOKEN_ENDPOINT_AUTH_METHODS = ALL_AUTH_METHODS

    def query_device_credential(self, device_code: str) -> device.DeviceGrant | None:
        return device.by_device_code(device_code)

    def query_user_grant(self, user_code: str) -> None:
        return None  # decided in validate_device_credential, from the row itself

    def should_slow_down(self, credential: device.DeviceGrant) -> bool:
        return device.polled_too_fast(credential)

    def validate_device_credential(self, credential: device.DeviceGrant) -> User:
        # The token view rolls back a refused request: what a refusal records is committed.
        if credential.status == device.USED:
            raise InvalidGrantError("the device_code was already used")
        if credential.is_expired():
            raise ExpiredTokenError()
        too_fast = self.should_slow_down(credential)
        db.session.commit()
        if too_fast:
            raise SlowDownError()
        if credential.status == device.PENDING:
            raise AuthorizationPendingError()
        if credential.status == device.DENIED:
            raise AccessDeniedError()
        user = db.session.get(User, credential.user_id)
        if user is None or user.disabled or credential.auth_time is None or \
                not device.claim(credential):
            raise InvalidGrantError("the device grant cannot be used")
        carry(self.request, AuthContext(
            sid=None, auth_time=credential.auth_time, acr=credential.acr,
            amr=list(credential.amr or []), family_id=secrets.token_urlsafe(16)))
        return user


def register(server: Server) -> None:
    """Once per process, beside idp.oidc.server.init_oauth's grants."""
    if getattr(server, "device_registered", False):
        return
    server.device_registered = True
    server.register_grant(DeviceGrant, [RefreshIdToken()])
    server.register_endpoint(DeviceAuthorization)
