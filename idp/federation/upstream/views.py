"""Upstream pages: start a sign-in at an upstream, its callback, the choice an unknown
identity is given (prove an account, or apply), the back-channel logout endpoint the
upstream calls, and the linked identities on the account page."""

from __future__ import annotations

from flask import Blueprint, abort, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from idp.accounts import notices
from idp.accounts import service as accounts
from idp.accounts.models import User
from idp.accounts.views import locked_message, login_failed_message, safe_next
from idp.admin.access import actor, require_role
from idp.audit import service as audit
from idp.context import policy
from idp.core import brokering
from idp.core.crypto import digest
from idp.core.i18n import gettext as _
from idp.extensions import csrf, db, limiter
from idp.federation.upstream import service, signin
from idp.federation.upstream.forms import ButtonForm, ProveAccountForm, UpstreamForm
from idp.federation.upstream.models import UpstreamFlow
from idp.mfa import flow
from idp.mfa.models import LoginAttempt
from idp.sessions.models import SsoSession
from idp.web.guards import signed_in

bp = Blueprint("upstream", __name__)

Page = Response | str | tuple[str, int]


def _failed(row_name: str, reason: str, status: int = 400) -> tuple[str, int]:
    """One readable page for every refused upstream sign-in; the reason goes to the audit
    trail only."""
    audit.record("upstream.login_failed", upstream=row_name, reason=reason)
    db.session.commit()
    return render_template("upstream/failed.html", name=row_name), status


def _upstream(name: str) -> service.Upstream:
    row = service.by_name(name)
    if row is None or not row.enabled:
        abort(404)
    return row


@bp.get("/upstream/<name>/start")
@limiter.limit(lambda: policy().lockout.per_ip_limit)
def start(name: str) -> Page:
    row = _upstream(name)
    next_url = safe_next(request.args.get("next"))
    try:
        url, state = service.begin(row, next_url,
                                   login_hint=request.args.get("login_hint", "")[:254] or None)
    except service.UpstreamError as exc:
        db.session.rollback()
        return _failed(row.name, exc.reason, 502)
    session[signin.STATE_KEY] = state
    db.session.commit()
    return redirect(url)


@bp.get("/upstream/<name>/callback")
@limiter.limit(lambda: policy().lockout.per_ip_limit)
def callback(name: str) -> Page:
    row = _upstream(name)
    browser_state = session.pop(signin.STATE_KEY, None)
    stage = "state"
    try:
        flow_row = service.claim_flow(row, request.args.get("state", ""), browser_state)
        stage = "response"
        service.check_issuer_parameter(row, request.args.get("iss"))
        if request.args.get("error"):
            stage = "error"
            raise service.UpstreamError(
                f"upstream answered {request.args.get('error', '')[:40]}")
        stage = "token"
        done = service.exchange(row, flow_row, request.args.get("code", ""))
    except service.UpstreamError as exc:
        db.session.rollback()
        # The state is spent even when the rest fails (a replay is refused as a replay).
        _spend(row, request.args.get("state", ""), browser_state)
        back = _back_to_feature(row, browser_state, stage)
        if back is None:
            return _failed(row.name, exc.reason)
        audit.record("upstream.login_failed", upstream=row.name, reason=exc.reason)
        db.session.commit()
        return redirect(back)
    next_url = flow_row.next_url
    link = service.find_link(row.issuer, str(done.claims["sub"]))
    if link is None:
        user = service.auto_link_candidate(row, done.claims)
        if user is not None:
            link = service.link(user, row, done.claims, "auto")
    if link is None:
        session[signin.PENDING_KEY] = service.hold(row, done, next_url)
        db.session.commit()
        return redirect(url_for("upstream.choose"))
    user = db.session.get(User, link.user_id)
    assert user is not None
    refused = signin.refusal(user)
    if refused is not None:
        audit.record("login.failure", user_id=user.id, reason=refused, upstream=row.name)
        db.session.commit()
        message = locked_message() if refused == "locked" else login_failed_message()
        return render_template("upstream/failed.html", name=row.name, message=message), 403
    if policy().mfa.required and flow.needs_enrollment(user) and \
            not service.mfa_at_upstream(row, done.claims):
        return _failed(row.name, "no second factor enrolled", 403)
    outcome = signin.linked(user, row, link, done, next_url)
    if outcome is None:
        return _failed(row.name, "locked meanwhile", 403)
    if isinstance(outcome, LoginAttempt):
        if not policy().mfa.required and not flow.factors(user):
            flow.finish(outcome, user, None)
            db.session.commit()
            return redirect(next_url)
        db.session.commit()
        return redirect(url_for("mfa.challenge"))
    db.session.commit()
    return redirect(next_url)


