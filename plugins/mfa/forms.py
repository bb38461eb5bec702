import re

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    EmailField,
    HiddenField,
    RadioField,
    StringField,
    SubmitField,
)
from wtforms.validators import (
    DataRequired,
    InputRequired,
    Length,
    Optional,
    Regexp,
    ValidationError,
)

_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_DOMAIN_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def is_email_address(text: str | None) -> bool:
    """``name@example.com``: one plain address (no display name, spaces or quoting), with a
    domain of at least two labels whose last is alphabetic."""
    local, at, domain = (text or "").rpartition("@")
    if not at or len(local) > 64 or not _LOCAL_PART.fullmatch(local):
        return False
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    labels = domain.split(".")
    return (len(labels) >= 2 and len(domain) <= 253 and labels[-1].isalpha()
            and all(_DOMAIN_LABEL.fullmatch(label) for label in labels))


class EmailAddress:
    def __init__(self, message: str):
        self.message = message

    def __call__(self, form, field):
        if not is_email_address((field.data or "").strip()):
            raise ValidationError(self.message)


class ReplaceFactorForm(FlaskForm):
    set_up = SubmitField("Set Up a New Method")
    not_now = SubmitField("Not Now")


class OfferForm(FlaskForm):
    enroll = SubmitField("Enroll in MFA")
    not_now = SubmitField("Not Now")


class VerifyEmailChoiceForm(FlaskForm):
    choice = RadioField(
        "Use this email for MFA?",
        choices=[("yes", "Yes"), ("no", "No, I'd like to change my email")],
        validators=[InputRequired("Choose Yes or No.")],
    )
    submit = SubmitField("Continue")


class EmailForm(FlaskForm):
    email = EmailField("Email", validators=[
        DataRequired("Enter an email address."),
        EmailAddress("Enter an email address like name@example.com."), Length(max=320)])
    submit = SubmitField("Send Email Link")


class ContinueForm(FlaskForm):
    submit = SubmitField("Continue")


class MethodForm(FlaskForm):
    method = RadioField("Choose Your MFA Method", choices=[
        ("sms", "SMS"), ("email", "Email"), ("totp", "Authentication app")],
        validators=[InputRequired("Choose a method.")])
    submit = SubmitField("Continue")


class PhoneForm(FlaskForm):
    phone = StringField("Phone Number", validators=[
        DataRequired("Enter your mobile phone number."), Length(max=30)])
    submit = SubmitField("Send Passcode")


class PasscodeForm(FlaskForm):
    passcode = StringField("Passcode", validators=[
        DataRequired("Enter the passcode."), Length(max=20)])
    remember = BooleanField("Remember this device", default=True)
    submit = SubmitField("Submit")


class AnotherMethodForm(FlaskForm):
    """Use another method: each method is a button whose value is the factor's kind."""

    factor = StringField(validators=[DataRequired(), Length(max=20)])


class ResendForm(FlaskForm):
    resend = SubmitField("Resend")


#: Modify MFA Options' own option besides the factors': new recovery codes.
RECOVERY_OPTION = ("recovery", "Recovery codes")


class ModifyForm(FlaskForm):
    """The options are the factors' (``Factor.modify_option``), then new recovery codes."""

    option = RadioField("What would you like to change?",
                        validators=[InputRequired("Choose an option.")])
    submit = SubmitField("Continue")
    cancel = SubmitField("Cancel")


class ForgetDevicesForm(FlaskForm):
    forget_all = SubmitField("Forget all devices")


class AccountFactorForm(FlaskForm):
    """The MFA Methods section's buttons: remove a method, or make it the default."""

    kind = HiddenField(validators=[DataRequired(), Length(max=20), Regexp(r"[a-z0-9_]+\Z")])
    remove = SubmitField("Remove")
    make_default = SubmitField("Make Default")


class AccountDevicesForm(FlaskForm):
    device_id = HiddenField(validators=[Optional(), Regexp(r"[0-9]{1,9}\Z")])
    forget_one = SubmitField("Forget This Device")
    forget_all = SubmitField("Forget All Devices")
