"""mfa (now a no-op: the MFA plugin's tables are its own branch)

The tables this revision created are made by the first revision of the plugin's branch
(``plugins/mfa/migrations/versions``, label ``mfa``), which Alembic runs only when the
plugin is enabled. The revision stays, doing nothing, so that databases at or past it keep
a known history.

Revision ID: 0003_mfa
Revises: 0002_delivery
Create Date: 2026-11-24 13:28:26.415647

"""


# revision identifiers, used by Alembic.
revision = '0003_mfa'
down_revision = '0002_delivery'
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
