"""The audit trail as one hash chain per writer (issue 26): audit_events.chain and chain_seq
(the event's place in its writer's chain; the legacy single chain is chain 1, where chain_seq
equals seq), audit_events.anchors (the other chains' heads this event binds, covered by its
hash), audit_head.updated_at (one head row per chain), audit_stream_cursors.positions (how far
each sink has received each chain). On PostgreSQL, seq now comes from a sequence: a locator,
unique and increasing with insertion, no longer taken under the one head row's lock.

Revision ID: 0107
Revises: 0105
Create Date: 2026-12-06 21:00:00.000000

"""
import sqlalchemy as sa
from alembic import op

revision = '0107'
down_revision = '0105'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('audit_events') as batch:
        batch.add_column(sa.Column('chain', sa.Integer(), nullable=False, server_default='1'))
        batch.add_column(sa.Column('chain_seq', sa.Integer(), nullable=False,
                                   server_default='0'))
        batch.add_column(sa.Column('anchors', sa.JSON(), nullable=True))
    op.execute("UPDATE audit_events SET chain_seq = seq")
    op.create_index('ix_audit_events_chain_position', 'audit_events', ['chain', 'chain_seq'],
                    unique=True)
    with op.batch_alter_table('audit_head') as batch:
        batch.add_column(sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('audit_stream_cursors') as batch:
        batch.add_column(sa.Column('positions', sa.JSON(), nullable=True))
    op.execute("UPDATE audit_stream_cursors SET positions = "
               + ("json_object('1', last_seq)" if op.get_bind().dialect.name == "sqlite"
                  else "json_build_object('1', last_seq)"))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE SEQUENCE audit_events_seq_seq OWNED BY audit_events.seq")
        op.execute("SELECT setval('audit_events_seq_seq', "
                   "COALESCE((SELECT max(seq) FROM audit_events), 0) + 1, false)")
        op.execute("ALTER TABLE audit_events ALTER COLUMN seq "
                   "SET DEFAULT nextval('audit_events_seq_seq')")


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE audit_events ALTER COLUMN seq DROP DEFAULT")
        op.execute("DROP SEQUENCE audit_events_seq_seq")
    with op.batch_alter_table('audit_stream_cursors') as batch:
        batch.drop_column('positions')
    with op.batch_alter_table('audit_head') as batch:
        batch.drop_column('updated_at')
    op.drop_index('ix_audit_events_chain_position', 'audit_events')
    with op.batch_alter_table('audit_events') as batch:
        batch.drop_column('anchors')
        batch.drop_column('chain_seq')
        batch.drop_column('chain')
