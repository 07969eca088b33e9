"""Onboarding forms (Flask-WTF: every POST carries a CSRF token). Choices come from policy and
from the facilities admins maintain, filled in by the views."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import DateField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional, Regexp

from idp.core.i18n import lazy_gettext as _l


def optional_int(value: object) -> int | None:
    """Select values: '' is "none chosen"; anything not a number is too (never a 500)."""
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


class ApplicationForm(FlaskForm):
    given_name = StringField(_l("Legal first name"), validators=[
        DataRequired(_l("Enter your first name as on your license.")), Length(max=100)])
    family_name = StringField(_l("Legal last name"), validators=[
        DataRequired(_l("Enter your last name as on your license.")), Length(max=100)])
    email = StringField(_l("Email address"), validators=[
        DataRequired(_l("Enter your email address.")), Length(max=254),
        Regexp(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", message=_l("Enter an email address such as "
                                                           "name@hospital.org."))])
    phone = StringField(_l("Phone number"), validators=[
        DataRequired(_l("Enter a phone number where we can reach you.")), Length(max=40)])
    role = SelectField(_l("Role applied for"), validate_choice=False)
    npi = StringField(_l("NPI (National Provider Identifier)"), validators=[
        DataRequired(_l("Enter your 10-digit NPI.")), Length(max=20)])
    license_state = SelectField(_l("License state or territory"), validate_choice=False)
    license_number = StringField(_l("License number"), validators=[Optional(), Length(max=32)])
    license_expires = DateField(_l("License expiry date"), validators=[Optional()])
    facility_id = SelectField(_l("Facility"), coerce=optional_int, validate_choice=False)
    department_id = SelectField(_l("Department"), coerce=optional_int, validate_choice=False)


class ReplyForm(FlaskForm):
    reply = TextAreaField(_l("Your answer"), validators=[
        DataRequired(_l("Write your answer.")), Length(max=4000)])


class ApproveForm(FlaskForm):
    role = SelectField(_l("Role to grant"), validate_choice=False)
    facility_id = SelectField(_l("Facility"), coerce=optional_int, validate_choice=False)
    department_id = SelectField(_l("Department"), coerce=optional_int, validate_choice=False)


class RejectForm(FlaskForm):
    reason = TextAreaField(_l("Reason (sent to the applicant)"), validators=[
        DataRequired(_l("Give the applicant a reason.")), Length(max=2000)])


class InfoRequestForm(FlaskForm):
    question = TextAreaField(_l("What the applicant should send"), validators=[
        DataRequired(_l("Write what the applicant should send.")), Length(max=2000)])


class FacilityForm(FlaskForm):
    name = StringField(_l("Facility name"), validators=[DataRequired(_l("Enter a name.")),
                                                    Length(max=200)])


class DepartmentForm(FlaskForm):
    name = StringField(_l("New department"), validators=[DataRequired(_l("Enter a name.")),
                                                     Length(max=200)])


class EmptyForm(FlaskForm):
    """A button-only POST (deactivate, activate): the CSRF token is the whole form."""
