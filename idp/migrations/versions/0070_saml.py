"""SAML 2.0 identity provider: service providers, AuthnRequests seen, session participants

Revision ID: 0070
Revises: 0060
Create Date: 2026-12-06 13:30:00.000000

"""
import sqlalchemy as sa
from alembic import op

import idp.models_base

revision = '0070'
down_revision = '0065'
branch_labels = None
depends_on = None

UTC = idp.models_base.UTCDateTime(timezone=True)


def upgrade():
    op.create_table(
        'saml_service_providers',
        sa.Column('entity_id', sa.String(length=1024), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('metadata_xml', sa.Text(), nullable=False),
        sa.Column('metadata_url', sa.String(length=2048), nullable=True),
        sa.Column('nameid_format', sa.String(length=20), nullable=False),
        sa.Column('created_at', UTC, nullable=False),
        sa.Column('updated_at', UTC, nullable=False),
        sa.PrimaryKeyConstraint('entity_id'),
    )
    op.create_table(
        'saml_requests',
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('sp_entity_id', sa.String(length=1024), nullable=False),
        sa.Column('request_id', sa.String(length=256), nullable=False),
        sa.Column('acs_url', sa.String(length=2048), nullable=False),
        sa.Column('relay_state', sa.Text(), nullable=True),
        sa.Column('force_authn', sa.Boolean(), nullable=False),
        sa.Column('is_passive', sa.Boolean(), nullable=False),
        sa.Column('acr', sa.String(length=200), nullable=True),
        sa.Column('nameid_format', sa.String(length=20), nullable=True),
        sa.Column('unsolicited', sa.Boolean(), nullable=False),
        sa.Column('created_at', UTC, nullable=False),
        sa.Column('expires_at', UTC, nullable=False),
        sa.Column('answered_at', UTC, nullable=True),
        sa.PrimaryKeyConstraint('key'),
        sa.UniqueConstraint('sp_entity_id', 'request_id', name='uq_saml_requests_sp_request'),
    )
    op.create_index('ix_saml_requests_expires_at', 'saml_requests', ['expires_at'])
    op.create_table(
        'saml_participants',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('sid', sa.String(length=64), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('sp_entity_id', sa.String(length=1024), nullable=False),
        sa.Column('name_id', sa.String(length=512), nullable=False),
        sa.Column('name_id_format', sa.String(length=200), nullable=False),
        sa.Column('created_at', UTC, nullable=False),
        sa.Column('ended_at', UTC, nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_saml_participants_sid', 'saml_participants', ['sid'])
    op.create_index('ix_saml_participants_user_id', 'saml_participants', ['user_id'])


def downgrade():
    op.drop_table('saml_participants')
    op.drop_table('saml_requests')
    op.drop_table('saml_service_providers')
