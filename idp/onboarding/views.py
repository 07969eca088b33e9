"""Onboarding pages: the public application (/onboarding/...) and the admin console's
verification queue and facilities (/admin/verifications, /admin/facilities). Routes parse,
call idp/onboarding/service.py, commit, then send the emails."""

from __future__ import annotations

from flask import Blueprint, Response, abort, redirect, render_template, request, url_for
from sqlalchemy.exc import IntegrityError

from idp import clock
from idp.accounts.models import User
from idp.admin.access import actor, require_role
from idp.context import policy
from idp.core import applicants
from idp.core import events as domain_events
from idp.core.i18n import gettext as _
from idp.core.i18n import policy_text
from idp.extensions import db, limiter
from idp.notify.mailer import send_mail
from idp.onboarding import forms, service
from idp.onboarding.models import OPEN_STATES, Application, Facility
from idp.sessions.models import SsoSession

bp = Blueprint("onboarding", __name__, url_prefix="/onboarding")
admin_bp = Blueprint("onboarding_admin", __name__, url_prefix="/admin")

Page = Response | str | tuple[str, int]
DONE = {"approved": "Approved: the account was created and the applicant was emailed their "
                    "temporary credentials.",
        "first": "First approval recorded. A second verifier must approve this role.",
        "rejected": "Rejected: the applicant was emailed the reason.",
        "asked": "Request sent: the applicant was emailed a link to answer.",
        "registry": "The registry was asked again."}


# -- public: apply, confirm the email, answer a question --------------------------------------
def _email_key() -> str:
    return "apply-email:" + (request.form.get("email") or "").strip().lower()[:254]


def _fill_choices(form: forms.ApplicationForm) -> None:
    form.role.choices = [("", _("Choose a role"))] + [
        (r.name, policy_text(r.label)) for r in service.applicable_roles()]
    form.license_state.choices = [("", _("Choose a state or territory"))] + [
        (s.code, s.name) for s in sorted(service.rules().license_states.values(),
                                         key=lambda s: s.name)]
    facilities = service.active_facilities()
    form.facility_id.choices = [("", _("Choose a facility"))] + [(f.id, f.name)
                                                             for f in facilities]
    form.department_id.choices = [("", _("None / not sure"))] + [
        (d.id, f"{f.name} · {d.name}") for f in facilities for d in f.departments]


@bp.errorhandler(429)
def throttled(exc: Exception) -> tuple[str, int]:
    return render_template("onboarding/throttled.html"), 429


@bp.route("/apply", methods=["GET", "POST"])
@limiter.limit(lambda: service.rules().apply_per_ip_limit, methods=["POST"])
@limiter.limit(lambda: service.rules().apply_per_email_limit, methods=["POST"],
               key_func=_email_key)
