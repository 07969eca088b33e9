"""break-glass episodes: emergency access requests, their entitlement and their review

Revision ID: 0052
Revises: 0051
Create Date: 2026-12-06 11:00:00.000000

"""
import sqlalchemy as sa
from alembic import op

import idp.models_base

revision = '0052'
down_revision = '0051'
branch_labels = None
depends_on = None

UTC = idp.models_base.UTCDateTime(timezone=True)


def upgrade():
    op.create_table(
        'breakglass_episodes',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('client_id', sa.String(length=64), nullable=False),
        sa.Column('sid', sa.String(length=64), nullable=False),
        sa.Column('request_key', sa.String(length=64), nullable=False),
        sa.Column('next_url', sa.Text(), nullable=False),
        sa.Column('created_at', UTC, nullable=False),
        sa.Column('expires_at', UTC, nullable=False),
        sa.Column('reason', sa.String(length=40), nullable=True),
        sa.Column('justification', sa.Text(), nullable=True),
        sa.Column('attempt_id', sa.String(length=64), nullable=True),
        sa.Column('amr', sa.JSON(), nullable=False),
        sa.Column('verified_at', UTC, nullable=True),
        sa.Column('ends_at', UTC, nullable=True),
        sa.Column('used_at', UTC, nullable=True),
        sa.Column('family_id', sa.String(length=64), nullable=True),
        sa.Column('ended_at', UTC, nullable=True),
        sa.Column('review_due_at', UTC, nullable=True),
        sa.Column('reviewed_at', UTC, nullable=True),
        sa.Column('reviewed_by', sa.Integer(), nullable=True),
        sa.Column('outcome', sa.String(length=20), nullable=True),
        sa.Column('review_note', sa.Text(), nullable=True),
        sa.Column('escalated_at', UTC, nullable=True),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    for column in ('user_id', 'sid', 'attempt_id', 'ends_at', 'family_id'):
        op.create_index(f'ix_breakglass_episodes_{column}', 'breakglass_episodes', [column])


def downgrade():
    op.drop_table('breakglass_episodes')
