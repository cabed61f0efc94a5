"""Engines, threads, retries, permissions and concurrency of the storage."""

import sqlite3
import stat
import threading

import psycopg
import pytest
import pytest_twisted
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError
from twisted.internet import defer

from libervia.backend.app.main import Backend
from libervia.backend.core.config import Config
from libervia.backend.core.exceptions import ConfigError, StartupError
from libervia.backend.memory.engines import (
    PostgresEngine,
    SqliteEngine,
    create_database_engine,
    database_url,
)
from libervia.backend.memory.storage import Storage, StorageRunner, StorageUnavailable

SERVICE = "pubsub.example.org"


def locked():
    return OperationalError("UPDATE x", {}, sqlite3.OperationalError("database is locked"))


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


# engines


def test_default_database_is_the_sqlite_file_in_the_local_folder(tmp_path):
    config = Config.from_dict({"DEFAULT": {"local_dir": str(tmp_path)}})
    url = database_url(config)
    assert url.get_backend_name() == "sqlite"
    assert url.database == str(tmp_path / "libervia.db")
    assert isinstance(create_database_engine(url), SqliteEngine)


def test_configured_url_selects_postgresql():
    config = Config.from_dict(
        {"storage": {"url": "postgresql+psycopg://me@db.example/libervia"}})
    engine = create_database_engine(database_url(config))
    assert isinstance(engine, PostgresEngine)
    assert engine.url.database == "libervia"


@pytest.mark.parametrize("url, message", [
    ("mysql://me@host/db", "unsupported database 'mysql'"),
    ("sqlite://", "must be a file"),
    ("sqlite:///:memory:", "must be a file"),
])
def test_unusable_urls_are_refused_with_a_hint(url, message):
    with pytest.raises(ConfigError, match=message):
        create_database_engine(url)


@pytest.mark.parametrize("error, transient", [
    (sqlite3.OperationalError("database is locked"), True),
    (sqlite3.OperationalError("database table is locked"), True),
    (sqlite3.OperationalError("no such table: x"), False),
    (sqlite3.IntegrityError("UNIQUE constraint failed"), False),
])
def test_sqlite_busy_and_locked_errors_are_transient(error, transient):
    engine = SqliteEngine(make_url("sqlite:////tmp/x.db"))
    wrapped = OperationalError("SELECT 1", {}, error)
    assert engine.is_transient(wrapped) is transient


@pytest.mark.parametrize("error, transient", [
    (psycopg.errors.SerializationFailure("could not serialize access"), True),
    (psycopg.errors.DeadlockDetected("deadlock detected"), True),
    (psycopg.errors.UniqueViolation("duplicate key"), False),
    (psycopg.errors.UndefinedTable("no such table"), False),
])
def test_postgresql_serialization_and_deadlock_errors_are_transient(error, transient):
    engine = PostgresEngine(make_url("postgresql+psycopg://me@/db"))
    assert engine.is_transient(OperationalError("SELECT 1", {}, error)) is transient


@pytest.mark.parametrize("error, unavailable", [
    (psycopg.OperationalError("connection failed: Connection refused"), True),
    (psycopg.errors.AdminShutdown("terminating connection"), True),
    (psycopg.errors.SerializationFailure("could not serialize access"), False),
    (psycopg.errors.LockNotAvailable("could not obtain lock"), False),
])
def test_postgresql_server_gone_is_told_apart_from_refused_statements(error, unavailable):
    engine = PostgresEngine(make_url("postgresql+psycopg://me@/db"))
    assert engine.is_unavailable(OperationalError("SELECT 1", {}, error)) is unavailable


# threads and retries


@pytest_twisted.async_yield_fixture
async def sqlite_storage(make_storage, sqlite_url):
    """SQLite storage whose back-off delays are recorded instead of slept."""
    delays = []
    storage = await make_storage(sqlite_url, sleep=delays.append, max_attempts=4)
    storage.delays = delays
    yield storage


@pytest_twisted.ensureDeferred
async def test_calls_run_on_the_storage_own_threads(sqlite_storage):
    def thd_where(session):
        return threading.current_thread().name

    name = await sqlite_storage.runner.run_in_session("where", thd_where)
    assert name != threading.main_thread().name
    # the storage's ThreadPool, not the reactor's
    assert "storage" in name


@pytest_twisted.ensureDeferred
async def test_transient_errors_are_retried_with_a_growing_backoff(sqlite_storage):
    attempts = []

    def thd_flaky(session):
        attempts.append(threading.current_thread().name)
        if len(attempts) < 3:
            raise locked()
        return "done"

    assert await sqlite_storage.runner.run_in_session("flaky", thd_flaky) == "done"
    assert len(attempts) == 3
    delays = sqlite_storage.delays
    assert len(delays) == 2
    base = StorageRunner.retry_delay
    assert base * 0.5 <= delays[0] <= base * 1.5
    assert base <= delays[1] <= base * 3
    assert sqlite_storage.timings["flaky"].retries == 2


