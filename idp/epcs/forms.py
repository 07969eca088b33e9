"""EPCS forms (Flask-WTF: every POST carries a CSRF token)."""

from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length


class CeremonyForm(FlaskForm):
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


class ProposeForm(FlaskForm):
    username = StringField("Username or NPI", validators=[DataRequired(), Length(max=254)])


class ActionForm(FlaskForm):
    """Approve / revoke buttons: nothing but the CSRF token."""
