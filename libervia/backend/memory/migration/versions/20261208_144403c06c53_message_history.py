"""message history

The messages of each profile (RFC 6121), with their bodies and subjects by language,
deduplicated by the database: a stanza-id (XEP-0359) once per profile, an origin-id
once per sender.  Full-text search of the bodies: on SQLite an FTS5 table (external
content) kept in step by triggers, on PostgreSQL a GIN index ('simple' configuration).
New tables only: existing data is left as it is.

The full-text statements are copies of those in sqla_mapping
(SQLITE_HISTORY_FULLTEXT_DDL and POSTGRESQL_HISTORY_FULLTEXT_DDL): a revision must not
import the mapping, which keeps changing after it.

Revision ID: 144403c06c53
Revises: 2e9db1ca756b
Create Date: 2026-12-08 01:20:00.000000

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = '144403c06c53'
down_revision: str | Sequence[str] | None = '2e9db1ca756b'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQLITE_UPGRADE = (
    "CREATE VIRTUAL TABLE history_bodies_fts USING fts5("
    "text, content='history_bodies', content_rowid='id')",
    "CREATE TRIGGER history_bodies_fts_ai AFTER INSERT ON history_bodies BEGIN "
    "INSERT INTO history_bodies_fts(rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER history_bodies_fts_ad AFTER DELETE ON history_bodies BEGIN "
    "INSERT INTO history_bodies_fts(history_bodies_fts, rowid, text) "
    "VALUES ('delete', old.id, old.text); END",
    "CREATE TRIGGER history_bodies_fts_au AFTER UPDATE OF text ON history_bodies "
    "BEGIN INSERT INTO history_bodies_fts(history_bodies_fts, rowid, text) "
    "VALUES ('delete', old.id, old.text); "
    "INSERT INTO history_bodies_fts(rowid, text) VALUES (new.id, new.text); END",
)
SQLITE_DOWNGRADE = (
    "DROP TRIGGER history_bodies_fts_au",
    "DROP TRIGGER history_bodies_fts_ad",
    "DROP TRIGGER history_bodies_fts_ai",
    "DROP TABLE history_bodies_fts",
)
POSTGRESQL_UPGRADE = (
    "CREATE INDEX ix_history_bodies_fts ON history_bodies "
    "USING gin (to_tsvector('simple', text))",
)
POSTGRESQL_DOWNGRADE = ("DROP INDEX ix_history_bodies_fts",)


def _run(sqlite: Sequence[str], postgresql: Sequence[str]) -> None:
    dialect = op.get_bind().dialect.name
    statements = {"sqlite": sqlite, "postgresql": postgresql}.get(dialect)
    if statements is None:
        raise NotImplementedError(f"no full-text search for {dialect}")
    for statement in statements:
        op.execute(statement)


def _texts(name: str) -> None:
    op.create_table(name,
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('history_id', sa.Integer(), nullable=False),
    sa.Column('lang', sa.String(length=64), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['history_id'], ['history.id'], name=op.f(f'fk_{name}_history_id_history'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f(f'pk_{name}')),
    sa.UniqueConstraint('history_id', 'lang', name=op.f(f'uq_{name}_history_id_lang'))
    )


def upgrade() -> None:
    op.create_table('history',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('uid', sa.String(length=36), nullable=False),
    sa.Column('profile_id', sa.Integer(), nullable=False),
    sa.Column('stanza_id', sa.String(length=255), nullable=True),
    sa.Column('origin_id', sa.String(length=255), nullable=True),
    sa.Column('message_id', sa.String(length=255), nullable=True),
    sa.Column('source', sa.String(length=3071), nullable=False),
    sa.Column('source_resource', sa.String(length=1023), nullable=True),
    sa.Column('dest', sa.String(length=3071), nullable=False),
    sa.Column('dest_resource', sa.String(length=1023), nullable=True),
    sa.Column('conversation', sa.String(length=3071), nullable=False),
    sa.Column('timestamp', sa.DateTime(timezone=True), nullable=False),
    sa.Column('received_timestamp', sa.DateTime(timezone=True), nullable=False),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('direction', sa.String(length=3), nullable=False),
    sa.Column('thread', sa.String(length=255), nullable=True),
    sa.Column('thread_parent', sa.String(length=255), nullable=True),
    sa.Column('extra', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.ForeignKeyConstraint(['profile_id'], ['profiles.id'], name=op.f('fk_history_profile_id_profiles'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_history')),
    sa.UniqueConstraint('profile_id', 'source', 'origin_id', name=op.f('uq_history_profile_id_source_origin_id')),
    sa.UniqueConstraint('profile_id', 'stanza_id', name=op.f('uq_history_profile_id_stanza_id')),
    sa.UniqueConstraint('uid', name=op.f('uq_history_uid'))
    )
    op.create_index('ix_history_profile_id_conversation', 'history', ['profile_id', 'conversation', 'timestamp', 'id'], unique=False)
    op.create_index('ix_history_profile_id_timestamp', 'history', ['profile_id', 'timestamp', 'id'], unique=False)
    _texts('history_bodies')
    _texts('history_subjects')
    _run(SQLITE_UPGRADE, POSTGRESQL_UPGRADE)


def downgrade() -> None:
    _run(SQLITE_DOWNGRADE, POSTGRESQL_DOWNGRADE)
    op.drop_table('history_subjects')
    op.drop_table('history_bodies')
    op.drop_index('ix_history_profile_id_timestamp', table_name='history')
    op.drop_index('ix_history_profile_id_conversation', table_name='history')
    op.drop_table('history')
