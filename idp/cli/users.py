"""``idp users``: create, list, disable and enable accounts, set a password."""

from __future__ import annotations

import secrets
import sys

import click
from flask.cli import with_appcontext

from idp import audit
from idp.accounts import create_user
from idp.cli.common import check_length, echo_json
from idp.extensions import db
from idp.models import User

# --- users ------------------------------------------------------------------------------


@click.group("users", help="Create, list, disable and enable accounts.")
def users():
    pass


@users.command("create")
@click.option("--username", required=True)
@click.option("--email", required=True)
@click.option("--phone")
@click.option("--name")
@click.option("--created-at", type=click.DateTime(formats=["%Y-%m-%d"]),
              help="Account creation date (YYYY-MM-DD), for accounts moved from elsewhere.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@with_appcontext
def users_create(username, email, phone, name, created_at, password_stdin):
    """Create an account; prints a random password when none is given."""
    if (not username or len(username) > 150 or username != username.strip()
            or not username.isprintable()):
        raise click.BadParameter("the user name must be 1-150 printable characters without "
                                 "outer spaces", param_hint="--username")
    if "@" not in email or len(email) > 320 or any(c.isspace() for c in email):
        raise click.BadParameter("not an email address", param_hint="--email")
    if db.session.scalar(db.select(User.id).filter_by(username=username)):
        raise click.ClickException(f"The user name {username!r} is taken.")
    password, generated = _new_password(password_stdin)
    check_length(phone, "--phone", 32)
    check_length(name, "--name", 200)
    user = create_user(username, email, password, phone=phone, created_at=created_at, name=name)
    db.session.flush()
    audit.record("user_created", user_id=user.id, source="cli")
    db.session.commit()
    out = {"username": user.username, "sub": user.sub, "email": user.email,
           "created_at": user.created_at.isoformat()}
    if generated:
        out["password"] = generated
    echo_json(out)


def _new_password(from_stdin: bool) -> tuple[str, str | None]:
    """The password read from standard input (at least 8 characters), or a random one to
    print: ``(password, the generated one or None)``."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if len(password) < 8:
            raise click.ClickException("The password must have at least 8 characters.")
        return password, None
    password = secrets.token_urlsafe(12)
    return password, password


@users.command("set-password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@with_appcontext
def users_set_password(username, password_stdin):
    """Give a user a new password (printed when none is given). Their sessions end, their
    remembered devices are forgotten and a notice goes to their email."""
    from idp.accounts import change_password

    user = db.session.scalar(db.select(User).filter_by(username=username))
    if user is None:
        raise click.ClickException(f"No user named {username!r}.")
    password, generated = _new_password(password_stdin)
    ended = change_password(user, password, source="cli")
    out = {"username": username, "sessions_ended": ended}
    if generated:
        out["password"] = generated
    echo_json(out)


def _set_disabled(username: str, disabled: bool) -> None:
    from idp.accounts import set_disabled

    user = db.session.scalar(db.select(User).filter_by(username=username))
    if user is None:
        raise click.ClickException(f"No user named {username!r}.")
    ended = set_disabled(user, disabled, source="cli")
    out = {"username": username, "disabled": disabled}
    if ended is not None:
        out.update(sessions_ended=ended.sessions_ended, tokens_revoked=ended.tokens_revoked)
    echo_json(out)


@users.command("disable")
@click.argument("username")
@with_appcontext
def users_disable(username):
    """Disable an account: it can no longer sign in, its sessions end (with back-channel
    logout) and its tokens are revoked."""
    _set_disabled(username, True)


@users.command("enable")
@click.argument("username")
@with_appcontext
def users_enable(username):
    """Enable a disabled account again (it signs in anew; nothing ended comes back)."""
    _set_disabled(username, False)


@users.command("list")
@with_appcontext
def users_list():
    """List accounts (user name, email, creation date)."""
    for user in db.session.scalars(db.select(User).order_by(User.id)):
        click.echo(f"{user.username}\t{user.email}\t{user.created_at:%Y-%m-%d}\t{user.sub}")
