"""SCIM 2.0 provisioning plugs in as a blueprint under /scim/v2. create_app calls install()
only when policies/scim.toml has `enabled = true`."""

from __future__ import annotations

from flask import Flask

from idp.scim.views import bp, refuse_unusable_input


def install(app: Flask) -> None:
    app.before_request(refuse_unusable_input)
    app.register_blueprint(bp)
