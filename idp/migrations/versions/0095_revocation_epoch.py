"""The revocation epoch: one counter every token revocation adds one to, read by the
node-local cache of access-token records (introspection and userinfo without a database read)

Revision ID: 0095
Revises: 0060
Create Date: 2026-12-06 14:00:00.000000

"""
import sqlalchemy as sa
from alembic import op

revision = '0095'
down_revision = '0090'
branch_labels = None
depends_on = None


def upgrade():
    table = op.create_table(
        'oauth_revocation_epoch',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('epoch', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.bulk_insert(table, [{'id': 1, 'epoch': 0}])


def downgrade():
    op.drop_table('oauth_revocation_epoch')