@pytest_twisted.ensureDeferred
async def test_retries_are_bounded(sqlite_storage):
    attempts = []

    def thd_always_locked(session):
        attempts.append(1)
        raise locked()

    with pytest.raises(OperationalError, match="database is locked"):
        await sqlite_storage.runner.run_in_session("always_locked", thd_always_locked)
    assert len(attempts) == sqlite_storage.runner.max_attempts == 4
    assert len(sqlite_storage.delays) == 3


@pytest_twisted.ensureDeferred
async def test_other_errors_are_not_retried(sqlite_storage):
    attempts = []

    def thd_conflict(session):
        attempts.append(1)
        raise IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE"))

    with pytest.raises(IntegrityError):
        await sqlite_storage.runner.run_in_session("conflict", thd_conflict)
    assert attempts == [1] and sqlite_storage.delays == []


@pytest_twisted.ensureDeferred
async def test_a_failed_attempt_is_rolled_back_before_the_next(sqlite_storage):
    await sqlite_storage.profiles.create_profile("alice")
    attempts = []

    def thd_write_then_fail(session):
        attempts.append(1)
        from libervia.backend.memory.storage.profiles import thd_set_param

        thd_set_param(session, sqlite_storage.db_engine, "C", f"k{len(attempts)}", "v",
                      None)
        if len(attempts) == 1:
            raise locked()

    await sqlite_storage.runner.run_in_session("write_then_fail", thd_write_then_fail)
    assert await sqlite_storage.profiles.get_params() == {("C", "k2"): "v"}


@pytest_twisted.ensureDeferred
async def test_stop_waits_for_the_calls_in_flight(sqlite_storage):
    release = threading.Event()

    def thd_blocked(session):
        release.wait(30)
        return "finished"

    call = sqlite_storage.runner.run_in_session("blocked", thd_blocked, write=False)
    stopping = sqlite_storage.stop()
    assert not stopping.called
    with pytest.raises(Exception, match="not running"):
        await sqlite_storage.profiles.get_profiles()
    release.set()
    assert await call == "finished"
    await stopping
    assert not sqlite_storage.running


# permissions


@pytest_twisted.ensureDeferred
async def test_database_file_is_private(sqlite_storage, sqlite_url):
    await sqlite_storage.profiles.create_profile("alice")
    db = make_url(sqlite_url).database
    from pathlib import Path

    path = Path(db)
    assert mode(path.parent) == 0o700
    assert mode(path) == 0o600
    for suffix in ("-wal", "-shm"):
        sidecar = path.with_name(path.name + suffix)
        assert sidecar.exists() and mode(sidecar) == 0o600


