"""per-client token lifetimes, software statements

Revision ID: 0010
Revises: 0007
Create Date: 2026-11-25 06:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0010'
down_revision = '0007'
branch_labels = None
depends_on = None

COLUMNS = ('access_token_lifetime', 'id_token_lifetime', 'refresh_token_lifetime')


def upgrade():
    with op.batch_alter_table('oauth_clients', schema=None) as batch_op:
        for name in COLUMNS:
            batch_op.add_column(sa.Column(name, sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('software_statement', sa.Text(), nullable=True))


def downgrade():
    with op.batch_alter_table('oauth_clients', schema=None) as batch_op:
        batch_op.drop_column('software_statement')
        for name in reversed(COLUMNS):
            batch_op.drop_column(name)
