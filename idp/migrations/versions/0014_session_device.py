"""session device: sso_sessions.device_hash, the SHA-256 of the browser's device cookie at
sign-in (the "new device" alert compares it instead of the user agent)

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-25 07:30:00.000000

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('sso_sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('device_hash', sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f('ix_sso_sessions_device_hash'), ['device_hash'],
                              unique=False)


def downgrade():
    with op.batch_alter_table('sso_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sso_sessions_device_hash'))
        batch_op.drop_column('device_hash')
