"""upstream OpenID Providers: providers, linked identities, flows, pending links, sessions

Revision ID: 0080
Revises: 0060
Create Date: 2026-12-06 13:40:00.000000

"""
import sqlalchemy as sa
from alembic import op

import idp.models_base

revision = '0080'
down_revision = '0070'
branch_labels = None
depends_on = None

UTC = idp.models_base.UTCDateTime(timezone=True)


def upgrade():
    op.create_table(
        'upstreams',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('issuer', sa.String(length=500), nullable=False),
        sa.Column('client_id', sa.String(length=255), nullable=False),
        sa.Column('client_secret_encrypted', sa.Text(), nullable=True),
        sa.Column('secret_env', sa.String(length=100), nullable=True),
        sa.Column('scope', sa.String(length=500), nullable=False),
        sa.Column('link_by', sa.String(length=10), nullable=False),
        sa.Column('allowed_domains', sa.JSON(), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('created_at', UTC, nullable=False),
        sa.Column('discovery', sa.JSON(), nullable=True),
        sa.Column('discovery_fetched_at', UTC, nullable=True),
        sa.Column('jwks', sa.JSON(), nullable=True),
        sa.Column('jwks_fetched_at', UTC, nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name'),
    )
    op.create_table(
        'upstream_links',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('upstream_id', sa.Integer(), nullable=False),
        sa.Column('issuer', sa.String(length=500), nullable=False),
        sa.Column('subject', sa.String(length=255), nullable=False),
        sa.Column('email', sa.String(length=254), nullable=True),
        sa.Column('how', sa.String(length=20), nullable=False),
        sa.Column('created_at', UTC, nullable=False),
        sa.Column('last_used_at', UTC, nullable=True),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['upstream_id'], ['upstreams.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('issuer', 'subject', name='uq_upstream_links_iss_sub'),
    )
    op.create_index('ix_upstream_links_user_id', 'upstream_links', ['user_id'])
    op.create_index('ix_upstream_links_upstream_id', 'upstream_links', ['upstream_id'])
    op.create_table(
        'upstream_flows',
        sa.Column('state_hash', sa.String(length=64), nullable=False),
        sa.Column('upstream_id', sa.Integer(), nullable=False),
        sa.Column('nonce', sa.String(length=100), nullable=False),
        sa.Column('verifier_encrypted', sa.Text(), nullable=False),
        sa.Column('next_url', sa.Text(), nullable=False),
        sa.Column('purpose', sa.String(length=20), nullable=False),
        sa.Column('created_at', UTC, nullable=False),
        sa.Column('expires_at', UTC, nullable=False),
        sa.Column('used_at', UTC, nullable=True),
        sa.ForeignKeyConstraint(['upstream_id'], ['upstreams.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('state_hash'),
    )
    op.create_index('ix_upstream_flows_upstream_id', 'upstream_flows', ['upstream_id'])
    op.create_index('ix_upstream_flows_expires_at', 'upstream_flows', ['expires_at'])
    op.create_table(
        'upstream_pending',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('upstream_id', sa.Integer(), nullable=False),
        sa.Column('issuer', sa.String(length=500), nullable=False),
        sa.Column('subject', sa.String(length=255), nullable=False),
        sa.Column('claims', sa.JSON(), nullable=False),
        sa.Column('upstream_sid', sa.String(length=255), nullable=True),
        sa.Column('next_url', sa.Text(), nullable=False),
        sa.Column('created_at', UTC, nullable=False),
        sa.Column('expires_at', UTC, nullable=False),
        sa.Column('used_at', UTC, nullable=True),
        sa.Column('application_id', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['upstream_id'], ['upstreams.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_upstream_pending_upstream_id', 'upstream_pending', ['upstream_id'])
    op.create_index('ix_upstream_pending_application_id', 'upstream_pending',
                    ['application_id'])
    op.create_table(
        'upstream_sessions',
        sa.Column('sso_session_id', sa.String(length=64), nullable=False),
        sa.Column('upstream_id', sa.Integer(), nullable=False),
        sa.Column('subject', sa.String(length=255), nullable=False),
        sa.Column('upstream_sid', sa.String(length=255), nullable=True),
        sa.Column('id_token_encrypted', sa.Text(), nullable=True),
        sa.Column('created_at', UTC, nullable=False),
        sa.ForeignKeyConstraint(['upstream_id'], ['upstreams.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('sso_session_id'),
    )
    for column in ('upstream_id', 'subject', 'upstream_sid'):
        op.create_index(f'ix_upstream_sessions_{column}', 'upstream_sessions', [column])


def downgrade():
    for table in ('upstream_sessions', 'upstream_pending', 'upstream_flows', 'upstream_links',
                  'upstreams'):
        op.drop_table(table)
