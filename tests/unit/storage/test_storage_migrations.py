"""Schema creation and migrations at start-up, on SQLite and on PostgreSQL."""

import contextlib
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import make_url

from libervia.backend.core.config import Config
from libervia.backend.core.exceptions import StartupError
from libervia.backend.memory import schema
from libervia.backend.memory.service import StorageService
from libervia.backend.memory.sqla_mapping import Base, SyncState
from libervia.backend.memory.storage import HistoryFilter, HistoryMessage, RosterEntry
from tests.support import venv_script
from tests.unit.storage.migration_helpers import (
    NODES,
    T0,
    column_names,
    connect,
    count_items,
    current_revision,
    insert_first_revision_data,
    item_xml,
    migrate,
    revisions,
    table_names,
)

FIRST = revisions()[0]
HEAD = schema.head_revision()


def make_service(url, **kwargs):
    return StorageService(Config.from_dict({}), url=url, **kwargs)


def db_path(url) -> Path:
    return Path(make_url(url).database)


def is_sqlite(url) -> bool:
    return url.startswith("sqlite")


def drift(url) -> list:
    sa_engine = connect(url)
    try:
        with sa_engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={
                "compare_type": True, "include_name": schema.include_name})
            return compare_metadata(context, Base.metadata)
    finally:
        sa_engine.dispose()


def assert_fulltext_objects(url):
    """The full-text search objects, invisible to the drift check, do exist."""
    sa_engine = connect(url)
    try:
        with sa_engine.connect() as conn:
            inspector = sa.inspect(conn)
            if is_sqlite(url):
                assert {"pubsub_items_fts", "history_bodies_fts"} <= set(
                    inspector.get_table_names())
                triggers = conn.exec_driver_sql(
                    "SELECT name FROM sqlite_master WHERE type = 'trigger'").scalars()
                assert set(triggers) == {
                    f"{table}_fts_{suffix}" for table in ("pubsub_items", "history_bodies")
                    for suffix in ("ai", "ad", "au")}
            else:
                for table in ("pubsub_items", "history_bodies"):
                    indexes = {i["name"] for i in inspector.get_indexes(table)}
                    assert f"ix_{table}_fts" in indexes
    finally:
        sa_engine.dispose()


def test_there_are_several_revisions_in_one_line():
    # an old database can only be tested if there is an old revision
    assert len(revisions()) >= 2
    assert revisions()[-1] == HEAD


@pytest_twisted.ensureDeferred
async def test_fresh_database_is_created_at_head(db_url):
    service = make_service(db_url)
    await service.startService()
    try:
        assert service.migration == schema.MigrationReport("created", None, HEAD)
        await service.storage.profiles.create_profile("alice")
    finally:
        await service.stopService()
    assert current_revision(db_url) == HEAD
    assert set(Base.metadata.tables) <= table_names(db_url)
    assert drift(db_url) == []
    assert_fulltext_objects(db_url)


def version_table(url):
    sa_engine = connect(url)
    try:
        with sa_engine.connect() as conn:
            inspector = sa.inspect(conn)
            columns = [(c["name"], str(c["type"]), c["nullable"])
                       for c in inspector.get_columns("alembic_version")]
            return columns, inspector.get_pk_constraint("alembic_version")
    finally:
        sa_engine.dispose()


def test_the_version_table_of_a_fresh_database_is_the_one_alembic_creates(db_url):
    migrate(db_url, "head")
    made_by_alembic = version_table(db_url)
    sa_engine = connect(db_url)
    with sa_engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE alembic_version"))
        schema.VERSION_TABLE.create(conn)
    sa_engine.dispose()
    assert version_table(db_url) == made_by_alembic


