"""Helpers of the migration tests: drive Alembic directly, write data at a revision."""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from libervia.backend.memory import schema
from libervia.backend.memory.engines import create_database_engine
from libervia.backend.memory.sqla_mapping import JSONDocument, UTCDateTime

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def revisions() -> list[str]:
    """Revisions of the migration scripts, oldest first."""
    script = ScriptDirectory.from_config(schema.alembic_config())
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


def migrate(url: str, revision: str, downgrade: bool = False, script_location=None) -> None:
    """Upgrade (or downgrade) the database to ``revision``, as the backend does."""
    engine = create_database_engine(url)
    engine.prepare()
    sa_engine = engine.create_sa_engine(pool_size=1)
    try:
        with engine.migration_connection(sa_engine) as conn, conn.begin():
            cfg = schema.alembic_config(script_location, conn)
            (command.downgrade if downgrade else command.upgrade)(cfg, revision)
            engine.check_integrity(conn)
    finally:
        sa_engine.dispose()


def connect(url: str) -> sa.Engine:
    engine = create_database_engine(url)
    engine.prepare()
    return engine.create_sa_engine(pool_size=1)


def current_revision(url: str) -> str | None:
    sa_engine = connect(url)
    try:
        with sa_engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        sa_engine.dispose()


def table_names(url: str) -> set[str]:
    sa_engine = connect(url)
    try:
        with sa_engine.connect() as conn:
            return set(sa.inspect(conn).get_table_names())
    finally:
        sa_engine.dispose()


def column_names(url: str, table: str) -> set[str]:
    sa_engine = connect(url)
    try:
        with sa_engine.connect() as conn:
            return {c["name"] for c in sa.inspect(conn).get_columns(table)}
    finally:
        sa_engine.dispose()


# tables as the first revision knows them: the mapping may have moved on since
profiles = sa.table(
    "profiles", sa.column("id", sa.Integer), sa.column("name", sa.String),
    sa.column("created", UTCDateTime()),
)
param_ind = sa.table(
    "param_ind", sa.column("category", sa.String), sa.column("name", sa.String),
    sa.column("profile_id", sa.Integer), sa.column("value", sa.Text),
)
private_gen_bin = sa.table(
    "private_gen_bin", sa.column("namespace", sa.String), sa.column("key", sa.String),
    sa.column("value", sa.LargeBinary),
)
pubsub_nodes = sa.table(
    "pubsub_nodes", sa.column("id", sa.Integer), sa.column("profile_id", sa.Integer),
    sa.column("service", sa.String), sa.column("name", sa.String),
    sa.column("subscribed", sa.Boolean), sa.column("sync_state", sa.String),
    sa.column("extra", JSONDocument),
)
pubsub_items = sa.table(
    "pubsub_items", sa.column("node_id", sa.Integer), sa.column("name", sa.String),
    sa.column("data", sa.Text), sa.column("created", UTCDateTime()),
    sa.column("updated", UTCDateTime()), sa.column("parsed", JSONDocument),
)

#: (node id, node name, sync state, item count) written by insert_first_revision_data
NODES = [(1, "blog", "COMPLETED", 3), (2, "events", None, 2)]


def item_xml(node: str, i: int) -> str:
    return f"<item id='{node}-{i}'><p>{node} number{i}</p></item>"


def insert_first_revision_data(url: str) -> None:
    """Write a profile, a parameter, a binary value, two nodes and their items."""
    sa_engine = connect(url)
    try:
        with sa_engine.begin() as conn:
            conn.execute(profiles.insert().values(id=1, name="alice", created=T0))
            conn.execute(param_ind.insert().values(
                category="General", name="nick", profile_id=1, value="Al"))
            conn.execute(private_gen_bin.insert().values(
                namespace="keys", key="k", value=b"\x00\xffsecret"))
            for node_id, name, state, count in NODES:
                conn.execute(pubsub_nodes.insert().values(
                    id=node_id, profile_id=1, service="pubsub.example.org", name=name,
                    subscribed=state is not None, sync_state=state,
                    extra={"from": "rev1"}))
                conn.execute(pubsub_items.insert(), [
                    {"node_id": node_id, "name": f"{name}-{i}",
                     "data": item_xml(name, i), "created": T0, "updated": T0,
                     "parsed": {"i": i}}
                    for i in range(count)
                ])
    finally:
        sa_engine.dispose()


def count_items(url: str) -> int:
    sa_engine = connect(url)
    try:
        with sa_engine.connect() as conn:
            return conn.scalar(sa.select(sa.func.count()).select_from(pubsub_items))
    finally:
        sa_engine.dispose()
