"""MFA failures in a row per kind of factor, which the cool-down does not reset

Revision ID: 0005_mfa_failure_cap
Revises: 0004_auth_time_bigint
Create Date: 2026-12-02 10:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0005_mfa_failure_cap'
down_revision = '0004_auth_time_bigint'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('mfa_factor_failures',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('blocked_at', sa.DateTime(), nullable=True),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'kind')
    )


def downgrade():
    op.drop_table('mfa_factor_failures')
