"""The account's language (docs/i18n.md): the pages once signed in, the mails and texts to
the account, and the OIDC `locale` claim follow it; NULL: the browser's language

Revision ID: 0100
Revises: 0095
Create Date: 2026-12-06 17:40:00.000000

"""
import sqlalchemy as sa
from alembic import op

revision = '0100'
down_revision = '0095'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('language', sa.String(length=8), nullable=True))


def downgrade():
    with op.batch_alter_table('users') as batch:
        batch.drop_column('language')
