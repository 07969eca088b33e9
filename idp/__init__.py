"""The identity provider: create_app() is the application factory."""

from __future__ import annotations

from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from idp.config import MIGRATIONS_DIR, Settings
from idp.context import Runtime
from idp.extensions import csrf, db, limiter
from idp.keys.store import KeyStore
from idp.policy import load_policy


def enable_migrations(app: Flask) -> Flask:
    """Bind Flask-Migrate (Alembic) to `app`, for `idp db upgrade`, the tests and the
    benches. Web workers never migrate, so create_app leaves it out: importing it costs each
    worker about 11 MB."""
    from flask_migrate import Migrate

    Migrate(app, db, directory=str(MIGRATIONS_DIR))
    return app


def create_app(settings: Settings | None = None, *,
               policy_overrides: dict[str, dict[str, Any]] | None = None,
               ensure_keys: bool = True) -> Flask:
    settings = settings or Settings.from_env()
    settings.instance_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    policy = load_policy(settings.policy_dir, policy_overrides)
    # templates/ and static/ are package data beside this file (Flask's defaults).
    app = Flask(__name__, instance_path=str(settings.instance_dir))
    app.config.update(
        SECRET_KEY=settings.secret_key,
        # Key rotation: cookies and CSRF tokens signed with an earlier key still verify.
        SECRET_KEY_FALLBACKS=list(settings.secret_key_fallbacks),
        WTF_CSRF_SECRET_KEY=[*settings.secret_key_fallbacks, settings.secret_key],
        SQLALCHEMY_DATABASE_URI=settings.database_url,
        SQLALCHEMY_ENGINE_OPTIONS=_engine_options(settings.database_url),
        SESSION_COOKIE_NAME="idp_flow",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        PERMANENT_SESSION_LIFETIME=policy.session.idle_timeout,
        MAX_CONTENT_LENGTH=policy.web.max_body_bytes,  # web.toml (idp.web.security)
        WTF_CSRF_TIME_LIMIT=3600,
        PREFERRED_URL_SCHEME="https" if settings.secure_cookies else "http",
        RATELIMIT_STORAGE_URI=settings.redis_url or "memory://",
        RATELIMIT_KEY_PREFIX=settings.ratelimit_prefix,
        RATELIMIT_SWALLOW_ERRORS=True,  # a Redis outage must not stop sign-in (lockout holds)
        # Redis down: count in process memory meanwhile (logged by flask-limiter), back to
        # Redis when it answers again; a dead Redis must not hold a request for long.
        RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=True,
        RATELIMIT_STORAGE_OPTIONS={"socket_connect_timeout": 1, "socket_timeout": 1}
        if settings.redis_url else {},
    )
    runtime = Runtime.build(settings, policy, KeyStore(
        settings.keys_dir, policy.keys.algorithms, policy.keys.rsa_key_size,
        policy.max_token_lifetime))
    app.extensions["idp"] = runtime
    db.init_app(app)
    if settings.database_url.startswith("sqlite"):
        from sqlalchemy import event

        with app.app_context():
            event.listen(db.engine, "connect", _sqlite_wal)
    csrf.init_app(app)
    limiter.init_app(app)
    from idp.web import i18n, public_documents

    i18n.install(app)  # page languages: Flask-Babel, catalogs compiled from idp/translations

    public_documents.install(app)
    from idp.oidc import fast_lane

    fast_lane.install(app)
    if settings.proxy_hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.proxy_hops,
                                x_proto=settings.proxy_hops, x_host=settings.proxy_hops)
    from idp.keys.permissions import check_secret_files

    check_secret_files(settings)
    if ensure_keys:
        runtime.keystore.ensure()

    from idp import models  # noqa: F401  (register every table with SQLAlchemy)
    from idp.accounts.reset_views import bp as reset_bp
    from idp.accounts.settings_views import bp as settings_bp
    from idp.accounts.views import bp as accounts_bp
    from idp.admin import console, views  # noqa: F401  (their routes, on the admin blueprint)
    from idp.admin.blueprint import bp as admin_bp
    from idp.admin.registration import bp as registration_bp
    from idp.core import after_response
    from idp.oidc.install import install as install_oidc
    from idp.onboarding.install import install as install_onboarding
    from idp.sessions.service import apply_cookie, settle
    from idp.web import security

    install_oidc(app)  # before the features: they fill its registry
    app.register_blueprint(accounts_bp)
    from idp.mfa.install import install as install_mfa

    install_mfa(app)
    app.register_blueprint(admin_bp)
    from idp.admin.nav import install as install_admin_nav

    install_admin_nav(app)  # the console's nav; features add their entries (idp.core.admin_nav)
    app.register_blueprint(registration_bp)
    app.register_blueprint(reset_bp)
    app.register_blueprint(settings_bp)
    install_onboarding(app)
    if policy.smart.enabled:  # SMART App Launch; off: no trace of it
        from idp.smart.install import install as install_smart

        install_smart(app)
    from idp.epcs.install import install as install_epcs
    from idp.reports.views import bp as reports_bp

    install_epcs(app)
    from idp.auditstream.install import install as install_audit_stream

    install_audit_stream(app)  # syslog / CEF / FHIR AuditEvent sinks (audit_stream.toml)
    if policy.breakglass.enabled:  # emergency access (breakglass.toml); off: no trace of it
        from idp.breakglass.install import install as install_breakglass

        install_breakglass(app)
    if policy.scim.enabled:  # SCIM provisioning; off: no /scim/v2 route
        from idp.scim.install import install as install_scim

        install_scim(app)
    if policy.ldap.enabled:  # AD / LDAP user federation (federation.toml [ldap])
        from idp.federation.ldap.install import install as install_ldap

        install_ldap(app)
    if policy.saml.enabled:  # SAML 2.0 IdP (saml.toml); off: no /saml route
        from idp.saml.install import install as install_saml

        install_saml(app)
    if policy.upstreams.enabled:  # upstream OpenID Providers (upstreams.toml); off: no route
        from idp.federation.upstream.install import install as install_upstreams

        install_upstreams(app)
    if policy.udap.enabled:  # UDAP / FAST Security IG; off: no /.well-known/udap
        from idp.udap.install import install as install_udap

        install_udap(app)
    app.register_blueprint(reports_bp)
    from idp.web.openapi import bp as openapi_bp

    app.register_blueprint(openapi_bp)
    app.after_request(apply_cookie)
    app.after_request(settle)  # the session upkeep current() found owed, its own commit
    after_response.install(app)  # runs last: every hook before it may queue work
    security.install(app)
    from idp.core import metrics

    metrics.install(app)  # /metrics, only when IDP_METRICS_TOKEN is set
    from idp.web import outage

    outage.install(app)
    from idp.web import gates

    gates.install(app)  # last installed, first to run: every route gated unless allow-listed
    return app


def _sqlite_wal(dbapi_connection: Any, _record: Any) -> None:
    """WAL: a commit appends to the log and syncs it once, instead of writing, syncing and
    deleting a rollback journal (half the token endpoint's time on SQLite went there);
    readers no longer wait for a writer (several gunicorn workers on one file)."""
    dbapi_connection.execute("PRAGMA journal_mode=WAL")


def _engine_options(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 30}}
    return {"pool_pre_ping": True, "pool_size": 5, "max_overflow": 10}