def apply() -> Page:
    form = forms.ApplicationForm()
    _fill_choices(form)
    prefill = applicants.current()  # an upstream identity provider knows who this is
    if request.method == "GET":
        if prefill is not None:
            form.given_name.data, form.family_name.data = prefill.given_name, prefill.family_name
            form.email.data, form.npi.data = prefill.email, prefill.npi
        return render_template("onboarding/apply.html", form=form, errors={})
    errors: dict[str, str] = {}
    if not form.validate_on_submit():
        errors = {name: messages[0] for name, messages in form.errors.items() if messages}
        if "license_expires" in errors:  # WTForms' "Not a valid date value."
            errors["license_expires"] = _("Enter the expiry date as a date, such as 2027-06-30.")
        if "csrf_token" in errors:
            errors["csrf_token"] = "This form has expired. Reload the page and try again."
    data = service.ApplicationInput(
        given_name=form.given_name.data or "", family_name=form.family_name.data or "",
        email=form.email.data or "", phone=form.phone.data or "", role=form.role.data or "",
        npi=(form.npi.data or "").strip(), facility_id=form.facility_id.data,
        department_id=form.department_id.data, license_state=form.license_state.data or "",
        license_number=form.license_number.data or "",
        license_expires=form.license_expires.data)
    phone, phone_error = service.normalise_phone(data.phone)
    if phone_error and "phone" not in errors:
        errors["phone"] = phone_error
    data.phone = phone or data.phone
    for name, message in service.validate(data).items():
        errors.setdefault(name, message)
    if errors:
        return render_template("onboarding/apply.html", form=form, errors=errors), 400
    item, url = service.submit(data)
    domain_events.emit(domain_events.APPLICATION_SUBMITTED, application_id=item.id,
                       source=prefill.source if prefill else None)
    if prefill is not None and prefill.email_verified and \
            prefill.email.strip().lower() == item.email.lower():
        service.enter_queue(item, vouched_by=prefill.source)  # no link to mail: vouched for
        db.session.commit()
        return render_template("onboarding/verified.html", item=item)
    db.session.commit()
    send_mail(*service.verify_mail(item, url))
    return render_template("onboarding/check_email.html", email=item.email,
                           hours=service.rules().email_link_lifetime // 3600)


@bp.route("/verify/<token>", methods=["GET", "POST"])
def verify(token: str) -> Page:
    """GET shows a button (mail scanners that open links must not use them up); POST uses it."""
    form = forms.EmptyForm()
    found = service.valid_link(token, "verify")
    if found is None or found[1].status != "email_pending":
        return render_template("onboarding/link_invalid.html"), 404
    if request.method == "GET":
        return render_template("onboarding/verify.html", form=form, item=found[1])
    if not form.validate_on_submit():
        return render_template("onboarding/verify.html", form=form, item=found[1]), 400
    item = service.verify_email(token)
    if item is None:
        db.session.rollback()
        return render_template("onboarding/link_invalid.html"), 404
    db.session.commit()
    return render_template("onboarding/verified.html", item=item)


@bp.route("/reply/<token>", methods=["GET", "POST"])
def reply(token: str) -> Page:
    form = forms.ReplyForm()
    found = service.valid_link(token, "reply")
    if found is None or found[1].status != "info_requested":
        return render_template("onboarding/link_invalid.html"), 404
    item = found[1]
    if request.method == "GET" or not form.validate_on_submit():
        status = 400 if request.method == "POST" else 200
        return render_template("onboarding/reply.html", form=form, item=item), status
    if service.answer(token, form.reply.data) is None:
        db.session.rollback()
        return render_template("onboarding/link_invalid.html"), 404
    db.session.commit()
    return render_template("onboarding/reply_done.html")


# -- admin: the verification queue -----------------------------------------------------------
_reviewer = require_role(lambda: service.rules().reviewer_roles)


def _application(application_id: int) -> Application:
    item = db.session.get(Application, application_id)
    if item is None or item.status == "email_pending":
        abort(404)
    return item


@admin_bp.get("/verifications")
@_reviewer
def verifications(sso: SsoSession) -> Page:
    status = request.args.get("status", "open")
    if status not in ("open", "", "pending", "info_requested", "approved", "rejected"):
        status = "open"
    role = request.args.get("role", "")
    role = role if role in policy().roles else ""
    facility_id = forms.optional_int(request.args.get("facility"))
    now = clock.now()
    rows = [(item, service.age(item, now), service.overdue(item, now))
            for item in service.queue(status, role, facility_id)]
    return render_template("admin/verifications.html", rows=rows, status=status, role=role,
                           facility_id=facility_id, roles=service.applicable_roles(),
                           facilities=service.all_facilities(),
                           sla_hours=service.rules().sla // 3600)


def _detail(item: Application, sso: SsoSession, status: int = 200, error: str | None = None,
            approve: forms.ApproveForm | None = None, reject: forms.RejectForm | None = None,
            ask: forms.InfoRequestForm | None = None) -> Page:
    approve = approve or forms.ApproveForm(formdata=None, role=(
        item.first_approval or {}).get("role", item.role), facility_id=(
        item.first_approval or {}).get("facility", item.facility_id), department_id=(
        item.first_approval or {}).get("department", item.department_id))
    facilities = service.active_facilities()
    approve.role.choices = [(r.name, r.label) for r in service.applicable_roles()]
    approve.facility_id.choices = [(f.id, f.name) for f in facilities]
    approve.department_id.choices = [("", "None")] + [
        (d.id, f"{f.name} · {d.name}") for f in facilities for d in f.departments]
    first = db.session.get(User, item.first_approval_by) if item.first_approval_by else None
    return render_template(
        "admin/verification.html", item=item, age=service.age(item),
        overdue=service.overdue(item), events=service.events(item),
        registry=item.registry_result or {}, open=item.status in OPEN_STATES,
        approve=approve, reject=reject or forms.RejectForm(formdata=None),
        ask=ask or forms.InfoRequestForm(formdata=None), error=error,
        button=forms.EmptyForm(formdata=None),
        done=DONE.get(request.args.get("done", "")), first=first,
        needs_two=service.needs_two((item.first_approval or {}).get("role", item.role)),
        sso=sso), status


@admin_bp.get("/verifications/<int(max=2147483647):application_id>")
@_reviewer
def verification(sso: SsoSession, application_id: int) -> Page:
    return _detail(_application(application_id), sso)


@admin_bp.post("/verifications/<int(max=2147483647):application_id>/approve")
@_reviewer
def approve(sso: SsoSession, application_id: int) -> Page:
    item = _application(application_id)
    form = forms.ApproveForm()
    if not form.validate_on_submit():
        return _detail(item, sso, 400, "The form has expired: reload the page.")
    try:
        outcome = service.approve(item, sso.user, form.role.data or "", form.facility_id.data,
                                  form.department_id.data)
    except service.OnboardingError as exc:
        db.session.rollback()
        return _detail(_application(application_id), sso, 409, str(exc))
    try:
        db.session.commit()
    except IntegrityError:  # a concurrent decision took the NPI or the username first
        db.session.rollback()
        return _detail(_application(application_id), sso, 409, service.CONCURRENT_DECISION)
    if outcome.user is not None and outcome.temporary_password:
        send_mail(*service.approved_mail(outcome.user, outcome.temporary_password))
    return redirect(url_for(".verification", application_id=application_id,
                            done="first" if outcome.awaiting_second else "approved"))


@admin_bp.post("/verifications/<int(max=2147483647):application_id>/reject")
@_reviewer
def reject(sso: SsoSession, application_id: int) -> Page:
    item = _application(application_id)
    form = forms.RejectForm()
    if not form.validate_on_submit():
        return _detail(item, sso, 400, "Give the applicant a reason.", reject=form)
    try:
        service.reject(item, sso.user, form.reason.data)
    except service.OnboardingError as exc:
        db.session.rollback()
        return _detail(_application(application_id), sso, 409, str(exc))
    db.session.commit()
    send_mail(*service.rejected_mail(item))
    return redirect(url_for(".verification", application_id=application_id, done="rejected"))


@admin_bp.post("/verifications/<int(max=2147483647):application_id>/request-info")
@_reviewer
def request_info(sso: SsoSession, application_id: int) -> Page:
    item = _application(application_id)
    form = forms.InfoRequestForm()
    if not form.validate_on_submit():
        return _detail(item, sso, 400, "Write what the applicant should send.", ask=form)
    try:
        url = service.request_info(item, sso.user, form.question.data)
    except service.OnboardingError as exc:
        db.session.rollback()
        return _detail(_application(application_id), sso, 409, str(exc))
    db.session.commit()
    send_mail(*service.info_mail(item, url))
    return redirect(url_for(".verification", application_id=application_id, done="asked"))


@admin_bp.post("/verifications/<int(max=2147483647):application_id>/registry")
@_reviewer
def recheck_registry(sso: SsoSession, application_id: int) -> Page:
    item = _application(application_id)
    if not forms.EmptyForm().validate_on_submit():
        return _detail(item, sso, 400, "The form has expired: reload the page.")
    service.recheck_registry(item, sso.user)
    db.session.commit()
    return redirect(url_for(".verification", application_id=application_id, done="registry"))


# -- admin: facilities and departments -------------------------------------------------------
_facility_admin = require_role(lambda: service.rules().facility_admin_roles)


def _facilities_page(status: int = 200, error: str | None = None) -> Page:
    return render_template("admin/facilities.html", facilities=service.all_facilities(),
                           form=forms.FacilityForm(formdata=None),
                           department_form=forms.DepartmentForm(formdata=None),
                           button=forms.EmptyForm(formdata=None), error=error), status


@admin_bp.route("/facilities", methods=["GET", "POST"])
@_facility_admin
def facilities(sso: SsoSession) -> Page:
    if request.method == "GET":
        return _facilities_page()
    form = forms.FacilityForm()
    if not form.validate_on_submit():
        return _facilities_page(400, "Enter a facility name.")
    try:
        service.create_facility(form.name.data, actor(sso))
    except service.OnboardingError as exc:
        db.session.rollback()
        return _facilities_page(409, str(exc))
    db.session.commit()
    return redirect(url_for(".facilities"))


@admin_bp.post("/facilities/<int(max=2147483647):facility_id>/<action>")
@_facility_admin
def facility_action(sso: SsoSession, facility_id: int, action: str) -> Page:
    item = db.session.get(Facility, facility_id)
    if item is None or action not in ("rename", "deactivate", "activate", "departments"):
        abort(404)
    form = forms.FacilityForm() if action == "rename" else \
        forms.DepartmentForm() if action == "departments" else forms.EmptyForm()
    if not form.validate_on_submit():
        return _facilities_page(400, "Enter a name." if action in ("rename", "departments")
                                else "The form has expired: reload the page.")
    try:
        if action == "rename":
            service.rename_facility(item, form.name.data, actor(sso))
        elif action == "departments":
            service.add_department(item, form.name.data, actor(sso))
        else:
            service.set_facility_active(item, action == "activate", actor(sso))
    except service.OnboardingError as exc:
        db.session.rollback()
        return _facilities_page(409, str(exc))
    db.session.commit()
    return redirect(url_for(".facilities"))
