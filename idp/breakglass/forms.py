"""Break-glass forms (Flask-WTF: every POST carries a CSRF token)."""

from flask_wtf import FlaskForm
from wtforms import PasswordField, RadioField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length


class RequestForm(FlaskForm):
    reason = RadioField("Reason", choices=[], validate_choice=False)
    justification = TextAreaField("Justification", validators=[Length(max=8000)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


class ReviewForm(FlaskForm):
    outcome = RadioField("Outcome", choices=[], validate_choice=False)
    note = StringField("Review note", validators=[Length(max=4000)])
