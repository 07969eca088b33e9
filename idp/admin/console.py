"""Admin console pages (registered on the admin blueprint): clients, users, audit, alerts.

Every route checks the role it needs and a recent authentication (require_role); every POST
carries a CSRF token (CSRFProtect); every change is audited as "admin:<user id>" in the same
transaction as the change."""

from __future__ import annotations

import functools
from collections.abc import Callable

from flask import (
    Response,
    abort,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from sqlalchemy import select
from werkzeug.wrappers import Response as AnyResponse

from idp import clock
from idp.accounts import lockout, reset
from idp.accounts import settings as account_settings
from idp.accounts.models import User
from idp.admin import approval, service
from idp.admin.access import (
    ADMIN_ROLES,
    CONSOLE_ROLES,
    SECURITY_ROLES,
    RoleGroup,
    actor,
    require_role,
)
from idp.admin.alert_text import MARK, STATES, present
from idp.admin.blueprint import bp
from idp.admin.forms import ClientForm, RegistrationTokenForm, lines
from idp.admin.models import RegistrationAccessToken
from idp.audit import service as audit
from idp.context import policy
from idp.core import admin_nav
from idp.core.i18n import gettext as _
from idp.core.i18n import lazy_gettext as _l
from idp.extensions import db
from idp.mfa import manage as mfa_manage
from idp.mfa.models import Factor
from idp.oidc import clients as client_service
from idp.oidc.models import Client
from idp.oidc.tokens import revoke_session_tokens
from idp.policy import TokenPolicy
from idp.security import geoip
from idp.security.models import SecurityAlert
from idp.sessions import service as sessions
from idp.sessions.models import SsoSession

Page = AnyResponse | str | tuple[str, int]


@bp.get("/")
@require_role(CONSOLE_ROLES)
def index(sso: SsoSession) -> Page:
    return render_template("admin/index.html", role=sso.user.role,
                           tiles=admin_nav.tiles_for(sso.user.role))


# -- clients -------------------------------------------------------------------------------
@bp.app_template_global("token_policy")
def token_policy() -> TokenPolicy:
    """tokens.toml for the client form: defaults and bounds of per-client lifetimes."""

    return policy().tokens


def _client(client_id: str) -> Client:
    client = db.session.execute(select(Client).where(Client.client_id == client_id[:64])
                                ).scalar_one_or_none()
    if client is None:
        abort(404)
    return client


@bp.get("/clients")
@require_role(ADMIN_ROLES)
def clients(sso: SsoSession) -> Page:
    rows = db.session.execute(select(Client).order_by(Client.client_name)).scalars().all()
    return render_template("admin/clients.html", clients=rows, token_form=RegistrationTokenForm())


def _refused(exc: client_service.ClientError, sso: SsoSession) -> None:
    """Roll the change back; a URI the outbound policy forbids is audited on its own."""
    db.session.rollback()
    if isinstance(exc, client_service.UriRefused):
        client_service.record_refusal(exc, actor(sso))
        db.session.commit()


def _form_values(form: ClientForm) -> dict:
    return {"name": (form.client_name.data or "").strip(),
            "redirect_uris": lines(form.redirect_uris.data),
            "post_logout_redirect_uris": lines(form.post_logout_redirect_uris.data),
            "backchannel_logout_uri": (form.backchannel_logout_uri.data or "").strip() or None,
            "grant_types": list(form.grant_types.data or []),
            "scope": (form.scope.data or "").strip(),
            "auth_method": form.token_endpoint_auth_method.data,
            "first_party": bool(form.first_party.data),
            "require_pkce": bool(form.require_pkce.data),
            "lifetimes": client_service.Lifetimes(form.access_token_lifetime.data,
                                                  form.id_token_lifetime.data,
                                                  form.refresh_token_lifetime.data)}


@bp.route("/clients/new", methods=["GET", "POST"])
@require_role(ADMIN_ROLES)
def client_new(sso: SsoSession) -> Page:
    form = ClientForm()
    if request.method == "GET":
        return render_template("admin/client_form.html", form=form, client=None)
    if not form.validate_on_submit():
        return render_template("admin/client_form.html", form=form, client=None,
                               error=_("Check the fields marked below.")), 400
    values = _form_values(form)
    if not values["grant_types"]:
        return render_template("admin/client_form.html", form=form, client=None,
                               error=_("Grant types: choose at least one.")), 400
    try:
        new = client_service.create_client(
            name=values["name"], redirect_uris=values["redirect_uris"],
            public=values["auth_method"] == "none", grant_types=values["grant_types"],
            scope=values["scope"], post_logout_redirect_uris=values["post_logout_redirect_uris"],
            backchannel_logout_uri=values["backchannel_logout_uri"],
            first_party=values["first_party"], auth_method=values["auth_method"],
            require_pkce=values["require_pkce"], actor=actor(sso),
            lifetimes=values["lifetimes"])
    except client_service.ClientError as exc:
        _refused(exc, sso)
        return render_template("admin/client_form.html", form=form, client=None,
                               error=str(exc)), 400
    db.session.commit()
    return render_template("admin/client_secret.html", client=new.client,
                           secret=new.client_secret, created=True)


@bp.route("/clients/<client_id>", methods=["GET", "POST"])
@require_role(ADMIN_ROLES)
def client_edit(sso: SsoSession, client_id: str) -> Page:
    client = _client(client_id)
    if request.method == "GET":
        form = ClientForm(data={
            "client_name": client.client_name,
            "redirect_uris": "\n".join(client.redirect_uris or []),
            "post_logout_redirect_uris": "\n".join(client.post_logout_redirect_uris or []),
            "backchannel_logout_uri": client.backchannel_logout_uri or "",
            "grant_types": list(client.grant_types or []), "scope": client.scope,
            "token_endpoint_auth_method": client.token_endpoint_auth_method,
            "require_pkce": client.require_pkce, "first_party": client.first_party,
            "access_token_lifetime": client.access_token_lifetime,
            "id_token_lifetime": client.id_token_lifetime,
            "refresh_token_lifetime": client.refresh_token_lifetime})
        return render_template("admin/client_form.html", form=form, client=client)
    form = ClientForm()
    if not form.validate_on_submit():
        return render_template("admin/client_form.html", form=form, client=client,
                               error=_("Check the fields marked below.")), 400
    values = _form_values(form)
    try:
        secret = client_service.update_client(
            client, name=values["name"], redirect_uris=values["redirect_uris"],
            grant_types=values["grant_types"] or None, scope=values["scope"],
            post_logout_redirect_uris=values["post_logout_redirect_uris"],
            backchannel_logout_uri=values["backchannel_logout_uri"],
            auth_method=values["auth_method"], first_party=values["first_party"],
            require_pkce=values["require_pkce"], actor=actor(sso),
            lifetimes=values["lifetimes"])
    except client_service.ClientError as exc:
        _refused(exc, sso)
        return render_template("admin/client_form.html", form=form, client=client,
                               error=str(exc)), 400
    db.session.commit()
    if secret:
        return render_template("admin/client_secret.html", client=client, secret=secret)
    return redirect(url_for("admin.client_edit", client_id=client.client_id, saved=1))


@bp.post("/clients/<client_id>/rotate-secret")
@require_role(ADMIN_ROLES)
def client_rotate(sso: SsoSession, client_id: str) -> Page:
    client = _client(client_id)
    try:
        secret = client_service.rotate_secret(client, actor=actor(sso))
    except client_service.ClientError as exc:
        db.session.rollback()
        return render_template("admin/message.html", title=_("Secret not rotated"),
                               message=str(exc)), 400
    db.session.commit()
    return render_template("admin/client_secret.html", client=client, secret=secret)


@bp.post("/clients/<client_id>/disable")
def client_disable(client_id: str) -> AnyResponse:
    return _client_disabled(client_id, True)


@bp.post("/clients/<client_id>/enable")
def client_enable(client_id: str) -> AnyResponse:
    return _client_disabled(client_id, False)


@require_role(ADMIN_ROLES)
def _client_disabled(sso: SsoSession, client_id: str, disabled: bool) -> AnyResponse:
    client_service.set_client_disabled(_client(client_id), disabled, actor=actor(sso))
    db.session.commit()
    return redirect(url_for("admin.client_edit", client_id=client_id))


@bp.post("/clients/<client_id>/delete")
@require_role(ADMIN_ROLES)
def client_delete(sso: SsoSession, client_id: str) -> AnyResponse:
    client = _client(client_id)

    db.session.query(RegistrationAccessToken).filter_by(client_id=client.client_id).delete()
    client_service.delete_client(client, actor=actor(sso))
    db.session.commit()
    return redirect(url_for("admin.clients"))


@bp.post("/clients/<client_id>/approve")
def client_approve(client_id: str) -> Page:
    """Grant what a self-registered client's pending request asks for."""
    return _decide(client_id, approval.approve, "approved")


@bp.post("/clients/<client_id>/reject")
def client_reject(client_id: str) -> Page:
    """Drop a self-registered client's pending request; it keeps what it holds."""
    return _decide(client_id, approval.reject, "rejected")


@require_role(ADMIN_ROLES)
def _decide(sso: SsoSession, client_id: str, decision: Callable[..., dict], done: str) -> Page:
    client = _client(client_id)
    try:
        decision(client, actor=actor(sso))
    except approval.NothingPending:
        db.session.rollback()
        return render_template("admin/message.html", title=_("Nothing to decide"),
                               message=_("This client has no pending request.")), 400
    db.session.commit()
    return redirect(url_for("admin.client_edit", client_id=client.client_id, decided=done))


@bp.post("/registration-tokens")
@require_role(ADMIN_ROLES)
def registration_token(sso: SsoSession) -> Page:
    """An initial access token for RFC 7591 registration at /register, shown once."""
    form = RegistrationTokenForm()
    if not form.validate_on_submit():
        return render_template("admin/message.html", title=_("No token issued"),
                               message=_("Give a validity of 1-720 hours and 1-100 uses.")), 400
    issued = service.issue_initial_token(actor=actor(sso), lifetime=form.lifetime_hours.data * 3600,
                                         uses=form.uses.data, note=form.note.data)
    db.session.commit()
    return render_template("admin/registration_token.html", issued=issued)


# -- users ---------------------------------------------------------------------------------
def _user(user_id: int) -> User:
    user = db.session.get(User, user_id)
    if user is None:
        abort(404)
    return user


@bp.get("/users")
@require_role(SECURITY_ROLES)
def users(sso: SsoSession) -> Page:
    text = request.args.get("q", "")[:100]
    locked = request.args.get("locked") == "1"
    page = request.args.get("page", "1")
    page_no = int(page) if page.isdigit() and 0 < len(page) < 6 and int(page) > 0 else 1
    rows, total = service.user_page(text, page_no, locked=locked)
    pages = max(1, -(-total // service.SEARCH_LIMIT))
    return render_template("admin/users.html", q=text, users=rows, total=total,
                           page=page_no, pages=pages, locked=locked, now=clock.now())


@bp.get("/users/<int(max=2147483647):user_id>")
@require_role(SECURITY_ROLES)
def user_page(sso: SsoSession, user_id: int) -> Page:
    done = DONE.get(request.args.get("done", ""))
    return _render_user(sso, _user(user_id), done=str(done) if done else None)


def _render_user(sso: SsoSession, user: User, *, done: str | None = None,
                 error: str | None = None) -> str:
    factors = db.session.execute(select(Factor).where(Factor.user_id == user.id)
                                 .order_by(Factor.id)).scalars().all()
    return render_template(
        "admin/user.html", user=user, factors=factors,
        sessions=account_settings.live_sessions(user), logins=service.recent_logins(user.id),
        locked=lockout.is_locked(user), is_admin=sso.user.role in ADMIN_ROLES,
        roles=policy().roles, done=done, error=error,
        place=geoip.lookup if geoip.enabled() else None)


def _user_action(roles: RoleGroup = ADMIN_ROLES
                 ) -> Callable[[Callable[..., str | tuple[str, int]]], Callable[..., Page]]:
    """One admin action on one user (POST /admin/users/<user_id>/...), run as
    `action(sso, user, **url_values)` for a holder of `roles` (404 for no such user). An
    action returns a DONE key: its change is committed and the browser goes back to the user
    page saying so; anything else it returns (an error page) is sent as it is."""

    def decorate(action: Callable[..., str | tuple[str, int]]) -> Callable[..., Page]:
        @require_role(roles)
        @functools.wraps(action)
        def run(sso: SsoSession, user_id: int, **values: str) -> Page:
            user = _user(user_id)
            done = action(sso, user, **values)
            if not isinstance(done, str):
                return done
            db.session.commit()
            return redirect(url_for("admin.user_page", user_id=user.id, done=done))

        return run

    return decorate


# What the user page says after an action (the query names a key, never free text).
DONE = {
    "unlocked": _l("Account unlocked."),
    "self_disable": _l("You cannot disable your own account."),
    "disabled": _l("Account disabled; its sessions ended and its tokens were revoked."),
    "enabled": _l("Account enabled."),
    "mfa_reset": _l("Every sign-in method was removed and every session ended; the next "
                    "sign-in enrolls again."),
    "reset_sent": _l("A password reset link was emailed to the account's address."),
    "reset_failed": _l("The mail server did not accept the reset email; it is queued and will "
                       "be sent when the server is back (a new link would replace it)."),
    "reset_disabled": _l("The account is disabled; enable it first."),
    "self_role": _l("You cannot change your own role."),
    "role_changed": _l("Role changed; every session ended and every token was revoked, so the "
                       "new role appears only in new tokens (an EPCS permission is revoked when "
                       "the new role is not clinical)."),
    "session_gone": _l("That session had ended already."),
    "session_ended": _l("Session ended; its tokens were revoked."),
    "sessions_ended": _l("Every session ended; every token revoked."),
}


@bp.post("/users/<int(max=2147483647):user_id>/unlock")
@_user_action()
def user_unlock(sso: SsoSession, user: User) -> str:
    lockout.unlock(user)
    audit.record("user.unlocked", user_id=user.id, actor=actor(sso))
    return "unlocked"


@bp.post("/users/<int(max=2147483647):user_id>/disable")
@_user_action()
def user_disable(sso: SsoSession, user: User) -> str:
    if user.id == sso.user_id:
        return "self_disable"
    account_settings.set_disabled(user, True, actor=actor(sso))
    return "disabled"


@bp.post("/users/<int(max=2147483647):user_id>/enable")
@_user_action()
def user_enable(sso: SsoSession, user: User) -> str:
    account_settings.set_disabled(user, False, actor=actor(sso))
    return "enabled"


@bp.post("/users/<int(max=2147483647):user_id>/reset-mfa")
@_user_action()
def user_reset_mfa(sso: SsoSession, user: User) -> str:
    """Every factor removed and every session ended: the next sign-in enrolls again."""
    mfa_manage.reset(user, actor=actor(sso))
    account_settings.sign_out_everywhere(user, "mfa_reset", actor=actor(sso))
    return "mfa_reset"


@bp.post("/users/<int(max=2147483647):user_id>/role")
@_user_action()
def user_change_role(sso: SsoSession, user: User) -> str | tuple[str, int]:
    """Another role from policies/roles.toml; the account is signed out everywhere."""
    if user.id == sso.user_id:
        return "self_role"
    error = service.change_role(user, request.form.get("role", "")[:64], sso.user)
    if error:
        db.session.rollback()
        return _render_user(sso, user, error=error), 400
    return "role_changed"


@bp.post("/users/<int(max=2147483647):user_id>/send-reset")
@_user_action()
def user_send_reset(sso: SsoSession, user: User) -> str:
    if user.disabled:
        return "reset_disabled"
    link = reset.issue_link(user)
    audit.record("password.reset_link_sent", user_id=user.id, actor=actor(sso))
    db.session.commit()  # the link is stored before the mail that carries it is sent
    sent = reset.send_link(link, helpdesk=True)
    return "reset_sent" if sent else "reset_failed"


@bp.post("/users/<int(max=2147483647):user_id>/sessions/<sid>/end")
@_user_action(SECURITY_ROLES)
def user_end_session(sso: SsoSession, user: User, sid: str) -> str:
    sid = sid[:64]
    # sessions.end_where: the one place a session ends (its RPs get back-channel logout tokens)
    ended = sessions.end_where(SsoSession.id == sid, SsoSession.user_id == user.id,
                               reason="admin")
    if not ended:
        return "session_gone"
    revoke_session_tokens(sid)
    audit.record("session.ended", user_id=user.id, actor=actor(sso), sid=sid)
    return "session_ended"


@bp.post("/users/<int(max=2147483647):user_id>/sessions/end-all")
@_user_action(SECURITY_ROLES)
def user_end_all(sso: SsoSession, user: User) -> str:
    current = sso if sso.user_id == user.id else None
    account_settings.sign_out_everywhere(user, "admin", current, actor=actor(sso))
    return "sessions_ended"


# -- audit ---------------------------------------------------------------------------------
@bp.get("/audit")
@require_role(SECURITY_ROLES)
def audit_log(sso: SsoSession) -> Page:
    flt = service.AuditFilter.from_args(request.args)
    before = request.args.get("before", "")
    try:
        rows = service.audit_page(flt, int(before) if before.isdigit() and len(before) < 10
                                  else None)
    except service.FilterError as exc:
        return render_template("admin/audit.html", flt=flt, rows=[], error=str(exc)), 400
    return render_template("admin/audit.html", flt=flt, rows=rows,
                           older=rows[-1].seq if len(rows) == service.AUDIT_PAGE else None)


@bp.get("/audit/export.jsonl")
@require_role(SECURITY_ROLES)
def audit_export(sso: SsoSession) -> Page:
    """The filtered events as JSON Lines, oldest first, with prev_hash and hash: anyone can
    re-hash each line (and the links between consecutive events) offline."""
    flt = service.AuditFilter.from_args(request.args)
    try:
        service.audit_query(flt)
    except service.FilterError as exc:
        return render_template("admin/message.html", title=_("Export refused"),
                               message=str(exc)), 400
    audit.record("admin.audit_exported", user_id=sso.user_id, actor=actor(sso),
                 filters=flt.as_args())
    db.session.commit()
    stamp = clock.now().strftime("%Y%m%dT%H%M%SZ")
    return Response(stream_with_context(service.export_lines(flt)),
                    mimetype="application/jsonl",
                    headers={"Content-Disposition": f'attachment; filename="audit-{stamp}.jsonl"',
                             "Cache-Control": "no-store"})


# -- alerts --------------------------------------------------------------------------------
@bp.get("/alerts")
@require_role(SECURITY_ROLES)
def alerts(sso: SsoSession) -> Page:
    state = request.args.get("state", "")
    state = state if state in service.ALERT_STATES else ""
    return render_template("admin/alerts.html", alerts=present(service.alerts(state or None)),
                           state=state, states=service.ALERT_STATES, state_label=STATES,
                           mark=MARK)


@bp.post("/alerts/<int(max=2147483647):alert_id>/state")
@require_role(SECURITY_ROLES)
def alert_state(sso: SsoSession, alert_id: int) -> Page:
    alert = db.session.get(SecurityAlert, alert_id)
    if alert is None:
        abort(404)
    try:
        service.set_alert_state(alert, request.form.get("state", ""), actor=actor(sso))
    except ValueError:
        return render_template("admin/message.html", title=_("Not changed"),
                               message=_("Unknown alert state.")), 400
    db.session.commit()
    return redirect(url_for("admin.alerts"))
