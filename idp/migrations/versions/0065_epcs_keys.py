"""EPCS keys: WebAuthn credentials enrolled with a verified attestation (21 CFR 1311.115(b));
DEA registrations (number, expiry, who checked them)

Revision ID: 0065
Revises: 0060
Create Date: 2026-12-06 13:40:00.000000

"""
import sqlalchemy as sa
from alembic import op

revision = '0065'
down_revision = '0060'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'epcs_keys',
        sa.Column('factor_id', sa.Integer(),
                  sa.ForeignKey('mfa_factors.id', ondelete='CASCADE'), primary_key=True),
        sa.Column('user_id', sa.Integer(), sa.ForeignKey('users.id', ondelete='CASCADE'),
                  nullable=False),
        sa.Column('aaguid', sa.String(length=36), nullable=False),
        sa.Column('model', sa.String(length=200), nullable=False),
        sa.Column('attestation_fmt', sa.String(length=32), nullable=False),
        sa.Column('attestation_verified', sa.Boolean(), nullable=False),
        sa.Column('attestation_cert_sha256', sa.String(length=64), nullable=False),
        sa.Column('attachment', sa.String(length=16), nullable=True),
        sa.Column('backup_eligible', sa.Boolean(), nullable=False),
        sa.Column('backup_state', sa.Boolean(), nullable=False),
        sa.Column('enrolled_at', sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index('ix_epcs_keys_user_id', 'epcs_keys', ['user_id'])
    op.create_table(
        'epcs_dea_registrations',
        sa.Column('user_id', sa.Integer(), sa.ForeignKey('users.id', ondelete='CASCADE'),
                  primary_key=True),
        sa.Column('dea_number', sa.String(length=9), nullable=False),
        sa.Column('expires_on', sa.Date(), nullable=False),
        sa.Column('checked_by', sa.String(length=200), nullable=False),
        sa.Column('recorded_by', sa.String(length=100), nullable=False),
        sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    )


def downgrade():
    op.drop_table('epcs_dea_registrations')
    op.drop_index('ix_epcs_keys_user_id', table_name='epcs_keys')
    op.drop_table('epcs_keys')
