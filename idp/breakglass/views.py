"""Break-glass pages: the request (/breakglass/<id>: reason, justification, password; then the
second factor on the MFA pages) and the privacy officers' review queue (/admin/breakglass)."""

from __future__ import annotations

from flask import Blueprint, Response, redirect, render_template, url_for
from werkzeug.wrappers import Response as BaseResponse

from idp import clock
from idp.accounts import reauth
from idp.accounts.views import login_failed_message
from idp.admin.access import require_admin
from idp.breakglass import service
from idp.breakglass.forms import RequestForm, ReviewForm
from idp.breakglass.models import BreakglassEpisode
from idp.context import policy
from idp.core.i18n import gettext as _
from idp.extensions import db, limiter
from idp.oidc import client_cache
from idp.sessions import service as sessions

bp = Blueprint("breakglass", __name__)
Page = Response | BaseResponse | str | tuple[str, int]


def _request_page(episode: BreakglassEpisode, form: RequestForm, error: str | None = None,
                  status: int = 200) -> tuple[str, int]:
    client = client_cache.get(episode.client_id)
    rules = service.rules()
    sso = sessions.current()
    assert sso is not None
    return render_template("breakglass/request.html", episode=episode, form=form, error=error,
                           reasons=rules.reasons, rules=rules,
                           client_name=client.client_name if client else episode.client_id,
                           user=sso.user,
                           minutes=rules.duration // 60), status


@bp.route("/breakglass/<episode_id>", methods=["GET", "POST"])
@limiter.limit(lambda: policy().lockout.per_ip_limit, methods=["POST"])
def request(episode_id: str) -> Page:
    """Step 1: the reason, the justification and the password; step 2: the second factor."""
    sso = sessions.current()
    if sso is None:
        return redirect(url_for("accounts.login"))
    episode = service.open_request(episode_id[:40], sso)
    if episode is None:
        return render_template("breakglass/ended.html"), 410
    form = RequestForm()
    if not form.is_submitted():
        return _request_page(episode, form)
    if not form.validate():
        return _request_page(episode, form, _("Enter your password."), 400)
    problem = service.check_request(form.reason.data, form.justification.data)
    if problem:
        return _request_page(episode, form, problem, 400)
    user = sso.user
    if not reauth.password_again(user, form.password.data, purpose="breakglass",
                                 episode=episode.id):
        return _request_page(episode, form, login_failed_message(), 401)
    service.begin_second_factor(episode, user, form.reason.data, form.justification.data)
    db.session.commit()
    return redirect(url_for("mfa.challenge"))


# -- the review queue (privacy officers) ------------------------------------------------------
def _queue(error: str | None = None, done: str | None = None, status: int = 200
           ) -> tuple[str, int]:
    now = clock.now()
    return render_template("breakglass/review.html", queue=service.queue(),
                           report=service.report(), form=ReviewForm(), error=error, done=done,
                           outcomes=service.OUTCOMES, reasons=service.rules().reasons,
                           now=now, aware=clock.aware), status


@bp.get("/admin/breakglass")
def review_queue() -> Page:
    sso = require_admin(service.rules().reviewer_roles)
    if isinstance(sso, Response):
        return sso
    return _queue()


@bp.post("/admin/breakglass/<episode_id>/review")
def review(episode_id: str) -> Page:
    sso = require_admin(service.rules().reviewer_roles)
    if isinstance(sso, Response):
        return sso
    form = ReviewForm()
    if not form.validate():
        return _queue("The form expired: review again.", status=400)
    try:
        service.review(episode_id, sso.user, form.outcome.data or "", form.note.data or "")
    except service.BreakglassError as exc:
        db.session.rollback()
        return _queue(str(exc), status=400)
    db.session.commit()
    return _queue(done=_("Reviewed."))
