"""SAML endpoints (design.md contract): /saml/metadata, /saml/sso (HTTP-Redirect, HTTP-POST),
/saml/resume/<key> (where the browser comes back after signing in), /saml/launch
(IdP-initiated), /saml/slo, and /saml/apps (the SPs a user may open, for the portal's tiles:
a bearer access token of a first-party client). Views parse, call idp.saml.service and
answer; a refused message is a readable 4xx page and nothing is posted to anyone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, jsonify, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from idp import clock
from idp.accounts.models import User
from idp.admin.access import actor, require_role
from idp.audit import service as audit
from idp.context import policy, settings
from idp.core import logout_offers, logout_relays
from idp.core.i18n import gettext as _
from idp.extensions import csrf, db
from idp.lazymodule import lazy
from idp.oidc import client_cache, dpop, tokens
from idp.oidc.interaction import pipeline
from idp.oidc.interaction.checks import SIGN_IN
from idp.oidc.interaction.pipeline import Interaction, ProtocolRequest
from idp.oidc.interaction.respond import SERVICES, browser_step
from idp.saml import entity, frontchannel
from idp.saml.forms import DeleteForm, SpForm
from idp.saml.models import SamlRequest, SamlServiceProvider
from idp.sessions import service as sessions
from idp.sessions.models import SsoSession

if TYPE_CHECKING:
    from idp.saml import registry, service
else:  # pysaml2 is loaded when an SP is first spoken to (idp.lazymodule)
    registry, service = lazy("idp.saml.registry"), lazy("idp.saml.service")

bp = Blueprint("saml", __name__, url_prefix="/saml")
Page = Response | BaseResponse | tuple[str, int] | str


def refused_page(reason: str, status: int = 400) -> tuple[str, int]:
    return render_template("oidc/error.html", error="saml_request_refused",
                           description=reason), status


def _refuse(exc: service.Refused, what: str) -> tuple[str, int]:
    db.session.rollback()
    audit.record("saml.refused", what=what, reason=exc.reason[:200])
    db.session.commit()
    return refused_page(exc.reason, exc.status)


def post_page(action: str, fields: list[tuple[str, str]]) -> Response:
    """An auto-submitting form to an SP endpoint (our script file, like form_post): only that
    endpoint's origin may receive it (CSP form-action)."""
    page = Response(render_template("oidc/form_post.html", action=action, params=fields), 200,
                    mimetype="text/html")
    target = urlsplit(action)
    page.headers["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'self'; style-src 'self'; base-uri 'none'; "
        f"frame-ancestors 'none'; form-action {target.scheme}://{target.netloc}")
    page.headers["Cache-Control"] = "no-store"
    return page


def _message() -> tuple[str, bool, dict[str, Any]]:
    """(encoded message, redirect binding?, RelayState/SigAlg/Signature/raw query)."""
    redirect_binding = request.method == "GET"
    source = request.args if redirect_binding else request.form
    value = source.get("SAMLRequest") or source.get("SAMLResponse") or ""
    extra = {"relay_state": source.get("RelayState"), "sigalg": source.get("SigAlg"),
             "signature": source.get("Signature"),
             "raw_query": request.query_string.decode("latin-1")}
    return value, redirect_binding, extra


@bp.get("/metadata")
def metadata() -> Response:
    return Response(service.metadata_xml(), 200, mimetype="application/samlmetadata+xml")


@bp.route("/sso", methods=["GET", "POST"])
@csrf.exempt
def sso() -> Response | BaseResponse | tuple[str, int]:
    value, redirect_binding, extra = _message()
    try:
        row = service.receive_authn_request(value, redirect=redirect_binding, **extra)
    except service.Refused as exc:
        return _refuse(exc, "AuthnRequest")
    db.session.commit()
    return redirect(url_for("saml.resume", key=row.key))


@bp.get("/launch")
def launch() -> Response | BaseResponse | tuple[str, int]:
    sp = registry.get(request.args.get("sp", ""))
    if sp is None:
        return refused_page("the service provider is not registered here", 404)
    try:
        row = service.launch_request(sp, request.args.get("RelayState"))
    except service.Refused as exc:
        return _refuse(exc, "launch")
    db.session.commit()
    return redirect(url_for("saml.resume", key=row.key))


