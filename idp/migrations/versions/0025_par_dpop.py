"""PAR, DPoP and the FAPI 2.0 client profile: pushed authorization requests, used DPoP proof
ids, the clients' protocol options, the DPoP key a public client's refresh token and a code
are bound to

Revision ID: 0025
Revises: 0015
Create Date: 2026-12-06 10:00:00.000000

"""
import sqlalchemy as sa
from alembic import op

import idp.models_base

# revision identifiers, used by Alembic.
revision = '0025'
down_revision = '0021'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'oauth_pushed_requests',
        sa.Column('uri_hash', sa.String(length=64), nullable=False),
        sa.Column('client_id', sa.String(length=64), nullable=False),
        sa.Column('params', sa.JSON(), nullable=False),
        sa.Column('expires_at', idp.models_base.UTCDateTime(timezone=True), nullable=False),
        sa.Column('opened_at', idp.models_base.UTCDateTime(timezone=True), nullable=True),
        sa.Column('used_at', idp.models_base.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('uri_hash'))
    with op.batch_alter_table('oauth_pushed_requests', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_oauth_pushed_requests_expires_at'),
                              ['expires_at'], unique=False)
    op.create_table(
        'oauth_dpop_proofs',
        sa.Column('jti_hash', sa.String(length=64), nullable=False),
        sa.Column('expires_at', idp.models_base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('jti_hash'))
    with op.batch_alter_table('oauth_dpop_proofs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_oauth_dpop_proofs_expires_at'), ['expires_at'],
                              unique=False)
    with op.batch_alter_table('oauth_clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('profile', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('require_pushed_authorization_requests', sa.Boolean(),
                                      server_default='0', nullable=False))
        batch_op.add_column(sa.Column('dpop_bound_access_tokens', sa.Boolean(),
                                      server_default='0', nullable=False))
    with op.batch_alter_table('oauth_refresh_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('jkt', sa.String(length=64), nullable=True))
    with op.batch_alter_table('oauth_codes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dpop_jkt', sa.String(length=64), nullable=True))


def downgrade():
    with op.batch_alter_table('oauth_codes', schema=None) as batch_op:
        batch_op.drop_column('dpop_jkt')
    with op.batch_alter_table('oauth_refresh_tokens', schema=None) as batch_op:
        batch_op.drop_column('jkt')
    with op.batch_alter_table('oauth_clients', schema=None) as batch_op:
        batch_op.drop_column('dpop_bound_access_tokens')
        batch_op.drop_column('require_pushed_authorization_requests')
        batch_op.drop_column('profile')
    with op.batch_alter_table('oauth_dpop_proofs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_oauth_dpop_proofs_expires_at'))
    op.drop_table('oauth_dpop_proofs')
    with op.batch_alter_table('oauth_pushed_requests', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_oauth_pushed_requests_expires_at'))
    op.drop_table('oauth_pushed_requests')
