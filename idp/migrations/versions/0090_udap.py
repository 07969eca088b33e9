"""UDAP: trust communities, UDAP-registered clients, used software-statement jti

Revision ID: 0090
Revises: 0060
Create Date: 2026-12-06 13:45:00.000000

"""
import sqlalchemy as sa
from alembic import op

import idp.models_base

revision = '0090'
down_revision = '0085'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'udap_communities',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('anchors_pem', sa.Text(), nullable=False),
        sa.Column('intermediates_pem', sa.Text(), nullable=False),
        sa.Column('crls_pem', sa.Text(), nullable=False),
        sa.Column('created_at', idp.models_base.UTCDateTime(timezone=True), nullable=False),
        sa.Column('updated_at', idp.models_base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name'))
    op.create_table(
        'udap_clients',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('client_id', sa.String(length=64), nullable=False),
        sa.Column('iss', sa.String(length=512), nullable=False),
        sa.Column('community', sa.String(length=100), nullable=False),
        sa.Column('subject', sa.String(length=512), nullable=False),
        sa.Column('serial', sa.String(length=64), nullable=False),
        sa.Column('registered_at', idp.models_base.UTCDateTime(timezone=True), nullable=False),
        sa.Column('updated_at', idp.models_base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['client_id'], ['oauth_clients.client_id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('client_id'),
        sa.UniqueConstraint('iss'))
    op.create_table(
        'udap_used_jti',
        sa.Column('jti_hash', sa.String(length=64), nullable=False),
        sa.Column('expires_at', idp.models_base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('jti_hash'))
    op.create_index('ix_udap_used_jti_expires_at', 'udap_used_jti', ['expires_at'])


def downgrade():
    op.drop_index('ix_udap_used_jti_expires_at', table_name='udap_used_jti')
    op.drop_table('udap_used_jti')
    op.drop_table('udap_clients')
    op.drop_table('udap_communities')
