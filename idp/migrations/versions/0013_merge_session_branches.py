"""merge the parallel branches of this session: onboarding (0008), mail outbox (0009), client
token lifetimes (0010), EPCS (0011), SMART launch (0012)

Revision ID: 0013
Revises: 0008, 0009, 0010, 0011, 0012
Create Date: 2026-11-25 06:50:00

"""

# revision identifiers, used by Alembic.
revision = '0013'
down_revision = ('0008', '0009', '0010', '0011', '0012')
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
