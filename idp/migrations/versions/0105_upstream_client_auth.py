"""Upstreams enrolled by a feature (UDAP Tiered OAuth) authenticate their token requests their
own way: upstreams.client_auth ("client_secret" for the operator's upstreams)

Revision ID: 0105
Revises: 0095
Create Date: 2026-12-06 18:00:00.000000

"""
import sqlalchemy as sa
from alembic import op

revision = '0105'
down_revision = '0100'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('upstreams') as batch:
        batch.add_column(sa.Column('client_auth', sa.String(length=20), nullable=False,
                                   server_default='client_secret'))


def downgrade():
    with op.batch_alter_table('upstreams') as batch:
        batch.drop_column('client_auth')
