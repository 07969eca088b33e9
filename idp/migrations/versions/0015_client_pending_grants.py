"""client pending grants: what a self-registered client asked for beyond the self-service
policy (scopes.toml [grants]) and waits for an admin to approve

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 09:00:00.000000

"""
import sqlalchemy as sa
from alembic import op

import idp.models_base

# revision identifiers, used by Alembic.
revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('oauth_clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pending_scope', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('pending_grant_types', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('pending_introspect_any', sa.Boolean(),
                                      server_default='0', nullable=False))
        batch_op.add_column(sa.Column('pending_since', idp.models_base.UTCDateTime(timezone=True),
                                      nullable=True))


def downgrade():
    with op.batch_alter_table('oauth_clients', schema=None) as batch_op:
        batch_op.drop_column('pending_since')
        batch_op.drop_column('pending_introspect_any')
        batch_op.drop_column('pending_grant_types')
        batch_op.drop_column('pending_scope')
