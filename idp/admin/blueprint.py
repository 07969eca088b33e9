"""The admin console's blueprint (/admin): the page modules (views, console) add their routes
to it; create_app registers it once they are imported."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("admin", __name__, url_prefix="/admin")
