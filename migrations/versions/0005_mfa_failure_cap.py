"""MFA failures in a row per kind of factor (now a no-op: the table is the MFA plugin's)

The mfa_factor_failures table this revision created is made by the plugin's own branch
(``plugins/mfa/migrations/versions``, label ``mfa``), only when the plugin is enabled. The
revision stays, doing nothing, so that databases at or past it keep a known history.

Revision ID: 0005_mfa_failure_cap
Revises: 0004_auth_time_bigint
Create Date: 2026-12-02 10:00:00

"""


revision = '0005_mfa_failure_cap'
down_revision = '0004_auth_time_bigint'
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
