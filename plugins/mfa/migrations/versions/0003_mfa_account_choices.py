"""The account's default MFA method, and when a recovery code was last used to sign in
(until a new method is set up, each sign-in asks for one)

Revision ID: mfa_0003_account_choices
Revises: mfa_0002_failure_cap
Create Date: 2026-12-05 23:00:00

"""
import sqlalchemy as sa
from alembic import op

revision = "mfa_0003_account_choices"
down_revision = "mfa_0002_failure_cap"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("mfa_accounts") as batch:
        batch.add_column(sa.Column("default_kind", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("recovery_used_at", sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table("mfa_accounts") as batch:
        batch.drop_column("recovery_used_at")
        batch.drop_column("default_kind")
