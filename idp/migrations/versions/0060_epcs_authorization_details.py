"""EPCS ceremonies carry the prescriptions signed (authorization_details), their hash and the
grant family of the tokens issued

Revision ID: 0060
Revises: 0052
Create Date: 2026-12-06 12:00:00.000000

"""
import sqlalchemy as sa
from alembic import op

revision = '0060'
down_revision = '0052'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('epcs_ceremonies') as batch:
        batch.add_column(sa.Column('authorization_details', sa.JSON(), nullable=True))
        batch.add_column(sa.Column('details_sha256', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('family_id', sa.String(length=64), nullable=True))
        batch.create_index('ix_epcs_ceremonies_family_id', ['family_id'])


def downgrade():
    with op.batch_alter_table('epcs_ceremonies') as batch:
        batch.drop_index('ix_epcs_ceremonies_family_id')
        batch.drop_column('family_id')
        batch.drop_column('details_sha256')
        batch.drop_column('authorization_details')
