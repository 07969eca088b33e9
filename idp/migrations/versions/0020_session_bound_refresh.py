"""session-bound refresh tokens: a refresh token issued without offline_access lives only as
long as the SSO session that issued it (docs/refresh-tokens.md); existing tokens are offline

Revision ID: 0020
Revises: 0015
Create Date: 2026-12-06 10:10:00.000000

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0020'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('oauth_refresh_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('session_bound', sa.Boolean(), server_default='0',
                                      nullable=False))


def downgrade():
    with op.batch_alter_table('oauth_refresh_tokens', schema=None) as batch_op:
        batch_op.drop_column('session_bound')
