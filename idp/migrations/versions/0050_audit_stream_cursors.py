"""audit stream cursors: how far each audit sink (syslog, CEF, FHIR) has received the trail

Revision ID: 0050
Revises: 0015
Create Date: 2026-12-06 10:20:00.000000

"""
import sqlalchemy as sa
from alembic import op

import idp.models_base

revision = '0050'
down_revision = '0030'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'audit_stream_cursors',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('sink', sa.String(length=32), nullable=False),
        sa.Column('last_seq', sa.Integer(), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', idp.models_base.UTCDateTime(timezone=True), nullable=True),
        sa.Column('last_attempt_at', idp.models_base.UTCDateTime(timezone=True), nullable=True),
        sa.Column('last_delivered_at', idp.models_base.UTCDateTime(timezone=True),
                  nullable=True),
        sa.Column('last_error', sa.String(length=300), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('sink'),
    )


def downgrade():
    op.drop_table('audit_stream_cursors')
