"""The MFA plugin's tables, the first revision of its own branch (label ``mfa``)

Accounts, email verifications, factors, passcodes, recovery codes and remembered devices.
Alembic runs the branch only when the plugin is enabled; it needs the core's ``users`` table.

A database migrated before the plugin had its own branch already has these tables (the
core's revision 0003_mfa made them, with the same columns): they are kept, rows and all,
and this revision only records itself.

Revision ID: mfa_0001_tables
Revises: (base of the mfa branch; depends on 0001_core)
Create Date: 2026-12-05 10:00:00

"""
import sqlalchemy as sa
from alembic import op

revision = "mfa_0001_tables"
down_revision = None
branch_labels = ("mfa",)
depends_on = "0001_core"


def existing_tables() -> set[str]:
    """The tables the database has already (none to inspect when writing SQL, ``--sql``)."""
    if op.get_context().as_sql:
        return set()
    return set(sa.inspect(op.get_bind()).get_table_names())


def upgrade():
    existing = existing_tables()
    if "mfa_accounts" not in existing:
        op.create_table(
            "mfa_accounts",
            sa.Column("user_id", sa.Integer(), nullable=False),
            sa.Column("mfa_email", sa.String(length=320), nullable=True),
            sa.Column("mfa_email_verified_at", sa.DateTime(), nullable=True),
            sa.Column("enrolled_at", sa.DateTime(), nullable=True),
            sa.Column("failures", sa.Integer(), nullable=False),
            sa.Column("locked_until", sa.DateTime(), nullable=True),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("user_id"),
        )
    if "mfa_email_verifications" not in existing:
        op.create_table(
            "mfa_email_verifications",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("user_id", sa.Integer(), nullable=False),
            sa.Column("pending_id", sa.String(length=64), nullable=True),
            sa.Column("address", sa.String(length=320), nullable=False),
            sa.Column("token_digest", sa.String(length=64), nullable=False),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.Column("expires_at", sa.DateTime(), nullable=False),
            sa.Column("used_at", sa.DateTime(), nullable=True),
            sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("token_digest"),
        )
        op.create_index(op.f("ix_mfa_email_verifications_pending_id"),
                        "mfa_email_verifications", ["pending_id"], unique=False)
        op.create_index(op.f("ix_mfa_email_verifications_user_id"),
                        "mfa_email_verifications", ["user_id"], unique=False)
    if "mfa_factors" not in existing:
        op.create_table(
            "mfa_factors",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("user_id", sa.Integer(), nullable=False),
            sa.Column("kind", sa.String(length=20), nullable=False),
            sa.Column("destination", sa.String(length=320), nullable=True),
            sa.Column("secret_encrypted", sa.String(length=500), nullable=True),
            sa.Column("last_step", sa.Integer(), nullable=False),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.Column("last_used_at", sa.DateTime(), nullable=True),
            sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("user_id", "kind"),
        )
        op.create_index(op.f("ix_mfa_factors_user_id"), "mfa_factors", ["user_id"],
                        unique=False)
    if "mfa_passcodes" not in existing:
        op.create_table(
            "mfa_passcodes",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("user_id", sa.Integer(), nullable=False),
            sa.Column("pending_id", sa.String(length=64), nullable=False),
            sa.Column("factor", sa.String(length=20), nullable=False),
            sa.Column("purpose", sa.String(length=20), nullable=False),
            sa.Column("destination", sa.String(length=320), nullable=False),
            sa.Column("code_digest", sa.String(length=64), nullable=False),
            sa.Column("attempts", sa.Integer(), nullable=False),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.Column("expires_at", sa.DateTime(), nullable=False),
            sa.Column("used_at", sa.DateTime(), nullable=True),
            sa.Column("revoked_at", sa.DateTime(), nullable=True),
            sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index(op.f("ix_mfa_passcodes_pending_id"), "mfa_passcodes", ["pending_id"],
                        unique=False)
        op.create_index(op.f("ix_mfa_passcodes_user_id"), "mfa_passcodes", ["user_id"],
                        unique=False)
    if "mfa_recovery_codes" not in existing:
        op.create_table(
            "mfa_recovery_codes",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("user_id", sa.Integer(), nullable=False),
            sa.Column("code_digest", sa.String(length=64), nullable=False),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.Column("used_at", sa.DateTime(), nullable=True),
            sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("code_digest"),
        )
        op.create_index(op.f("ix_mfa_recovery_codes_user_id"), "mfa_recovery_codes",
                        ["user_id"], unique=False)
    if "mfa_remembered_devices" not in existing:
        op.create_table(
            "mfa_remembered_devices",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("user_id", sa.Integer(), nullable=False),
            sa.Column("token_digest", sa.String(length=64), nullable=False),
            sa.Column("label", sa.String(length=200), nullable=False),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.Column("last_used_at", sa.DateTime(), nullable=True),
            sa.Column("expires_at", sa.DateTime(), nullable=False),
            sa.Column("forgotten_at", sa.DateTime(), nullable=True),
            sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("token_digest"),
        )
        op.create_index(op.f("ix_mfa_remembered_devices_user_id"), "mfa_remembered_devices",
                        ["user_id"], unique=False)


def downgrade():
    # A table's indexes go with it.
    for table in ("mfa_remembered_devices", "mfa_recovery_codes", "mfa_passcodes",
                  "mfa_factors", "mfa_email_verifications", "mfa_accounts"):
        op.drop_table(table)
