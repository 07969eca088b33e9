"""provider onboarding: facilities, departments, applications, application links; license
fields on users

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25 06:00:00

"""
import sqlalchemy as sa
from alembic import op

from idp.models_base import UTCDateTime

# revision identifiers, used by Alembic.
revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'facilities',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('active', sa.Boolean(), nullable=False),
        sa.Column('created_at', UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name'),
    )
    op.create_table(
        'departments',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('facility_id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(['facility_id'], ['facilities.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('facility_id', 'name'),
    )
    op.create_index('ix_departments_facility_id', 'departments', ['facility_id'])
    op.create_table(
        'applications',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('given_name', sa.String(length=100), nullable=False),
        sa.Column('family_name', sa.String(length=100), nullable=False),
        sa.Column('email', sa.String(length=254), nullable=False),
        sa.Column('phone', sa.String(length=32), nullable=False),
        sa.Column('role', sa.String(length=32), nullable=False),
        sa.Column('npi', sa.String(length=10), nullable=False),
        sa.Column('license_state', sa.String(length=2), nullable=True),
        sa.Column('license_number', sa.String(length=32), nullable=True),
        sa.Column('license_expires', sa.Date(), nullable=True),
        sa.Column('facility_id', sa.Integer(), nullable=False),
        sa.Column('department_id', sa.Integer(), nullable=True),
        sa.Column('created_at', UTCDateTime(), nullable=False),
        sa.Column('submitted_at', UTCDateTime(), nullable=True),
        sa.Column('registry_result', sa.JSON(), nullable=True),
        sa.Column('info_request', sa.Text(), nullable=True),
        sa.Column('applicant_reply', sa.Text(), nullable=True),
        sa.Column('first_approval_by', sa.Integer(), nullable=True),
        sa.Column('first_approval', sa.JSON(), nullable=True),
        sa.Column('decided_at', UTCDateTime(), nullable=True),
        sa.Column('decided_by', sa.Integer(), nullable=True),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('user_id', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['department_id'], ['departments.id']),
        sa.ForeignKeyConstraint(['facility_id'], ['facilities.id']),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_applications_status', 'applications', ['status'])
    op.create_index('ix_applications_email', 'applications', ['email'])
    op.create_index('ix_applications_npi', 'applications', ['npi'])
    op.create_table(
        'application_links',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('application_id', sa.Integer(), nullable=False),
        sa.Column('purpose', sa.String(length=10), nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('expires_at', UTCDateTime(), nullable=False),
        sa.Column('used_at', UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(['application_id'], ['applications.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('token_hash'),
    )
    op.create_index('ix_application_links_application_id', 'application_links',
                    ['application_id'])
    with op.batch_alter_table('users') as batch_op:
        batch_op.add_column(sa.Column('license_number', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('license_expires', sa.Date(), nullable=True))
        batch_op.add_column(sa.Column('license_warned_at', UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('clinical_suspended', sa.Boolean(), server_default='0',
                                      nullable=False))


def downgrade():
    with op.batch_alter_table('users') as batch_op:
        batch_op.drop_column('clinical_suspended')
        batch_op.drop_column('license_warned_at')
        batch_op.drop_column('license_expires')
        batch_op.drop_column('license_number')
    op.drop_index('ix_application_links_application_id', table_name='application_links')
    op.drop_table('application_links')
    op.drop_index('ix_applications_npi', table_name='applications')
    op.drop_index('ix_applications_email', table_name='applications')
    op.drop_index('ix_applications_status', table_name='applications')
    op.drop_table('applications')
    op.drop_index('ix_departments_facility_id', table_name='departments')
    op.drop_table('departments')
    op.drop_table('facilities')
