"""SMART App Launch: launch values registered by the EHR, launch context bound to a grant

Revision ID: 0012
Revises: 0007
Create Date: 2026-11-25 06:10:00.000000

"""
import sqlalchemy as sa
from alembic import op

from idp.models_base import UTCDateTime

# revision identifiers, used by Alembic.
revision = '0012'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'smart_launches',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('launch_hash', sa.String(length=64), nullable=False),
        sa.Column('client_id', sa.String(length=64), nullable=False),
        sa.Column('registered_by', sa.String(length=64), nullable=False),
        sa.Column('subject', sa.String(length=64), nullable=True),
        sa.Column('patient', sa.String(length=64), nullable=True),
        sa.Column('encounter', sa.String(length=64), nullable=True),
        sa.Column('created_at', UTCDateTime(timezone=True), nullable=False),
        sa.Column('expires_at', UTCDateTime(timezone=True), nullable=False),
        sa.Column('used_at', UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('launch_hash'),
    )
    with op.batch_alter_table('smart_launches', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_smart_launches_expires_at'), ['expires_at'],
                              unique=False)
    op.create_table(
        'smart_contexts',
        sa.Column('family_id', sa.String(length=64), nullable=False),
        sa.Column('client_id', sa.String(length=64), nullable=False),
        sa.Column('patient', sa.String(length=64), nullable=True),
        sa.Column('encounter', sa.String(length=64), nullable=True),
        sa.Column('fhir_context', sa.JSON(), nullable=False),
        sa.Column('created_at', UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('family_id'),
    )
    with op.batch_alter_table('smart_contexts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_smart_contexts_client_id'), ['client_id'],
                              unique=False)


def downgrade():
    with op.batch_alter_table('smart_contexts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_smart_contexts_client_id'))
    op.drop_table('smart_contexts')
    with op.batch_alter_table('smart_launches', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_smart_launches_expires_at'))
    op.drop_table('smart_launches')
