"""device authorization grant (RFC 8628): one row per device_code/user_code pair, both stored
only as hashes

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06 10:50:00.000000

"""
import sqlalchemy as sa
from alembic import op

import idp.models_base

# revision identifiers, used by Alembic.
revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'oauth_device_grants',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('device_code_hash', sa.String(length=64), nullable=False),
        sa.Column('user_code_hash', sa.String(length=64), nullable=False),
        sa.Column('client_id', sa.String(length=64), nullable=False),
        sa.Column('scope', sa.Text(), nullable=False),
        sa.Column('created_at', idp.models_base.UTCDateTime(timezone=True), nullable=False),
        sa.Column('expires_at', idp.models_base.UTCDateTime(timezone=True), nullable=False),
        sa.Column('interval', sa.Integer(), nullable=False),
        sa.Column('last_poll_at', idp.models_base.UTCDateTime(timezone=True), nullable=True),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=True),
        sa.Column('auth_time', idp.models_base.UTCDateTime(timezone=True), nullable=True),
        sa.Column('acr', sa.String(length=100), nullable=True),
        sa.Column('amr', sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('oauth_device_grants', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_oauth_device_grants_device_code_hash'),
                              ['device_code_hash'], unique=True)
        batch_op.create_index(batch_op.f('ix_oauth_device_grants_user_code_hash'),
                              ['user_code_hash'], unique=True)
        batch_op.create_index(batch_op.f('ix_oauth_device_grants_client_id'), ['client_id'],
                              unique=False)


def downgrade():
    op.drop_table('oauth_device_grants')