def test_creating_a_database_or_opening_one_at_head_loads_no_more_than_needed(db_url):
    code = f"""
import sys
from libervia.backend.memory import schema
from libervia.backend.memory.engines import create_database_engine
engine = create_database_engine({db_url!r})
engine.prepare()
sa_engine = engine.create_sa_engine(pool_size=1)
for __ in range(2):
    with engine.migration_connection(sa_engine) as conn:
        print(schema.thd_migrate(conn, engine).action)
print(sorted(name for name in sys.modules if name.startswith("alembic")))
print("sqlalchemy.dialects.postgresql" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out.split("\n")[:3] == ["created", "none", "[]"]
    # nor, on SQLite, PostgreSQL's dialect
    assert out.split("\n")[3] == str(not is_sqlite(db_url))
    assert current_revision(db_url) == HEAD


def scripts_with(tmp_path, name, text):
    scripts = tmp_path / "migration"
    shutil.copytree(schema.SCRIPT_LOCATION, scripts,
                    ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / name).write_text(text)
    return scripts


def test_a_revision_file_declared_otherwise_is_read_by_alembic(tmp_path):
    scripts = scripts_with(tmp_path, "computed.py", (
        f'revision = "c0ffee" + "000001"\ndown_revision = "{HEAD}"\n'
        "def upgrade():\n    pass\n\ndef downgrade():\n    pass\n"))
    assert schema.head_revision(scripts) == "c0ffee000001"


def test_two_heads_are_refused_with_what_to_do(tmp_path):
    scripts = scripts_with(tmp_path, "branch.py", (
        f'revision: str = "b4a9c8000001"\ndown_revision: str | None = "{FIRST}"\n'
        "def upgrade():\n    pass\n\ndef downgrade():\n    pass\n"))
    with pytest.raises(StartupError, match="2 heads.*merge heads"):
        schema.head_revision(scripts)


@pytest_twisted.ensureDeferred
async def test_database_at_head_is_left_alone(db_url):
    for expected in ("created", "none"):
        service = make_service(db_url)
        await service.startService()
        await service.stopService()
        assert service.migration.action == expected
    if is_sqlite(db_url):
        assert schema.list_backups(db_path(db_url)) == []


def test_migrations_and_mapping_do_not_drift(db_url):
    migrate(db_url, "head")
    assert current_revision(db_url) == HEAD
    assert drift(db_url) == []
    assert_fulltext_objects(db_url)


@pytest_twisted.ensureDeferred
async def test_old_database_is_backed_up_and_upgraded_with_its_data(db_url):
    migrate(db_url, FIRST)
    insert_first_revision_data(db_url)
    service = make_service(db_url)
    await service.startService()
    storage = service.storage
    try:
        report = service.migration
        assert (report.action, report.from_revision, report.to_revision) == (
            "upgraded", FIRST, HEAD)
        assert await storage.profiles.get_profiles() == {"alice": 1}
        assert await storage.profiles.get_param("General", "nick", "alice") == "Al"
        assert await storage.profiles.get_privates("keys", binary=True) == {"k": b"\x00\xffsecret"}
        nodes = await storage.pubsub.get_pubsub_nodes("alice")
        assert [(n.name, n.extra) for n in nodes] == [
            ("blog", {"from": "rev1"}), ("events", {"from": "rev1"})]
        # the second revision credits synchronised nodes with the items they hold
        assert nodes[0].sync_state is SyncState.COMPLETED
        assert (nodes[0].sync_items_done, nodes[0].sync_items_expected) == (3, 3)
        assert (nodes[1].sync_items_done, nodes[1].sync_items_expected) == (0, None)
        for node, (__, name, __, count) in zip(nodes, NODES):
            items, page = await storage.pubsub.get_items(node.id, details=True)
            assert page.count == count
            assert [i.parsed for i in items] == [{"i": i} for i in range(count)]
            assert items[0].data == item_xml(name, 0)
        # items cached before the full-text search revision were indexed by it
        found = await storage.search.search_items({"fts": "events number1"})
        assert [hit.item_id for hit in found.items] == ["events-1"]
    finally:
        await service.stopService()
    assert drift(db_url) == []
    if is_sqlite(db_url):
        backup = report.backup
        assert backup == schema.list_backups(db_path(db_url))[0]
        assert backup.name.startswith(f"libervia.db.bak-{FIRST}-")
        assert stat.S_IMODE(backup.stat().st_mode) == 0o600
        with sqlite3.connect(backup) as old:
            assert old.execute("SELECT version_num FROM alembic_version").fetchone() == (
                FIRST,)
            assert old.execute("SELECT count(*) FROM pubsub_items").fetchone() == (5,)
        old.close()
    else:
        assert report.backup is None


def test_upgrade_downgrade_upgrade_round_trip_keeps_data(db_url):
    migrate(db_url, FIRST)
    insert_first_revision_data(db_url)
    migrate(db_url, "head")
    assert "sync_items_done" in column_names(db_url, "pubsub_nodes")
    migrate(db_url, FIRST, downgrade=True)
    assert current_revision(db_url) == FIRST
    assert "sync_items_done" not in column_names(db_url, "pubsub_nodes")
    # on SQLite the downgrade re-creates pubsub_nodes: its items must survive that
    assert count_items(db_url) == 5
    migrate(db_url, "head")
    assert current_revision(db_url) == HEAD
    assert count_items(db_url) == 5
    assert drift(db_url) == []
    migrate(db_url, "base", downgrade=True)
    assert table_names(db_url) <= {"alembic_version"}
    migrate(db_url, "head")
    assert drift(db_url) == []


@pytest_twisted.ensureDeferred
async def test_database_from_a_newer_backend_is_refused(db_url):
    service = make_service(db_url)
    await service.startService()
    await service.storage.profiles.create_profile("alice")
    await service.stopService()
    sa_engine = connect(db_url)
    with sa_engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'f00dfeedbeef'"))
    sa_engine.dispose()

    service = make_service(db_url)
    with pytest.raises(StartupError) as raised:
        await service.startService()
    message = str(raised.value)
    assert "f00dfeedbeef" in message and HEAD in message
    assert "newer version" in message and "downgrade" in message
    assert not service.storage.running
    assert current_revision(db_url) == "f00dfeedbeef"


@pytest_twisted.ensureDeferred
async def test_tables_without_revision_are_refused(db_url):
    sa_engine = connect(db_url)
    Base.metadata.create_all(sa_engine)
    sa_engine.dispose()
    service = make_service(db_url)
    with pytest.raises(StartupError, match="no schema revision"):
        await service.startService()


FAILING_REVISION = '''"""a revision failing half-way"""
import sqlalchemy as sa
from alembic import op

revision = "badbadbad000"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("profiles") as batch_op:
        batch_op.add_column(sa.Column("colour", sa.String(20), nullable=True))
    op.execute("UPDATE profiles SET colour = 'red'")
    op.execute("DELETE FROM pubsub_items")
    raise RuntimeError("this migration is broken")


def downgrade():
    with op.batch_alter_table("profiles") as batch_op:
        batch_op.drop_column("colour")
'''


@pytest_twisted.ensureDeferred
async def test_failed_migration_leaves_the_database_as_it_was(db_url, tmp_path):
    scripts = tmp_path / "migration"
    shutil.copytree(schema.SCRIPT_LOCATION, scripts,
                    ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "badbadbad000_failing.py").write_text(
        FAILING_REVISION.format(head=HEAD))
    migrate(db_url, FIRST)
    insert_first_revision_data(db_url)
    migrate(db_url, "head")

    service = make_service(db_url, script_location=scripts)
    with pytest.raises(StartupError) as raised:
        await service.startService()
    message = str(raised.value)
    assert "this migration is broken" in message
    assert f"left at revision {HEAD}" in message
    assert current_revision(db_url) == HEAD
    assert "colour" not in column_names(db_url, "profiles")
    assert count_items(db_url) == 5
    assert not service.storage.running
    if is_sqlite(db_url):
        assert len(schema.list_backups(db_path(db_url))) == 1


def test_only_the_most_recent_backups_are_kept(tmp_path):
    db = tmp_path / "libervia.db"
    stamps = ["20240101T000000.000000Z", "20250101T000000.000000Z",
              "20230101T000000.000000Z", "20260101T000000.000000Z",
              "20240601T000000.000000Z"]
    for i, stamp in enumerate(stamps):
        (tmp_path / f"libervia.db.bak-rev{i}-{stamp}").touch()
    (tmp_path / "other.db.bak-rev9-20200101T000000.000000Z").touch()
    removed = schema.prune_backups(db, keep=3)
    assert sorted(p.name for p in removed) == [
        "libervia.db.bak-rev0-20240101T000000.000000Z",
        "libervia.db.bak-rev2-20230101T000000.000000Z",
    ]
    assert [p.name.split("-")[1] for p in schema.list_backups(db)] == [
        "rev4", "rev1", "rev3"]
    assert (tmp_path / "other.db.bak-rev9-20200101T000000.000000Z").exists()


@pytest_twisted.ensureDeferred
async def test_backups_beyond_the_limit_are_deleted_at_migration(sqlite_url):
    db = db_path(sqlite_url)
    migrate(sqlite_url, FIRST)
    old = [db.with_name(f"libervia.db.bak-{FIRST}-2020010{i}T000000.000000Z")
           for i in range(1, 4)]
    for path in old:
        path.touch()
    service = make_service(sqlite_url, keep_backups=2)
    await service.startService()
    await service.stopService()
    assert schema.list_backups(db) == [old[-1], service.migration.backup]


def test_alembic_command_line_works_from_the_migration_folder(tmp_path):
    local_dir = tmp_path / "local"
    config = tmp_path / "libervia.conf"
    config.write_text(f"[DEFAULT]\nlocal_dir = {local_dir}\n")
    env = dict(os.environ, LIBERVIA_CONFIG=str(config),
               XDG_CONFIG_HOME=str(tmp_path / "xdg-config"))
    url = f"sqlite:///{local_dir / 'libervia.db'}"

    def alembic(*args):
        return subprocess.run(
            [venv_script("alembic"), *args], cwd=schema.SCRIPT_LOCATION, env=env,
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout

    alembic("upgrade", "head")
    assert current_revision(url) == HEAD
    alembic("downgrade", FIRST)
    assert current_revision(url) == FIRST
    assert FIRST in alembic("current")
    history = alembic("history")
    assert FIRST in history and HEAD in history


@pytest_twisted.ensureDeferred
async def test_stop_during_start_leaves_nothing_running(sqlite_url):
    from twisted.internet import defer

    service = make_service(sqlite_url)
    starting = service.startService()
    starting.cancel()
    with pytest.raises(defer.CancelledError):
        await starting
    assert not service.storage.running
    # the database is usable by the next start
    service = make_service(sqlite_url)
    await service.startService()
    await service.stopService()
    assert service.migration.to_revision == HEAD


#: the revision adding the roster tables
ROSTER_REVISION = "2e9db1ca756b"


@contextlib.asynccontextmanager
async def upgraded_across(db_url, revision):
    """A database with data at the revision before ``revision``, upgraded by a
    starting backend: yield its storage; then check that the data stayed."""
    before = revisions()[revisions().index(revision) - 1]
    migrate(db_url, before)
    insert_first_revision_data(db_url)
    service = make_service(db_url)
    await service.startService()
    try:
        assert service.migration.from_revision == before
        yield service.storage
        assert [n.name for n in await service.storage.pubsub.get_pubsub_nodes(
            "alice")] == ["blog", "events"]
    finally:
        await service.stopService()
    assert count_items(db_url) == 5
    assert drift(db_url) == []
    assert_fulltext_objects(db_url)


def assert_tables_gone_below(db_url, revision, tables):
    """Going below ``revision`` drops ``tables`` and keeps the rest."""
    before = revisions()[revisions().index(revision) - 1]
    migrate(db_url, before, downgrade=True)
    assert not set(tables) & table_names(db_url)
    assert count_items(db_url) == 5
    migrate(db_url, "head")
    assert drift(db_url) == []


@pytest_twisted.ensureDeferred
async def test_the_roster_revision_upgrades_a_database_with_data(db_url):
    async with upgraded_across(db_url, ROSTER_REVISION) as storage:
        roster = await storage.roster.get_roster("alice")
        assert (roster.version, roster.items, roster.known) == (None, [], False)
        await storage.roster.replace_roster("alice", "v1", [
            RosterEntry("bob@example.org", "Bob", "both", False, ("Friends",))])
        await storage.roster.add_pending("alice", "carol@example.org", "hi", 10)
    assert_tables_gone_below(db_url, ROSTER_REVISION, (
        "roster_items", "roster_versions", "subscription_requests"))

#: the revision adding the message history
HISTORY_REVISION = "144403c06c53"


@pytest_twisted.ensureDeferred
async def test_the_history_revision_upgrades_a_database_with_data(db_url):
    async with upgraded_across(db_url, HISTORY_REVISION) as storage:
        assert (await storage.history.get_history("alice", HistoryFilter())).messages == []
        message = HistoryMessage(
            "3f1e0c36-1b4e-4a57-9a43-0a0d3c1f2b11", "bob@example.org", "phone",
            "alice@example.org", None, "bob@example.org", T0, T0, "chat", "in",
            {"": "a searched word"}, stanza_id="s1", origin_id="o1")
        assert (await storage.history.add("alice", message)).stored is True
        assert (await storage.history.add("alice", message)).stored is False
        found = await storage.history.get_history("alice", HistoryFilter(
            words=("searched",)))
        assert found.messages == [message]
    assert_tables_gone_below(db_url, HISTORY_REVISION, (
        "history", "history_bodies", "history_subjects", "history_bodies_fts"))
