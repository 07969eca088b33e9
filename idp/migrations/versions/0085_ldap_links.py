"""ldap links: accounts whose password the hospital directory checks (LDAP / Active Directory)

Revision ID: 0085
Revises: 0060
Create Date: 2026-12-06 13:40:00.000000

"""
import sqlalchemy as sa
from alembic import op

import idp.models_base

revision = '0085'
down_revision = '0080'
branch_labels = None
depends_on = None

UTC = idp.models_base.UTCDateTime(timezone=True)


def upgrade():
    op.create_table(
        'ldap_links',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('guid', sa.String(length=64), nullable=False),
        sa.Column('dn', sa.Text(), nullable=False),
        sa.Column('employee_number', sa.String(length=64), nullable=True),
        sa.Column('directory_role', sa.String(length=32), nullable=True),
        sa.Column('directory_npi', sa.String(length=10), nullable=True),
        sa.Column('directory_disabled', sa.Boolean(), nullable=False),
        sa.Column('created_at', UTC, nullable=False),
        sa.Column('synced_at', UTC, nullable=True),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('guid'),
        sa.UniqueConstraint('user_id'),
    )


def downgrade():
    op.drop_table('ldap_links')