def _apps_error(status: int, error: str | None = None, description: str | None = None
                ) -> Response:
    """RFC 6750 §3: the WWW-Authenticate challenge and a JSON body, never cached."""
    challenge = f'Bearer realm="{settings().issuer}"'
    if error:
        challenge += f', error="{error}", error_description="{description}"'
    response = jsonify({"error": error, "error_description": description} if error else {})
    response.status_code = status
    response.headers["WWW-Authenticate"] = challenge
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/apps")
def apps() -> Response:
    """The service providers the token's user may open (tiles linking to /saml/launch).
    Called by a first-party relying party (the portal) with the user's access token
    (`Authorization: Bearer`, scope openid); a DPoP-bound token needs its proof, as at
    userinfo. Third-party clients are refused: the list of a user's applications is not a
    claim they were granted."""
    scheme, _, raw = request.headers.get("Authorization", "").partition(" ")
    scheme, raw = scheme.lower(), raw.strip()
    if not raw:
        return _apps_error(401)
    if scheme not in ("bearer", "dpop"):
        return _apps_error(401, "invalid_token", "expected a Bearer or DPoP token")
    try:
        claims, record = tokens.verify_access_token(raw, with_user=False)
        dpop.check_resource_request(request.headers, method="GET",
                                    url=dpop.endpoint_url("/saml/apps"), scheme=scheme,
                                    token=raw, claims=claims)
    except tokens.InvalidToken as exc:
        return _apps_error(401, "invalid_token", str(exc))
    except dpop.ResourceRefused as exc:
        return _apps_error(401, exc.error, exc.description)
    if "openid" not in record.scope.split():
        return _apps_error(403, "insufficient_scope", "the token lacks the openid scope")
    client = client_cache.get(record.client_id)
    if client is None or client.disabled or not client.first_party:
        return _apps_error(403, "insufficient_scope",
                           "only first-party applications list a user's applications")
    user = db.session.get(User, record.user_id) if record.user_id else None
    if user is None or user.disabled:
        return _apps_error(401, "invalid_token", "the token's user is not active")
    response = jsonify({"apps": [{"entity_id": a.entity_id, "name": a.name,
                                  "launch_url": a.launch_url}
                                 for a in service.apps_for(user)]})
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/resume/<key>")
def resume(key: str) -> Response | BaseResponse | tuple[str, int]:
    """The sign-in checks of /authorize (login, second factor, step-up, gates), then the
    signed Response posted to the SP's ACS."""
    row = service.pending(key)
    if row is None:
        return refused_page("this sign-in request has expired or was answered already")
    answer = decide(row)
    db.session.commit()
    return answer


def decide(row: SamlRequest) -> Response | BaseResponse | tuple[str, int]:
    sp = registry.get(row.sp_entity_id)
    if sp is None:
        return refused_page("the service provider is no longer registered", 403)
    if row.acr == "unknown":
        return post_page(*service.error_response(
            row, service.STATUS_NO_AUTHN_CONTEXT, "authentication context not supported"))
    sso = sessions.current()
    prompts = (["login"] if row.force_authn else []) + (["none"] if row.is_passive else [])
    params = {"prompt": " ".join(prompts), "acr_values": row.acr or ""}
    ix = Interaction(grant=ProtocolRequest(client=sp), sso=sso, params=params,
                     key="saml:" + row.key, return_to=url_for("saml.resume", key=row.key),
                     now=clock.now().timestamp(), assurance=policy().assurance,
                     services=SERVICES,
                     marker=row.created_at.timestamp() if row.force_authn else None)
    outcome = pipeline.run(ix, SIGN_IN)
    if outcome.kind == pipeline.ERROR:
        status = service.STATUS_NO_AUTHN_CONTEXT if outcome.reason == "unmet_acr" \
            else service.STATUS_NO_PASSIVE
        return post_page(*service.error_response(row, status, outcome.reason))
    step = browser_step(ix, outcome, {})
    if step is not None:
        return step
    if outcome.kind != pipeline.ISSUE or ix.sso is None:
        return refused_page("this sign-in request cannot be completed")
    user = ix.sso.user
    if not service.allowed(user, sp.entity_id):
        audit.record("saml.sso_denied", user_id=user.id, sp=sp.entity_id)
        return refused_page("your account may not sign in to this application", 403)
    ctx = outcome.auth
    try:
        action, fields = service.answer(row, user, sid=ix.sso.id,
                                        acr=ctx.acr if ctx else ix.sso.acr,
                                        auth_time=ctx.auth_time if ctx else ix.sso.auth_time)
    except service.Refused as exc:
        return refused_page(exc.reason, exc.status)
    return post_page(action, fields)


@bp.route("/slo", methods=["GET", "POST"])
@csrf.exempt
def slo() -> Response | BaseResponse | tuple[str, int]:
    """SP-initiated logout: our SSO session ends (every other participant hears of it:
    SAML SPs by SOAP, OIDC relying parties by back-channel logout) and the SP gets a signed
    LogoutResponse. A LogoutResponse arriving here ends nothing."""
    value, redirect_binding, extra = _message()
    source = request.args if redirect_binding else request.form
    if "SAMLResponse" in source and "SAMLRequest" not in source:
        # An SP's answer to our front-channel LogoutRequest: on along the chain its
        # RelayState names (by a GET: a POST from another site comes without our cookie).
        chain = source.get("RelayState", "")
        if 0 < len(chain) <= 64:
            return redirect(url_for("saml.slo_continue", chain=chain), 303)
        return Response(render_template("oidc/logged_out.html"), 200)
    current = sessions.current()
    try:
        sp, logout_request, sids = service.receive_logout_request(
            value, redirect=redirect_binding, browser_sid=current.id if current else None,
            browser_user=current.user_id if current else None, **extra)
    except service.Refused as exc:
        return _refuse(exc, "LogoutRequest")
    if sids:
        sessions.end_where(SsoSession.id.in_(sids), reason="saml_logout")
    stop = None
    if current is not None and current.id in sids:
        sessions.end(current, "saml_logout")
        # The other SPs of this browser's session that only a browser can tell, then the
        # LogoutResponse this SP is owed.
        stop = frontchannel.start(current.id, {"sp": sp.entity_id, "id": logout_request.id,
                                               "relay_state": extra["relay_state"]})
    answer = None if stop else service.logout_response(sp, logout_request,
                                                       extra["relay_state"])
    db.session.commit()
    return redirect(stop) if stop else _to_sp(answer)