# What the feature that enrolled an upstream tells its client when the trip fails (FAST
# Security IG §6: an invalid state is a server_error; the upstream's own error, access_denied;
# an ID token not returned or refused, invalid_idp).
_FEATURE_ERRORS = {"state": "server_error", "error": "access_denied",
                   "response": "invalid_idp", "token": "invalid_idp"}


def _back_to_feature(row: service.Upstream, browser_state: str | None, stage: str
                     ) -> str | None:
    """For an upstream a feature enrolled (UDAP Tiered OAuth), the URL of the request that
    sent this browser there (its own trip, found by the state in its cookie), with the
    failure noted for the feature to answer its client; None for the operator's upstreams."""
    if row.client_auth == "client_secret" or not browser_state:
        return None
    trip = db.session.get(UpstreamFlow, digest(browser_state))
    if trip is None or trip.upstream_id != row.id:
        return None
    brokering.note_failure(row.issuer, _FEATURE_ERRORS[stage])
    return trip.next_url


def _spend(row: service.Upstream, state: str, browser_state: str | None) -> None:
    try:
        service.claim_flow(row, state, browser_state)
    except service.UpstreamError:
        pass
    db.session.commit()


@bp.route("/upstream/link", methods=["GET", "POST"])
@limiter.limit(lambda: policy().lockout.per_ip_limit, methods=["POST"])
def choose() -> Page:
    """An unknown upstream identity: prove an existing account (its password here, its second
    factor next), or apply as a new provider. Nothing is linked before one of them."""
    item = service.pending(session.get(signin.PENDING_KEY))
    if item is None:
        return render_template("upstream/expired.html"), 404
    row = db.session.get(service.Upstream, item.upstream_id)
    form = ProveAccountForm()
    if request.method == "GET":
        return render_template("upstream/choose.html", form=form, item=item, row=row,
                               cancel=ButtonForm())
    if "cancel" in request.form:
        return _cancel(item, row)
    if not form.validate_on_submit():
        return render_template("upstream/choose.html", form=form, item=item, row=row,
                               error=_("Enter your username or NPI and your password.")), 400
    result = accounts.authenticate(form.username.data, form.password.data)
    if result.user is None:
        account = result.account
        audit.record("login.failure", user_id=account.id if account else None,
                     reason=result.reason, upstream_link=True)
        db.session.commit()
        if result.newly_locked and account is not None:
            notices.account_locked(account)
        message = locked_message() if result.locked else login_failed_message()
        return render_template("upstream/choose.html", form=form, item=item, row=row,
                               error=message), 401
    if service.find_link(item.issuer, item.subject) is not None:
        return render_template("upstream/expired.html"), 409
    flow.begin(result.user, item.next_url, purpose="upstream_link")
    audit.record("login.password_verified", user_id=result.user.id, upstream_link=True)
    db.session.commit()
    return redirect(url_for("mfa.challenge"))


def _cancel(item: service.UpstreamPending, row: service.Upstream | None) -> Page:
    """The person connects no account (offered for an upstream a feature enrolled): the held
    identity is dropped and the request that sent the person upstream answers its client
    access_denied (FAST Security IG §6: an identity the data holder cannot resolve)."""
    if row is None or row.client_auth == "client_secret" or \
            not ButtonForm().validate_on_submit():
        abort(400)
    if not service.use_pending(item):
        return render_template("upstream/expired.html"), 409
    session.pop(signin.PENDING_KEY, None)
    brokering.note_failure(row.issuer, "access_denied")
    audit.record("upstream.link_declined", upstream=row.name)
    db.session.commit()
    return redirect(item.next_url)


