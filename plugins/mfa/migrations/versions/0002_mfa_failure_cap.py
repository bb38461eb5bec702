"""MFA failures in a row per kind of factor, which the cool-down does not reset

A database migrated before the plugin had its own branch may have the table already (the
core's revision 0005_mfa_failure_cap made it, with the same columns): it is kept, and this
revision only records itself.

Revision ID: mfa_0002_failure_cap
Revises: mfa_0001_tables
Create Date: 2026-12-05 10:00:00

"""
import sqlalchemy as sa
from alembic import op

revision = "mfa_0002_failure_cap"
down_revision = "mfa_0001_tables"
branch_labels = None
depends_on = None


def existing_tables() -> set[str]:
    """The tables the database has already (none to inspect when writing SQL, ``--sql``)."""
    if op.get_context().as_sql:
        return set()
    return set(sa.inspect(op.get_bind()).get_table_names())


def upgrade():
    if "mfa_factor_failures" in existing_tables():
        return
    op.create_table(
        "mfa_factor_failures",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("blocked_at", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", "kind"),
    )


def downgrade():
    op.drop_table("mfa_factor_failures")
