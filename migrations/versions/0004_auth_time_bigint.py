"""auth_time as a 64-bit integer (seconds since the epoch outlive 2038)

Revision ID: 0004_auth_time_bigint
Revises: 0003_mfa
Create Date: 2026-11-29 01:40:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0004_auth_time_bigint'
down_revision = '0003_mfa'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('authorization_codes') as batch_op:
        batch_op.alter_column('auth_time', existing_type=sa.Integer(),
                              type_=sa.BigInteger(), existing_nullable=False)
    with op.batch_alter_table('tokens') as batch_op:
        batch_op.alter_column('auth_time', existing_type=sa.Integer(),
                              type_=sa.BigInteger(), existing_nullable=True)


def downgrade():
    with op.batch_alter_table('tokens') as batch_op:
        batch_op.alter_column('auth_time', existing_type=sa.BigInteger(),
                              type_=sa.Integer(), existing_nullable=True)
    with op.batch_alter_table('authorization_codes') as batch_op:
        batch_op.alter_column('auth_time', existing_type=sa.BigInteger(),
                              type_=sa.Integer(), existing_nullable=False)