@pytest_twisted.ensureDeferred
async def test_loose_permissions_of_an_existing_database_are_restricted(tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    db = folder / "libervia.db"
    sqlite3.connect(db).close()
    db.chmod(0o644)
    storage = Storage(f"sqlite:///{db}")
    await storage.start()
    await storage.stop()
    assert (mode(folder), mode(db)) == (0o700, 0o600)


@pytest_twisted.ensureDeferred
async def test_sqlite_connections_use_wal_foreign_keys_and_a_busy_timeout(sqlite_storage):
    def thd_pragmas(session):
        conn = session.connection()
        return tuple(
            conn.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
        )

    journal, foreign_keys, busy, synchronous = await sqlite_storage.runner.run_in_session(
        "pragmas", thd_pragmas, write=False)
    assert (journal, foreign_keys, synchronous) == ("wal", 1, 1)  # 1: NORMAL
    assert busy >= 1000


# the backend


@pytest_twisted.ensureDeferred
async def test_backend_opens_the_storage_before_loading_plugins(tmp_path):
    from twisted.internet import reactor

    config = Config.from_dict({"DEFAULT": {"local_dir": str(tmp_path / "local")}})
    backend = Backend(config, reactor=reactor, plugin_entry_points=[])
    backend.removeService(backend.getServiceNamed("bridge"))
    assert [s.name for s in backend][:2] == ["storage", "plugins"]
    await backend.startService()
    try:
        assert backend.storage.running
        assert await backend.storage.profiles.create_profile("alice") == 1
        assert mode(tmp_path / "local" / "libervia.db") == 0o600
    finally:
        await backend.stopService()
    assert not backend.storage.running


# concurrency


@pytest_twisted.ensureDeferred
async def test_hundreds_of_concurrent_calls_complete_without_lock_errors(
    make_storage, db_url
):
    """Every call succeeds at the first attempt: no retry is allowed here.

    SQLite must not say "database is locked" (write transactions wait for the lock
    instead), and PostgreSQL must not deadlock (rows are locked in a stable order).
    """
    storage = await make_storage(db_url, max_attempts=1)
    profiles = [f"user{i}" for i in range(4)]
    for name in profiles:
        await storage.profiles.create_profile(name)
    nodes = [await storage.pubsub.set_pubsub_node(p, SERVICE, f"n{j}")
             for p in profiles for j in range(2)]
    calls = []
    for i in range(400):
        node = nodes[i % len(nodes)]
        profile = profiles[i % len(profiles)]
        kind = i % 6
        if kind == 0:
            # overlapping ids, in different orders, on the same nodes
            ids = [(i * 7 + k) % 30 for k in range(12)]
            calls.append(storage.pubsub.cache_pubsub_items(
                node.id, [{"name": f"it{n}", "data": f"<x n='{n}' i='{i}'/>"}
                          for n in ids],
                batch_size=5, count_progress=True))
        elif kind == 1:
            calls.append(storage.pubsub.get_items(node.id, max_items=5, desc=True))
        elif kind == 2:
            calls.append(storage.profiles.set_param("C", f"k{i % 5}", str(i), profile=profile))
        elif kind == 3:
            calls.append(storage.profiles.set_private_value("ns", f"k{(i // 6) % 9}", {"i": i}))
        elif kind == 4:
            calls.append(storage.pubsub.set_pubsub_node(
                profile, SERVICE, f"n{i % 2}", extra={"i": i}))
        else:
            calls.append(storage.pubsub.delete_pubsub_items(node.id, [f"it{i % 30}"]))
    assert storage.runner._in_flight > 100  # really concurrent, not one after the other
    results = await defer.DeferredList(calls, consumeErrors=True)
    failures = [r.getErrorMessage() for ok, r in results if not ok]
    assert failures == []
    assert sum(s.retries for s in storage.timings.values()) == 0
    assert len(await storage.profiles.get_privates("ns")) == 9
    for node in nodes:
        items, page = await storage.pubsub.get_items(node.id)
        assert page.count == len(items) == len({i.name for i in items}) <= 30


@pytest_twisted.ensureDeferred
async def test_unusable_database_location_stops_the_start_with_a_hint(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    storage = Storage(f"sqlite:///{blocker / 'libervia.db'}")
    with pytest.raises(StartupError, match="local_dir") as raised:
        await storage.start()
    assert str(blocker) in str(raised.value)
    assert not storage.running


@pytest_twisted.ensureDeferred
async def test_damaged_database_file_stops_the_start_with_a_hint(tmp_path):
    db = tmp_path / "libervia.db"
    db.write_bytes(b"this is not a database, but it is long enough to be read" * 100)
    db.chmod(0o600)
    storage = Storage(f"sqlite:///{db}")
    with pytest.raises(StartupError, match="restore"):
        await storage.start()
    assert not storage.running


def thd_lose_connection_once(session, attempts):
    """Kill the call's own PostgreSQL connection on the first attempt."""
    from sqlalchemy import text

    attempts.append(1)
    if len(attempts) == 1:
        session.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
    return session.scalar(text("SELECT 42"))


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_read_losing_its_connection_is_retried_on_a_new_one(
    make_storage, postgresql_url
):
    storage = await make_storage(postgresql_url, sleep=lambda delay: None)
    attempts = []
    assert await storage.runner.run_in_session(
        "lost_read", thd_lose_connection_once, attempts, write=False) == 42
    assert len(attempts) == 2


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_write_losing_its_connection_is_not_retried(make_storage, postgresql_url):
    # it may have been committed: only the caller knows whether doing it again is safe
    storage = await make_storage(postgresql_url, sleep=lambda delay: None)
    attempts = []
    with pytest.raises(StorageUnavailable, match="database is unavailable") as raised:
        await storage.runner.run_in_session("lost_write", thd_lose_connection_once, attempts)
    assert isinstance(raised.value.__cause__, OperationalError)
    assert len(attempts) == 1
    assert await storage.profiles.get_profiles() == {}


@pytest_twisted.ensureDeferred
async def test_shared_sticky_folder_is_left_alone_but_the_file_is_private(tmp_path):
    # like /tmp: restricting it would lock every other user out
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    storage = Storage(f"sqlite:///{shared / 'libervia.db'}")
    await storage.start()
    await storage.stop()
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    assert mode(shared / "libervia.db") == 0o600
