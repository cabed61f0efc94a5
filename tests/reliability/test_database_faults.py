"""The database busy or gone for a while, under a running backend.

* busy (SQLite and PostgreSQL): another connection holds a write lock for a few seconds
  while pubsub events arrive and calls are made: writes wait (then are retried if the
  wait is too long), nothing is lost;
* gone (PostgreSQL, a private server stopped then started again): calls made meanwhile
  get a clear error at once instead of hanging, and once the server is back the backend
  works again without a restart, its cache equal to the service (the events received
  during the outage could not be stored: the nodes they concern are checked again).
"""

from __future__ import annotations

import sqlite3
import time
import uuid

import pytest
import pytest_twisted
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from twisted.internet import defer, reactor, task, threads

from libervia.backend.xmpp.profiles import ConnectionOptions
from libervia.cli.bridge_client import BridgeClient, BridgeError

pytest.importorskip("slixmpp")

from tests.pubsub_support import (  # noqa: E402 - only once slixmpp is known there
    BackendFactory,
    Publisher,
    Reader,
    new_node,
    until,
)
from tests.reliability.crash_support import DatabaseProbe, is_sqlite  # noqa: E402
from tests.storage_fixtures import start_throwaway_postgres  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

#: how long the database stays locked, or stopped
FAULT_DURATION = 4.0


class WriteLock:
    """Another connection holding a write lock on the whole database until released.

    SQLite: ``BEGIN EXCLUSIVE`` (in WAL mode, readers still read); PostgreSQL: every
    table locked in EXCLUSIVE mode (reads allowed, writes wait).  Blocking: call it
    from a thread.
    """

    def __init__(self, db_url: str) -> None:
        self.sqlite = is_sqlite(db_url)
        if self.sqlite:
            self.conn = sqlite3.connect(make_url(db_url).database, isolation_level=None,
                                        check_same_thread=False)
            self.conn.execute("BEGIN EXCLUSIVE")
            return
        self.engine = sa.create_engine(db_url, poolclass=sa.NullPool)
        self.conn = self.engine.connect()
        self.transaction = self.conn.begin()
        tables = self.conn.execute(sa.text(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars()
        self.conn.execute(sa.text(
            f"LOCK TABLE {', '.join(tables)} IN EXCLUSIVE MODE"))

    def release(self) -> None:
        if self.sqlite:
            self.conn.execute("ROLLBACK")
            self.conn.close()
            return
        self.transaction.rollback()
        self.conn.close()
        self.engine.dispose()


@pytest.fixture
def make_backend(tmp_path, db_url):
    factory = BackendFactory(tmp_path / "local", db_url)
    yield factory
    pytest_twisted.blockon(factory.close())


async def synced_reader(backend, info, count: int = 20) -> tuple[Reader, Publisher]:
    node = new_node()
    publisher = Publisher(info)
    await publisher.create(node, [f"post{n:02}" for n in range(count)])
    reader = await Reader.connect(backend, info, node)
    await reader.get()
    await reader.wait_synchronised()
    return reader, publisher


async def served_from_cache(reader: Reader) -> bool:
    return (await reader.get()).cached


@pytest_twisted.ensureDeferred
async def test_database_locked_by_another_writer_delays_writes_and_loses_nothing(
        ejabberd_server, make_backend, db_url):
    info = ejabberd_server
    backend = await make_backend()
    reader, publisher = await synced_reader(backend, info)
    before = await reader.cached()

    lock = await threads.deferToThread(WriteLock, db_url)
    try:
        locked_at = time.monotonic()
        # events arrive, and a call writing is made, while the database is locked
        await publisher.publish(reader.node, [("new1", None), ("post03", "Edited")])
        await publisher.retract(reader.node, ["post00"])
        user = info.user(1)
        creating = defer.ensureDeferred(backend.profiles.create(
            "latecomer", user.jid, user.password, ConnectionOptions()))
        # reads go on meanwhile; the writes wait for the lock
        assert await reader.cached() == before
        assert (await reader.get(max_items=3)).cached is True
        assert not creating.called
        await task.deferLater(
            reactor,
            max(0.0, FAULT_DURATION - (time.monotonic() - locked_at)), lambda: None)
        assert not creating.called
    finally:
        await threads.deferToThread(lock.release)
    await creating
    assert "latecomer" in await backend.profiles.names()
    await until(reader.mirrors_service, "the events written once the lock is released")
    names = [name for name, __ in await reader.cached()]
    assert "new1" in names and "post00" not in names
    assert (await reader.get()).cached is True
    stats = backend.storage.timings["cache_pubsub_items"]
    assert stats.max >= 1.0, "the events' writes did not wait for the lock"
    probe = DatabaseProbe(db_url)
    try:
        probe.assert_consistent()
    finally:
        probe.close()


@pytest.fixture
def private_postgresql():
    """A PostgreSQL server of the test's own: it is stopped and started again."""
    server = start_throwaway_postgres()
    name = f"libervia_outage_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server.url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    yield server, server.url.set(database=name).render_as_string(hide_password=False)
    server.stop()


def call(socket, method: str, **params):
    """A bridge call as a frontend makes it; ``(seconds taken, result or BridgeError)``."""
    started = time.monotonic()
    try:
        with BridgeClient(str(socket), timeout=60) as bridge:
            result = bridge.call(method, **params)
    except BridgeError as e:
        result = e
    return time.monotonic() - started, result


@pytest_twisted.ensureDeferred
async def test_postgresql_outage_gives_clear_errors_then_recovers_without_restart(
        ejabberd_server, private_postgresql, tmp_path):
    info = ejabberd_server
    server, url = private_postgresql
    factory = BackendFactory(tmp_path / "local", url)
    try:
        backend = await factory()
        reader, publisher = await synced_reader(backend, info)
        socket = factory.config.get("bridge", "socket")
        node_params = {"profile": reader.name, "service": info.pubsub_service,
                       "node": reader.node}

        await threads.deferToThread(server.halt)
        try:
            stopped_at = time.monotonic()
            # events the backend can't store
            await publisher.publish(reader.node, [("during_outage", None)])
            await publisher.retract(reader.node, ["post01"])
            answers = {}
            for method, params in (("profile_list", {}),
                                   ("cache_node_state", node_params),
                                   ("pubsub_get", {**node_params, "max_items": 3})):
                answers[method] = await threads.deferToThread(call, socket, method,
                                                              **params)
            await task.deferLater(
                reactor,
                max(0.0, FAULT_DURATION - (time.monotonic() - stopped_at)), lambda: None)
        finally:
            await threads.deferToThread(server.resume)
        for method, (seconds, __) in answers.items():
            assert seconds < 15, (method, seconds)
        for method in ("profile_list", "cache_node_state"):
            error = answers[method][1]
            assert isinstance(error, BridgeError), (method, error)
            assert error.type != "InternalError" and "database" in error.message, (
                method, error.type, error.message)
        # the cache can't answer: the service does
        __, got = answers["pubsub_get"]
        assert not isinstance(got, BridgeError), got.message
        assert got["metadata"]["cached"] is False
        assert [i for i in got["items"] if "during_outage" in i]

        # back without a restart
        __, profiles = await threads.deferToThread(call, socket, "profile_list")
        assert [p["name"] for p in profiles] == [reader.name]
        await until(reader.mirrors_service, "the cache catching up with the outage")
        await until(lambda: served_from_cache(reader), "the node served again")
        names = [name for name, __ in await reader.cached()]
        assert "during_outage" in names and "post01" not in names
    finally:
        await factory.close()
