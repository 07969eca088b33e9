"""scim: provisioning tokens and the SCIM view of accounts (externalId, stored attributes,
soft delete)

Revision ID: 0030
Revises: 0015
Create Date: 2026-12-06 10:00:00.000000

"""
import sqlalchemy as sa
from alembic import op

import idp.models_base

# revision identifiers, used by Alembic.
revision = '0030'
down_revision = '0025'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'scim_tokens',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('created_at', idp.models_base.UTCDateTime(timezone=True), nullable=False),
        sa.Column('expires_at', idp.models_base.UTCDateTime(timezone=True), nullable=True),
        sa.Column('revoked_at', idp.models_base.UTCDateTime(timezone=True), nullable=True),
        sa.Column('last_used_at', idp.models_base.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name'),
        sa.UniqueConstraint('token_hash'),
    )
    op.create_table(
        'scim_profiles',
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('external_id', sa.String(length=255), nullable=True),
        sa.Column('employee_number', sa.String(length=64), nullable=True),
        sa.Column('document', sa.JSON(), nullable=False),
        sa.Column('requested_role', sa.String(length=32), nullable=True),
        sa.Column('created_by', sa.String(length=100), nullable=True),
        sa.Column('created_at', idp.models_base.UTCDateTime(timezone=True), nullable=False),
        sa.Column('updated_at', idp.models_base.UTCDateTime(timezone=True), nullable=False),
        sa.Column('deleted_at', idp.models_base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('user_id'),
    )
    with op.batch_alter_table('scim_profiles', schema=None) as batch_op:
        batch_op.create_index('ix_scim_profiles_external_id', ['external_id'], unique=False)
        batch_op.create_index('ix_scim_profiles_employee_number', ['employee_number'],
                              unique=False)
    op.create_table(
        'scim_groups',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('display_name', sa.String(length=256), nullable=False),
        sa.Column('display_key', sa.String(length=256), nullable=False),
        sa.Column('external_id', sa.String(length=255), nullable=True),
        sa.Column('created_at', idp.models_base.UTCDateTime(timezone=True), nullable=False),
        sa.Column('updated_at', idp.models_base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('display_key'),
    )
    op.create_table(
        'scim_group_members',
        sa.Column('group_id', sa.String(length=36), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('display', sa.String(length=256), nullable=True),
        sa.ForeignKeyConstraint(['group_id'], ['scim_groups.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('group_id', 'user_id'),
    )
    with op.batch_alter_table('scim_group_members', schema=None) as batch_op:
        batch_op.create_index('ix_scim_group_members_user_id', ['user_id'], unique=False)


def downgrade():
    with op.batch_alter_table('scim_group_members', schema=None) as batch_op:
        batch_op.drop_index('ix_scim_group_members_user_id')
    op.drop_table('scim_group_members')
    op.drop_table('scim_groups')
    with op.batch_alter_table('scim_profiles', schema=None) as batch_op:
        batch_op.drop_index('ix_scim_profiles_employee_number')
        batch_op.drop_index('ix_scim_profiles_external_id')
    op.drop_table('scim_profiles')
    op.drop_table('scim_tokens')
