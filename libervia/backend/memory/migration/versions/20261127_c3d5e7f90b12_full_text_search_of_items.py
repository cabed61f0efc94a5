"""full-text search of items

SQLite: an FTS5 table indexing the raw XML of the items (external content: the text is
not stored twice), kept in step by triggers, and filled with the items already cached.
PostgreSQL: a GIN index on the items' text search vector ('simple' configuration).

These statements are copies of those in sqla_mapping (SQLITE_FULLTEXT_DDL and
POSTGRESQL_FULLTEXT_DDL), which create the same objects in a new database: a revision
must not import the mapping, which keeps changing after it.

Revision ID: c3d5e7f90b12
Revises: 9a1f27c4d8e2
Create Date: 2026-11-27 08:50:00.000000

"""
from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = 'c3d5e7f90b12'
down_revision: str | Sequence[str] | None = '9a1f27c4d8e2'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQLITE_UPGRADE = (
    "CREATE VIRTUAL TABLE pubsub_items_fts USING fts5("
    "data, content='pubsub_items', content_rowid='id')",
    "CREATE TRIGGER pubsub_items_fts_ai AFTER INSERT ON pubsub_items BEGIN "
    "INSERT INTO pubsub_items_fts(rowid, data) VALUES (new.id, new.data); END",
    "CREATE TRIGGER pubsub_items_fts_ad AFTER DELETE ON pubsub_items BEGIN "
    "INSERT INTO pubsub_items_fts(pubsub_items_fts, rowid, data) "
    "VALUES ('delete', old.id, old.data); END",
    "CREATE TRIGGER pubsub_items_fts_au AFTER UPDATE OF data ON pubsub_items BEGIN "
    "INSERT INTO pubsub_items_fts(pubsub_items_fts, rowid, data) "
    "VALUES ('delete', old.id, old.data); "
    "INSERT INTO pubsub_items_fts(rowid, data) VALUES (new.id, new.data); END",
    # index the items cached before this revision
    "INSERT INTO pubsub_items_fts(pubsub_items_fts) VALUES ('rebuild')",
)
SQLITE_DOWNGRADE = (
    "DROP TRIGGER pubsub_items_fts_au",
    "DROP TRIGGER pubsub_items_fts_ad",
    "DROP TRIGGER pubsub_items_fts_ai",
    "DROP TABLE pubsub_items_fts",
)
POSTGRESQL_UPGRADE = (
    "CREATE INDEX ix_pubsub_items_fts ON pubsub_items "
    "USING gin (to_tsvector('simple', data))",
)
POSTGRESQL_DOWNGRADE = ("DROP INDEX ix_pubsub_items_fts",)


def _run(sqlite: Sequence[str], postgresql: Sequence[str]) -> None:
    dialect = op.get_bind().dialect.name
    statements = {"sqlite": sqlite, "postgresql": postgresql}.get(dialect)
    if statements is None:
        raise NotImplementedError(f"no full-text search for {dialect}")
    for statement in statements:
        op.execute(statement)


def upgrade() -> None:
    _run(SQLITE_UPGRADE, POSTGRESQL_UPGRADE)


def downgrade() -> None:
    _run(SQLITE_DOWNGRADE, POSTGRESQL_DOWNGRADE)
