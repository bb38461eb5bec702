"""The browser an SSO session was signed in with (for the account page's Where You're
Signed In)

Revision ID: 0008_session_browser
Revises: 0007_self_service
Create Date: 2026-12-05 23:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0008_session_browser'
down_revision = '0007_self_service'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('sso_sessions') as batch:
        batch.add_column(sa.Column('browser', sa.String(length=200), nullable=True))


def downgrade():
    with op.batch_alter_table('sso_sessions') as batch:
        batch.drop_column('browser')
