"""Faults of the services the IdP leans on, answered without a stack trace.

- Database unreachable (restart, failover, killed connection): 503 with Retry-After, a readable
  page, or for protocol endpoints a JSON OAuth-style error (`temporarily_unavailable`). The
  transaction in flight is rolled back by the database, so nothing half-written remains; the
  pool (pool_pre_ping) replaces dead connections, so the next request after the database is back
  succeeds without a restart.
- A password service unreachable (idp.accounts.verifiers: the hospital directory): 503 with
  Retry-After, a readable page or `temporarily_unavailable`, whoever asked for the check.
- Redis unreachable: Flask-Limiter counts in process memory meanwhile
  (RATELIMIT_IN_MEMORY_FALLBACK_ENABLED); its warning is forwarded to the `idp.ratelimit` log.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, has_request_context
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from idp.accounts.verifiers import PasswordServiceUnavailable
from idp.extensions import db
from idp.web.security import _error

RETRY_AFTER_SECONDS = 5
log = logging.getLogger("idp.outage")


class _ForwardLimiterLog(logging.Handler):
    """Flask-Limiter logs to its own logger behind a NullHandler: its fall-back and recovery
    messages would be lost. Re-emit them on ours."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.WARNING or "recovered" in message:
            logging.getLogger("idp.ratelimit").warning("rate limits: %s", message)


def _forget_request_state() -> None:
    """The database rolled the request back: let the browser keep its state as it was too (the
    flow cookie as it came in, no new SSO cookie), so trying again continues where it was."""
    from flask import current_app, g, request, session

    if not has_request_context():
        return
    g.pop("sso_cookie", None)
    original = current_app.session_interface.open_session(current_app, request)
    if original is not None:
        session.clear()
        session.update(original)


def _unavailable(exc: Exception) -> tuple[Response | str, int, dict[str, str]]:

    try:
        db.session.rollback()
    except Exception as again:  # noqa: BLE001 - the connection is gone; the pool replaces it
        log.debug("rollback after outage failed: %s", type(again).__name__)
    _forget_request_state()
    log.warning("database unavailable: %s", type(exc).__name__)
    body, status = _error(503, "temporarily_unavailable",
                          "The service is briefly unavailable. Try again in a few seconds.")
    return body, status, {"Retry-After": str(RETRY_AFTER_SECONDS)}


def _is_outage(exc: DBAPIError) -> bool:
    return isinstance(exc, OperationalError) or bool(exc.connection_invalidated)


def install(app: Flask) -> None:
    limiter_log = logging.getLogger("flask-limiter")
    if not any(isinstance(h, _ForwardLimiterLog) for h in limiter_log.handlers):
        limiter_log.addHandler(_ForwardLimiterLog())
    if limiter_log.level == logging.NOTSET:
        limiter_log.setLevel(logging.INFO)

    @app.errorhandler(DBAPIError)
    def database_error(exc: DBAPIError) -> tuple[Response | str, int, dict[str, str]]:
        if _is_outage(exc):
            return _unavailable(exc)
        from flask import request


        db.session.rollback()
        # As idp.web.security's handler of every other exception: type and where, no data.
        logging.getLogger("idp").error("unhandled %s on %s %s", type(exc).__name__,
                                       request.method, request.path)
        return _error(500, "server_error", "Something went wrong on our side. Try again.")

    @app.errorhandler(PoolTimeout)
    def pool_timeout(exc: PoolTimeout) -> tuple[Response | str, int, dict[str, str]]:
        return _unavailable(exc)

    @app.errorhandler(PasswordServiceUnavailable)
    def password_service_down(exc: PasswordServiceUnavailable
                              ) -> tuple[Response | str, int, dict[str, str]]:
        db.session.rollback()
        log.warning("password service unavailable: %s", exc)
        body, status = _error(503, "temporarily_unavailable",
                              "The service that checks passwords cannot be reached. Try again "
                              "in a few minutes.")
        return body, status, {"Retry-After": "30"}

    _guard_session_teardown(app)


def _guard_session_teardown(app: Flask) -> None:
    """Flask-SQLAlchemy closes the request's session at teardown, after the response is made; a
    connection killed in between makes that ROLLBACK raise, and the finished request would turn
    into a 500. The answer stands: log the outage, drop the broken connection, go on."""
    funcs = app.teardown_appcontext_funcs
    for index, func in enumerate(funcs):
        if getattr(func, "__name__", "") != "_teardown_session" or \
                getattr(func, "idp_guarded", False):
            continue

        def guarded(exc: BaseException | None, _inner=func) -> object:  # noqa: ANN001
            try:
                return _inner(exc)
            except DBAPIError as error:
                if not _is_outage(error):
                    raise
                log.warning("database unavailable while closing a session: %s",
                            type(error).__name__)
                try:
                    db.session.remove()
                except DBAPIError:
                    pass
                return None

        guarded.idp_guarded = True
        funcs[index] = guarded
