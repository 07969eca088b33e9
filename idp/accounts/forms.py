from flask_wtf import FlaskForm
from wtforms import BooleanField, PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length

from idp.core.i18n import lazy_gettext as _l


class LoginForm(FlaskForm):
    username = StringField(_l("Username or NPI"), validators=[DataRequired(), Length(max=254)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=1024)])


class NewPasswordForm(FlaskForm):
    new_password = PasswordField(_l("New password"), validators=[DataRequired(), Length(max=1024)])
    confirm_password = PasswordField(_l("Confirm new password"), validators=[
        DataRequired(), EqualTo("new_password", message=_l("The two passwords do not match."))])


class AcknowledgmentForm(FlaskForm):
    acknowledge = BooleanField(_l("I have read and accept the statement above"),
                               validators=[DataRequired(message=_l("Tick the box to continue."))])
