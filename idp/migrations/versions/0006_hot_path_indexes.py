"""hot path indexes: every lookup column of the token tables has an index

oauth_refresh_tokens.sid    logout revokes the session's refresh tokens (revoke_session_tokens)
oauth_codes.sid             ending a session finds the clients to send logout tokens to
oauth_refresh_tokens.client_id, oauth_codes.client_id
                            disabling or deleting a client revokes its codes and tokens; the
                            nonce replay check at /authorize looks codes up by client

Revision ID: 0006
Revises: 0003
Create Date: 2026-11-25 04:00:00.000000

"""
from alembic import op

# revision identifiers, used by Alembic.
revision = '0006'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('oauth_refresh_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_oauth_refresh_tokens_sid'), ['sid'], unique=False)
        batch_op.create_index(batch_op.f('ix_oauth_refresh_tokens_client_id'), ['client_id'],
                              unique=False)
    with op.batch_alter_table('oauth_codes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_oauth_codes_client_id'), ['client_id'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_oauth_codes_sid'), ['sid'], unique=False)


def downgrade():
    with op.batch_alter_table('oauth_codes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_oauth_codes_sid'))
        batch_op.drop_index(batch_op.f('ix_oauth_codes_client_id'))
    with op.batch_alter_table('oauth_refresh_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_oauth_refresh_tokens_client_id'))
        batch_op.drop_index(batch_op.f('ix_oauth_refresh_tokens_sid'))