@bp.post("/upstream/<name>/backchannel-logout")
@csrf.exempt
def backchannel_logout(name: str) -> tuple[str, int, dict[str, str]]:
    """Back-Channel Logout 1.0 §2.5 as the receiving relying party: 200 when accepted, 400
    with an error otherwise; never cached."""
    headers = {"Cache-Control": "no-store"}
    row = service.by_name(name)
    token = request.form.get("logout_token", "")
    if row is None or not token:
        return '{"error":"invalid_request"}', 400, {**headers,
                                                     "Content-Type": "application/json"}
    try:
        service.backchannel_logout(row, token)
    except service.UpstreamError as exc:
        db.session.rollback()
        audit.record("upstream.backchannel_refused", upstream=row.name, reason=exc.reason)
        db.session.commit()
        return '{"error":"invalid_request"}', 400, {**headers,
                                                     "Content-Type": "application/json"}
    db.session.commit()
    return "", 200, headers


@bp.get("/account/linked")
@signed_in()
def linked_identities(sso: SsoSession) -> Page:
    return render_template("upstream/linked.html", links=service.links_of(sso.user),
                           form=ButtonForm(), error=request.args.get("error"))


@bp.post("/account/linked/<int(max=2147483647):link_id>/unlink")
@signed_in(recent=True, back="upstream.linked_identities")
def unlink(sso: SsoSession, link_id: int) -> Page:
    form = ButtonForm()
    if not form.validate_on_submit():
        abort(400)
    try:
        service.unlink(sso.user, link_id)
    except service.ConfigError as exc:
        db.session.rollback()
        return render_template("upstream/linked.html", links=service.links_of(sso.user),
                               form=form, error=str(exc)), 400
    db.session.commit()
    return redirect(url_for("upstream.linked_identities"))


# -- admin console -----------------------------------------------------------------------------
admin_bp = Blueprint("upstream_admin", __name__, url_prefix="/admin")


def _admin_page(form: UpstreamForm | None = None, status: int = 200, error: str | None = None,
                made: service.Upstream | None = None) -> tuple[str, int]:
    rows = [(row, service.redirect_uri(row), service.backchannel_logout_uri(row))
            for row in service.listing()]
    return render_template("admin/upstreams.html", rows=rows, form=form or UpstreamForm(),
                           button=ButtonForm(), error=error, made=made), status


@admin_bp.route("/upstreams", methods=["GET", "POST"])
@require_role()
def upstreams(sso: SsoSession) -> Page:
    if request.method == "GET":
        return _admin_page()
    form = UpstreamForm()
    if not form.validate_on_submit():
        return _admin_page(form, 400, _("Fill in the name, issuer, client ID and scope."))
    try:
        made = service.create(
            name=form.name.data or "", issuer=form.issuer.data or "",
            client_id=form.client_id.data or "", client_secret=form.client_secret.data or None,
            secret_env=form.client_secret_env.data or None, scope=form.scope.data or "",
            link_by=form.link_by.data or "email",
            allowed_domains=(form.allowed_domains.data or "").replace(",", " ").split(),
            actor=actor(sso))
    except service.ConfigError as exc:
        db.session.rollback()
        return _admin_page(form, 400, str(exc))
    except service.outbound.OutboundRefused as exc:
        db.session.rollback()
        return _admin_page(form, 400, _("issuer: %(reason)s", reason=exc.reason))
    db.session.commit()
    return _admin_page(UpstreamForm(formdata=None), made=made)  # saved: an empty form again


@admin_bp.post("/upstreams/<name>/<action>")
@require_role()
def upstream_action(sso: SsoSession, name: str, action: str) -> Page:
    row = service.by_name(name)
    if row is None or action not in ("enable", "disable"):
        abort(404)
    if not ButtonForm().validate_on_submit():
        return _admin_page(status=400, error=_("This form has expired; reload the page."))
    service.set_enabled(row, action == "enable", actor(sso))
    db.session.commit()
    return redirect(url_for(".upstreams"))
