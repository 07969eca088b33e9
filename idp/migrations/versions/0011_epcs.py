"""EPCS permission (two admins) and signing ceremonies

Revision ID: 0011
Revises: 0007
Create Date: 2026-11-25 06:20:00

"""
from alembic import op
import sqlalchemy as sa
import idp.models_base


# revision identifiers, used by Alembic.
revision = '0011'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('epcs_permissions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('proposed_by', sa.Integer(), nullable=False),
    sa.Column('proposed_at', idp.models_base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('approved_by', sa.Integer(), nullable=True),
    sa.Column('approved_at', idp.models_base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('revoked_by', sa.Integer(), nullable=True),
    sa.Column('revoked_at', idp.models_base.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('epcs_permissions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_epcs_permissions_user_id'), ['user_id'], unique=False)

    op.create_table('epcs_ceremonies',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('sid', sa.String(length=64), nullable=True),
    sa.Column('request_key', sa.String(length=64), nullable=False),
    sa.Column('binding_message', sa.String(length=256), nullable=False),
    sa.Column('next_url', sa.String(length=4096), nullable=False),
    sa.Column('attempt_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', idp.models_base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', idp.models_base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('completed_at', idp.models_base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('used_at', idp.models_base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('acr', sa.String(length=100), nullable=True),
    sa.Column('amr', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('epcs_ceremonies', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_epcs_ceremonies_attempt_id'), ['attempt_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_epcs_ceremonies_user_id'), ['user_id'], unique=False)


def downgrade():
    with op.batch_alter_table('epcs_ceremonies', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_epcs_ceremonies_user_id'))
        batch_op.drop_index(batch_op.f('ix_epcs_ceremonies_attempt_id'))
    op.drop_table('epcs_ceremonies')
    with op.batch_alter_table('epcs_permissions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_epcs_permissions_user_id'))
    op.drop_table('epcs_permissions')
