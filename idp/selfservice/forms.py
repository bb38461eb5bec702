from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField, SubmitField
from wtforms.validators import DataRequired, Length, Optional, ValidationError

from idp.password_policy import MAX_LENGTH

#: Allowed in a new user name: letters, digits and . _ - @ (User names are case-sensitive.)
USER_NAME_PATTERN = r"[A-Za-z0-9._@-]+"
USER_NAME_MIN, USER_NAME_MAX = 3, 64
USER_NAME_RULE = (f"{USER_NAME_MIN} to {USER_NAME_MAX} characters: letters, digits and . _ - @ "
                  "(capital letters count: Alice and alice are different user names).")
EMAIL_MAX = 254


def no_control_characters(form, field) -> None:
    """A NUL or another control character is no part of a name or an address."""
    if field.data and any(ord(ch) < 32 for ch in field.data):
        raise ValidationError("Remove the control characters from this field.")


TEXT = [no_control_characters]


class CreateAccountForm(FlaskForm):
    username = StringField("User Name", validators=[*TEXT, DataRequired("Choose a user name.")])
    password = PasswordField("Password", validators=[DataRequired("Choose a password.")])
    confirm = PasswordField("Confirm Password",
                            validators=[DataRequired("Enter the password again.")])
    email = StringField("Email", validators=[*TEXT, DataRequired("Enter your email address."),
                                             Length(max=EMAIL_MAX)])
    given_name = StringField("First Name (optional)",
                             validators=[*TEXT, Optional(), Length(max=100)])
    family_name = StringField("Last Name (optional)",
                              validators=[*TEXT, Optional(), Length(max=100)])
    submit = SubmitField("Create Account")


class ForgotUsernameForm(FlaskForm):
    email = StringField("Email", validators=[*TEXT, DataRequired("Enter your email address."),
                                             Length(max=EMAIL_MAX)])
    submit = SubmitField("Send")


class ForgotPasswordForm(FlaskForm):
    username = StringField("User Name", validators=[
        *TEXT, DataRequired("Enter your user name or your email address."),
        Length(max=EMAIL_MAX)])
    submit = SubmitField("Send Reset Link")


class ResetPasswordForm(FlaskForm):
    password = PasswordField("New Password", validators=[
        DataRequired("Choose a new password."), Length(max=MAX_LENGTH + 1)])
    confirm = PasswordField("Confirm Password",
                            validators=[DataRequired("Enter the new password again.")])
    submit = SubmitField("Reset Password")


class VerifyLinkForm(FlaskForm):
    submit = SubmitField("Verify My Email")


class ConfirmEmailForm(FlaskForm):
    submit = SubmitField("Continue")


class NewLinkForm(FlaskForm):
    submit = SubmitField("Send a New Link")


class ChangeEmailForm(FlaskForm):
    email = StringField("Email", validators=[*TEXT, DataRequired("Enter your email address."),
                                             Length(max=EMAIL_MAX)])
    submit = SubmitField("Send Email Link")


# --- the account page ---------------------------------------------------------------------


class ProfileForm(FlaskForm):
    given_name = StringField("First Name", validators=[*TEXT, Optional(), Length(max=100)])
    family_name = StringField("Last Name", validators=[*TEXT, Optional(), Length(max=100)])
    submit = SubmitField("Save Name")


class AccountEmailForm(FlaskForm):
    email = StringField("New Email", validators=[
        *TEXT, DataRequired("Enter the new email address."), Length(max=EMAIL_MAX)])
    submit = SubmitField("Change Email")


class ConfirmEmailChangeForm(FlaskForm):
    submit = SubmitField("Use This Email")


class ChangePasswordForm(FlaskForm):
    current = PasswordField("Current Password",
                            validators=[DataRequired("Enter your current password."),
                                        Length(max=MAX_LENGTH)])
    password = PasswordField("New Password",
                             validators=[DataRequired("Choose a new password.")])
    confirm = PasswordField("Confirm Password",
                            validators=[DataRequired("Enter the new password again.")])
    submit = SubmitField("Change Password")


class EndSessionsForm(FlaskForm):
    sid = StringField(validators=[*TEXT, Optional(), Length(max=64)])
    others = SubmitField("Sign Out of All Other Browsers")
    one = SubmitField("Sign Out")


class RevokeApplicationForm(FlaskForm):
    client_id = StringField(validators=[*TEXT, DataRequired(), Length(max=64)])
    submit = SubmitField("Remove Access")
