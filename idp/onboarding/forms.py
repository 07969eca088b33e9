"""Onboarding forms (Flask-WTF: every POST carries a CSRF token). Choices come from policy and
from the facilities admins maintain, filled in by the views."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import DateField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional, Regexp


def optional_int(value: object) -> int | None:
    """Select values: '' is "none chosen"; anything not a number is too (never a 500)."""
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


class ApplicationForm(FlaskForm):
    given_name = StringField("Legal first name", validators=[
        DataRequired("Enter your first name as on your license."), Length(max=100)])
    family_name = StringField("Legal last name", validators=[
        DataRequired("Enter your last name as on your license."), Length(max=100)])
    email = StringField("Email address", validators=[
        DataRequired("Enter your email address."), Length(max=254),
        Regexp(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", message="Enter an email address such as "
                                                        "name@hospital.org.")])
    phone = StringField("Phone number", validators=[
        DataRequired("Enter a phone number where we can reach you."), Length(max=40)])
    role = SelectField("Role applied for", validate_choice=False)
    npi = StringField("NPI (National Provider Identifier)", validators=[
        DataRequired("Enter your 10-digit NPI."), Length(max=20)])
    license_state = SelectField("License state or territory", validate_choice=False)
    license_number = StringField("License number", validators=[Optional(), Length(max=32)])
    license_expires = DateField("License expiry date", validators=[Optional()])
    facility_id = SelectField("Facility", coerce=optional_int, validate_choice=False)
    department_id = SelectField("Department", coerce=optional_int, validate_choice=False)


class ReplyForm(FlaskForm):
    reply = TextAreaField("Your answer", validators=[
        DataRequired("Write your answer."), Length(max=4000)])


class ApproveForm(FlaskForm):
    role = SelectField("Role to grant", validate_choice=False)
    facility_id = SelectField("Facility", coerce=optional_int, validate_choice=False)
    department_id = SelectField("Department", coerce=optional_int, validate_choice=False)


class RejectForm(FlaskForm):
    reason = TextAreaField("Reason (sent to the applicant)", validators=[
        DataRequired("Give the applicant a reason."), Length(max=2000)])


class InfoRequestForm(FlaskForm):
    question = TextAreaField("What the applicant should send", validators=[
        DataRequired("Write what the applicant should send."), Length(max=2000)])


class FacilityForm(FlaskForm):
    name = StringField("Facility name", validators=[DataRequired("Enter a name."),
                                                    Length(max=200)])


class DepartmentForm(FlaskForm):
    name = StringField("New department", validators=[DataRequired("Enter a name."),
                                                     Length(max=200)])


class EmptyForm(FlaskForm):
    """A button-only POST (deactivate, activate): the CSRF token is the whole form."""
