"""Fixtures shared by the integration tests (the app, database and clock ones are in
tests/conftest.py)."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from tests.helpers import login, make_user


@pytest.fixture
def signed_in(ctx, client) -> FlaskClient:
    """The `client` browser with a live session of drsmith (made here, with an authenticator
    app, signed in with both factors). More browsers or other accounts:
    tests.helpers.signed_in_browser."""
    make_user()
    response = login(client)
    assert response.status_code == 302, response.text[:300]
    return client
