from flask_wtf import FlaskForm
from wtforms import BooleanField, PasswordField, StringField, SubmitField
from wtforms.validators import DataRequired, Length


class LoginForm(FlaskForm):
    username = StringField("User Name", validators=[
        DataRequired("Enter your user name."), Length(max=150)])
    password = PasswordField("Password", validators=[
        DataRequired("Enter your password."), Length(max=1024)])
    submit = SubmitField("Log In")


class ConsentForm(FlaskForm):
    allow = SubmitField("Allow")
    deny = SubmitField("Deny")


class TermsForm(FlaskForm):
    agree = SubmitField("I Agree")
    decline = SubmitField("Decline")


class ConfirmForm(FlaskForm):
    confirm = BooleanField(default=True)
