"""The mfa blueprint (/mfa/...). The view modules add their routes to it; idp.mfa.install
imports them and registers it, in one place."""

from flask import Blueprint

bp = Blueprint("mfa", __name__, url_prefix="/mfa")
