"""``idp maintenance prune`` deletes what can no longer be used, and nothing else."""

from datetime import timedelta

from idp.extensions import db
from idp.models import AuthorizationCode, PendingAuthorization, SsoSession, Token
from idp.timeutil import utcnow


def count(model):
    return db.session.scalar(db.select(db.func.count()).select_from(model))


def test_prune_deletes_rows_expired_more_than_a_week_ago_and_keeps_live_ones(
    oidc, rp, alice, runner
):
    app_client, secret = rp
    live = oidc.sign_in(app_client)
    assert oidc.token(app_client, secret, live["code"]).status_code == 200
    oidc.callback_params(oidc.follow(oidc.authorize(app_client)))  # a second code, by SSO
    long_ago = utcnow() - timedelta(days=8)
    code = db.session.scalars(db.select(AuthorizationCode).order_by(AuthorizationCode.id)).first()
    code.expires_at = long_ago
    db.session.scalars(db.select(PendingAuthorization)).first().expires_at = long_ago
    db.session.commit()
    before = {m: count(m) for m in (AuthorizationCode, PendingAuthorization, SsoSession, Token)}

    result = runner.invoke(args=["maintenance", "prune"])

    assert result.exit_code == 0, result.output
    assert "authorization_codes\t1" in result.output
    assert count(AuthorizationCode) == before[AuthorizationCode] - 1
    assert count(PendingAuthorization) == before[PendingAuthorization] - 1
    assert count(SsoSession) == before[SsoSession] == 1
    assert count(Token) == before[Token] == 1


def test_prune_removes_sessions_that_ended_long_ago(oidc, rp, alice, runner):
    oidc.sign_in(rp[0])
    session = db.session.scalars(db.select(SsoSession)).one()
    session.ended_at = utcnow() - timedelta(days=8)
    db.session.commit()
    result = runner.invoke(args=["maintenance", "prune"])
    assert result.exit_code == 0, result.output
    assert count(SsoSession) == 0


def test_prune_also_deletes_the_rows_a_plugin_names(tmp_path, database_url):
    """The MFA plugin's expired passcodes, links and devices go; live ones stay."""
    from idp import create_app
    from plugins.mfa.models import EmailVerification, Passcode, RememberedDevice
    from tests.conftest import base_config, make_user

    app = create_app(base_config(tmp_path, IDP_PLUGINS="mfa"))  # by its entry point
    with app.app_context():
        user = make_user("alice")
        long_ago, later = utcnow() - timedelta(days=8), utcnow() + timedelta(minutes=5)
        for expires in (long_ago, later):
            db.session.add(Passcode(user_id=user.id, pending_id="p", factor="sms",
                                    destination="+12025550143", code_digest="d" + str(expires),
                                    expires_at=expires))
            db.session.add(EmailVerification(user_id=user.id, address="a@example.com",
                                             token_digest="t" + str(expires),
                                             expires_at=expires))
            db.session.add(RememberedDevice(user_id=user.id, token_digest="r" + str(expires),
                                            expires_at=expires))
        db.session.commit()

        result = app.test_cli_runner().invoke(args=["maintenance", "prune"])

        assert result.exit_code == 0, result.output
        for name in ("mfa_passcodes", "mfa_email_verifications", "mfa_remembered_devices"):
            assert f"{name}\t1" in result.output
        for model in (Passcode, EmailVerification, RememberedDevice):
            assert count(model) == 1
        db.session.remove()
        db.engine.dispose()
