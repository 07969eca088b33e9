"""smart practitioner links: the EHR's Practitioner logical id found by NPI (fhirUser)

Revision ID: 0051
Revises: 0050
Create Date: 2026-12-06 10:40:00.000000

"""
import sqlalchemy as sa
from alembic import op

import idp.models_base

revision = '0051'
down_revision = '0050'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'smart_practitioner_links',
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('npi', sa.String(length=10), nullable=False),
        sa.Column('practitioner_id', sa.String(length=64), nullable=True),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('matches', sa.Integer(), nullable=False),
        sa.Column('resolved_at', idp.models_base.UTCDateTime(timezone=True), nullable=False),
        sa.Column('last_error', sa.String(length=200), nullable=True),
        sa.Column('last_error_at', idp.models_base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('user_id'),
    )


def downgrade():
    op.drop_table('smart_practitioner_links')