def _to_sp(answer: service.LogoutAnswer | None) -> Response | BaseResponse:
    if answer is not None and answer.location:
        return redirect(answer.location)
    if answer is not None and answer.action and answer.fields is not None:
        return post_page(answer.action, answer.fields)
    return Response(render_template("oidc/logged_out.html"), 200)


@bp.get("/slo/continue")
def slo_continue() -> Response | BaseResponse | str:
    """The next step of a front-channel logout chain (idp.saml.frontchannel): the next SP's
    LogoutRequest, or the chain's end (the LogoutResponse owed to the SP that asked, the
    relying party's post-logout URI, or our signed-out page). Without a chain of this
    browser's, the signed-out page: nothing happens."""
    step = frontchannel.next_step(request.args.get("chain"))
    db.session.commit()
    if step is None:
        return Response(render_template("oidc/logged_out.html"), 200)
    if step.answer is not None:
        return _to_sp(step.answer)
    then = step.then or {}
    if then.get("sp"):
        answer = frontchannel.owed_response(then)
        db.session.commit()
        return _to_sp(answer)
    return logout_relays.signed_out_page(logout_offers.collect(step.sid or ""),
                                         then.get("url"))


# -- admin console -----------------------------------------------------------------------------
admin_bp = Blueprint("saml_admin", __name__, url_prefix="/admin")


@dataclass(frozen=True)
class SpView:
    """One registered SP as the console shows it: its metadata parsed."""

    row: SamlServiceProvider
    meta: registry.SpMetadata | None
    signing: list[registry.CertInfo]
    encryption: list[registry.CertInfo]


def _view(row: SamlServiceProvider) -> SpView:
    try:
        meta = registry.parse(row.metadata_xml)
    except registry.MetadataError:
        return SpView(row, None, [], [])
    return SpView(row, meta, [registry.describe_cert(c) for c in meta.signing_certs],
                  [registry.describe_cert(c) for c in meta.encryption_certs])


def _admin_page(form: SpForm | None = None, status: int = 200, error: str | None = None,
                made: str | None = None) -> tuple[str, int]:
    return render_template("admin/saml.html", sps=[_view(r) for r in registry.all_sps()],
                           form=form or SpForm(formdata=None), delete=DeleteForm(formdata=None),
                           error=error, made=made, metadata_url=entity.entity_id()), status


@admin_bp.route("/saml", methods=["GET", "POST"])
@require_role()
def sps(sso: SsoSession) -> Page:
    """The registered service providers, and registering one from an uploaded metadata file
    or a metadata URL (fetched through the outbound client), as `idp saml sps create`."""
    if request.method == "GET":
        return _admin_page()
    form = SpForm()
    if not form.validate_on_submit():
        return _admin_page(form, 400, _("This form has expired or is incomplete; reload the "
                                        "page and try again."))
    upload = form.metadata_file.data
    url = (form.metadata_url.data or "").strip()
    if bool(upload) == bool(url):
        return _admin_page(form, 400, _("Upload a metadata file or give a metadata URL "
                                        "(one of the two)."))
    try:
        xml = upload.read(policy().saml.max_inflated_bytes + 1) if upload else \
            registry.fetch(url)
        row, _created = registry.register(
            xml, name=(form.name.data or "").strip() or None,
            nameid_format=form.nameid_format.data or None,
            metadata_url=url or None, actor=actor(sso))
    except registry.MetadataError as exc:
        db.session.rollback()
        return _admin_page(form, 400, _("The metadata was refused: %(reason)s",
                                        reason=str(exc)))
    db.session.commit()
    return _admin_page(made=row.entity_id)


@admin_bp.post("/saml/delete")
@require_role()
def delete_sp(sso: SsoSession) -> Page:
    form = DeleteForm()
    if not form.validate_on_submit():
        return _admin_page(status=400, error=_("This form has expired; reload the page."))
    if not registry.delete(form.entity_id.data or "", actor=actor(sso)):
        return _admin_page(status=404, error=_("No such service provider."))
    db.session.commit()
    return redirect(url_for(".sps"))
