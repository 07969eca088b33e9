"""SMART App Launch endpoints: the smart-configuration document, the EHR's launch registration
(back channel) and the standalone patient picker. Thin: parse, call idp.smart.service."""

from __future__ import annotations

from urllib.parse import urlsplit

from authlib.oauth2.rfc6749.errors import OAuth2Error
from flask import (
    Blueprint,
    Response,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from idp.core.i18n import gettext as _
from idp.extensions import csrf, db
from idp.oidc import authorize as rules
from idp.oidc.server import CONFIDENTIAL_AUTH_METHODS, server
from idp.sessions import service as sessions
from idp.smart import service
from idp.smart.interaction import PICKS

bp = Blueprint("smart", __name__)


def _public_json(body: dict) -> Response:
    """A document any origin may read and cache for an hour."""
    response = jsonify(body)
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response


@bp.get("/.well-known/smart-configuration")
def configuration() -> Response:
    return _public_json(service.configuration())


@bp.get("/smart/style.json")
def style() -> Response:
    """The style document launch token responses name in `smart_style_url`."""
    return _public_json(service.style())


def _json_error(status: int, error: str, description: str) -> Response:
    response = jsonify(error=error, error_description=description)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="smart-launch"'
    return response


@bp.post("/smart/launch")
@csrf.exempt
def register_launch() -> Response:
    """The EHR registers a launch context, authenticated as itself (any confidential method).
    Form: app_client_id, patient, [encounter], [sub]. Answers {launch, expires_in}."""
    try:
        oauth_request = server.create_oauth2_request(request)
        registrar = server.authenticate_client(oauth_request, CONFIDENTIAL_AUTH_METHODS,
                                               endpoint="smart_launch")
    except OAuth2Error as error:
        return _json_error(401, "invalid_client", error.description or "client authentication "
                           "failed")
    form = request.form
    try:
        launch, lifetime = service.register_launch(
            registrar, app_client_id=form.get("app_client_id"), patient=form.get("patient"),
            encounter=form.get("encounter"), subject=form.get("sub"))
    except service.LaunchError as exc:
        db.session.rollback()
        status = 403 if "may not" in str(exc) else 400
        return _json_error(status, "unauthorized_client" if status == 403 else
                           "invalid_request", str(exc))
    db.session.commit()
    response = jsonify(launch=launch, expires_in=lifetime)
    response.headers["Cache-Control"] = "no-store"
    return response


def _authorize_path(value: str | None) -> str | None:
    """Only our own authorization endpoint is a place the picker returns to."""
    if not isinstance(value, str) or not value.startswith("/authorize?") or "\\" in value \
            or len(value) > 4096:
        return None
    return value


@bp.route("/smart/patient", methods=["GET", "POST"])
def pick_patient() -> Response | str | tuple[str, int]:
    """Standalone launch with launch/patient: the signed-in user chooses the patient from the
    FHIR server's directory (as the EHR lets this user see it); back to /authorize after."""
    target = _authorize_path(request.values.get("next"))
    if target is None:
        return render_template("oidc/error.html", error="invalid_request",
                               description="The patient picker was opened without a "
                               "sign-in request."), 400
    sso = sessions.current()
    if sso is None:
        return redirect(url_for("accounts.login", next=target))
    user = sso.user
    try:
        patients = service.patient_directory(user)
    except service.DirectoryUnavailable:
        return render_template("smart/pick_patient.html", patients=[], target=target,
                               error="The patient list cannot be read right now. Try again "
                               "in a moment."), 503
    if request.method == "POST":
        chosen = request.form.get("patient")
        if chosen not in {p["id"] for p in patients}:
            return render_template("smart/pick_patient.html", patients=patients,
                                   target=target, error=_("Choose one of the patients listed.")
                                   ), 400
        key = rules.request_key(urlsplit(target).query)
        picks = dict(list((session.get(PICKS) or {}).items())[-4:])
        picks[key] = {"patient": chosen, "sub": user.subject}
        session[PICKS] = picks
        return redirect(target)
    return render_template("smart/pick_patient.html", patients=patients, target=target,
                           error=None)
