"""Self-service accounts: emailed account links (email verification, password reset), the
account's given and family names, and whether it must verify its email before signing in

Revision ID: 0007_self_service
Revises: 0006_consent_in_progress
Create Date: 2026-12-05 16:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0007_self_service'
down_revision = '0006_consent_in_progress'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'account_links',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('purpose', sa.String(length=16), nullable=False),
        sa.Column('token_digest', sa.String(length=64), nullable=False),
        sa.Column('address', sa.String(length=320), nullable=False),
        sa.Column('pending_id', sa.String(length=64), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('expires_at', sa.DateTime(), nullable=False),
        sa.Column('used_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('token_digest'),
    )
    op.create_index('ix_account_links_user_purpose', 'account_links', ['user_id', 'purpose'])
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('given_name', sa.String(length=100), nullable=True))
        batch.add_column(sa.Column('family_name', sa.String(length=100), nullable=True))
        batch.add_column(sa.Column('must_verify_email', sa.Boolean(), nullable=False,
                                   server_default=sa.false()))


def downgrade():
    with op.batch_alter_table('users') as batch:
        batch.drop_column('must_verify_email')
        batch.drop_column('family_name')
        batch.drop_column('given_name')
    op.drop_index('ix_account_links_user_purpose', table_name='account_links')
    op.drop_table('account_links')
