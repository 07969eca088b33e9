"""Extensions created here, bound to the app in create_app."""

from flask_limiter import Limiter
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
csrf = CSRFProtect()


def _client_ip() -> str:
    from flask import request

    return request.remote_addr or "unknown"


# Storage is bound in create_app: Redis when REDIS_URL is set (shared by every node),
# process memory otherwise (development, one node).
limiter = Limiter(key_func=_client_ip, headers_enabled=True)
