"""A pending sign-in's consent is part of its progress (kept in its state, bound to the user
who gave it): the consent_given column goes

Revision ID: 0006_consent_in_progress
Revises: 0005_mfa_failure_cap
Create Date: 2026-12-03 18:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0006_consent_in_progress'
down_revision = '0005_mfa_failure_cap'
branch_labels = None
depends_on = None


def upgrade():
    # Pending sign-ins live for minutes: one that had consent asks for it again.
    with op.batch_alter_table('pending_authorizations') as batch:
        batch.drop_column('consent_given')


def downgrade():
    # The table as it was (its columns in their order): the sign-ins in progress are
    # dropped with it, as they were asked to start over on the way up.
    with op.batch_alter_table('pending_authorizations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pending_authorizations_expires_at'))
    op.drop_table('pending_authorizations')
    op.create_table('pending_authorizations',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('browser_digest', sa.String(length=64), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('login_at', sa.DateTime(), nullable=True),
    sa.Column('consent_given', sa.Boolean(), nullable=False),
    sa.Column('state', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('completed_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('pending_authorizations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pending_authorizations_expires_at'), ['expires_at'],
                              unique=False)
