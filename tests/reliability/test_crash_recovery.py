"""Crashes: the backend killed (SIGKILL) during a sync and during a migration, the XMPP
server stopped during a sync.  On SQLite and PostgreSQL.

After each, the database must be sound (SQLite ``PRAGMA integrity_check``, constraints,
no duplicate item), no node may be served half-synchronised, and the cache must end up
equal to the service.  The backend is killed from outside, as the kernel or a user
would, at a moment read from its database (not after a guessed delay).

Sizes are small enough for CI; ``LIBERVIA_RELIABILITY_FULL=1`` runs the full ones.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import tempfile
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, threads

from libervia.backend.memory import schema
from libervia.backend.xmpp.profiles import ConnectionOptions
from tests.unit.storage import migration_helpers

pytest.importorskip("slixmpp")

from tests.pubsub_support import (  # noqa: E402 - only once slixmpp is known there
    BackendFactory,
    Publisher,
    Reader,
    atom,
    new_node,
    until,
)
from tests.reliability.crash_support import (  # noqa: E402
    DatabaseProbe,
    kill,
    poll,
    poll_in_thread,
    sized,
    start_backend_process,
)

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

PROFILE = "crashed"
#: small pages, so that a sync takes long enough to be caught in the middle: about as
#: many pages (round trips) at the full sizes as in CI
PAGE_SIZE = sized(5, 25)
#: longest a sync may take (ejabberd pages slowly on a busy machine)
SYNC_TIMEOUT = 300


@pytest.fixture
def make_backend(tmp_path, db_url):
    """``make_backend()``: an in-process backend on the test's database."""
    factory = BackendFactory(tmp_path / "local", db_url,
                             {"plugin PUBSUB_CACHE": {"page_size": PAGE_SIZE}})
    yield factory
    pytest_twisted.blockon(factory.close())


@pytest.fixture
def probe(db_url):
    probe = DatabaseProbe(db_url)
    yield probe
    probe.close()


def fill(publisher: Publisher, node: str, ids: list[str]) -> defer.Deferred:
    """Create ``node`` holding ``ids``, publishing many at once (faster than in turn)."""
    async def body(xmpp, pubsub):
        for start in range(0, len(ids), 50):
            await asyncio.gather(*(
                pubsub.publish(publisher.service, node, id=item_id, payload=atom(item_id))
                for item_id in ids[start:start + 50]))

    return publisher.create(node, [], max_items=len(ids) + 100).addCallback(
        lambda __: publisher.run(body))


async def wait_completed(reader: Reader) -> None:
    async def completed() -> bool:
        return await reader.state() == "completed"

    await until(completed, f"node {reader.node} synchronised", timeout=SYNC_TIMEOUT)


async def add_autoconnect_profile(backend, info, node: str) -> None:
    """A profile connecting at start-up, with ``node`` analysed but never synchronised:
    the backend synchronises it as soon as the profile is connected."""
    user = info.user(0)
    await backend.profiles.create(PROFILE, user.jid, user.password, ConnectionOptions(
        host=info.address, port=info.c2s_port, ca_file=str(info.ca_file),
        autoconnect=True))
    await backend.storage.pubsub.set_pubsub_node(PROFILE, info.pubsub_service, node,
                                                 analyser="XEP-0277", type_="blog")


@pytest_twisted.ensureDeferred
async def test_backend_killed_during_a_sync_restarts_without_serving_a_half_node(
        ejabberd_server, make_backend, probe, tmp_path, db_url):
    info = ejabberd_server
    node = new_node()
    count = sized(600, 3000)
    ids = [f"post{n:05}" for n in range(count)]
    await fill(Publisher(info), node, ids)
    backend = await make_backend()
    await add_autoconnect_profile(backend, info, node)
    await backend.stopService()

    process = start_backend_process(
        tmp_path, make_backend.config.local_dir, db_url, make_backend.sockets / "p.sock",
        {"plugin PUBSUB_CACHE": {"page_size": PAGE_SIZE}})
    try:
        # ejabberd pages: the progress is written after each page
        def mid_sync():
            state = probe.node(node)
            return state if state and state[0] == "IN_PROGRESS" and state[1] > 0 else None

        state = await poll_in_thread(mid_sync, "the synchronisation to be under way")
    finally:
        kill(process)
    assert state[1] < count, "the sync ended before the kill: make the node larger"
    probe.assert_consistent()
    # the fetched items are written at once with the COMPLETED state: not yet.  (An
    # event may have stored an item or two: ejabberd sends the last one published to
    # a new subscriber; the node is not served before it is COMPLETED anyway)
    sync_state, done, stored = probe.node(node)
    assert sync_state == "IN_PROGRESS" and stored < count, process.output
    assert "synchronised (" not in process.output

    restarted = await make_backend()
    reader = await Reader.connect(restarted, info, node, name=PROFILE)
    # while the node is synchronised again, the cache either lets the service answer
    # or answers with the whole node: never with a part of it
    async def served_whole() -> bool:
        answer = await reader.get(max_items=5)
        sync_state, __, stored = probe.node(node)
        assert sync_state != "COMPLETED" or stored == count
        if not answer.cached:
            return False
        assert [i["id"] for i in answer.items] == ids[-5:]
        return True

    await until(served_whole, "the node served from the cache", timeout=SYNC_TIMEOUT)
    await wait_completed(reader)
    probe.assert_consistent()
    assert [name for name, __ in await reader.cached()] == ids
    assert await reader.mirrors_service()


def insert_bulk_items(db_url: str, count: int) -> None:
    """Items enough for the migration to last a while (it indexes them all)."""
    sa_engine = migration_helpers.connect(db_url)
    try:
        with sa_engine.begin() as conn:
            for start in range(0, count, 5000):
                conn.execute(migration_helpers.pubsub_items.insert(), [
                    {"node_id": 1, "name": f"bulk{i:06}", "data": migration_helpers.item_xml(
                        "bulk", i) + f"<!-- words to index for item {i} -->",
                     "created": migration_helpers.T0, "updated": migration_helpers.T0,
                     "parsed": {"i": i}}
                    for i in range(start, min(count, start + 5000))])
    finally:
        sa_engine.dispose()


def first_revision_content(probe: DatabaseProbe) -> list[list[tuple]]:
    """What a migration must keep: the rows of the first revision's tables."""
    return [probe.rows(query) for query in (
        "SELECT id, name FROM profiles ORDER BY id",
        "SELECT category, name, profile_id, value FROM param_ind ORDER BY name",
        "SELECT namespace, key, value FROM private_gen_bin ORDER BY key",
        "SELECT id, name, sync_state FROM pubsub_nodes ORDER BY id",
        "SELECT node_id, name, data FROM pubsub_items ORDER BY node_id, name",
    )]


@pytest.fixture
def socket_dir():
    # a short folder: a UNIX socket path must fit in about 100 bytes
    path = Path(tempfile.mkdtemp(prefix="li-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_backend_killed_during_a_migration_leaves_the_old_revision_then_completes_it(
        db_url, probe, tmp_path, socket_dir):
    first = migration_helpers.revisions()[0]
    migration_helpers.migrate(db_url, first)
    migration_helpers.insert_first_revision_data(db_url)
    insert_bulk_items(db_url, sized(60_000, 500_000))
    before = first_revision_content(probe)
    local_dir = tmp_path / "local"

    process = start_backend_process(tmp_path, local_dir, db_url, socket_dir / "b.sock")
    try:
        poll(probe.locked_by_a_writer, "the migration to start")
    finally:
        kill(process)
    assert "database upgraded" not in process.output
    probe.assert_consistent()
    # the migration runs in one transaction: nothing of it is left
    assert migration_helpers.current_revision(db_url) == first
    assert first_revision_content(probe) == before

    process = start_backend_process(tmp_path, local_dir, db_url, socket_dir / "b.sock")
    try:
        process.wait_for("backend ready", timeout=300)
    finally:
        assert process.stop() in (0, -signal.SIGTERM), process.output
    assert "database upgraded from schema revision" in process.output
    assert migration_helpers.current_revision(db_url) == schema.head_revision()
    probe.assert_consistent()
    after = first_revision_content(probe)
    # the nodes gained columns, but kept their rows; everything else is untouched
    assert after == before


@pytest_twisted.ensureDeferred
async def test_xmpp_server_stopped_during_a_sync_ends_complete_after_reconnection(
        xmpp_server_factory, make_backend, probe, monkeypatch):
    from libervia.backend.xmpp.client import ClientFactory

    # the client retries often, so that it is back soon after the server
    monkeypatch.setattr(ClientFactory, "maxDelay", 3.0)
    # a server of this test's own: the others' are not disturbed by its stop
    info = xmpp_server_factory("ejabberd", max_items=100_001)
    node = new_node()
    count = sized(600, 3000)
    ids = [f"post{n:05}" for n in range(count)]
    publisher = Publisher(info)
    await fill(publisher, node, ids)
    backend = await make_backend()
    reader = await Reader.connect(backend, info, node)
    assert (await reader.get(max_items=1)).cached is False

    def mid_sync():
        state = probe.node(node)
        return state if state and state[0] == "IN_PROGRESS" and state[1] > 0 else None

    state = await poll_in_thread(mid_sync, "the synchronisation to be under way")
    await threads.deferToThread(info.stop)
    try:
        assert probe.node(node)[2] < count, state
        await until(lambda: defer.succeed(not backend.clients.is_connected(reader.name)),
                    "the disconnection to be noticed")
        # what the server answers meanwhile: nothing, the cache can't answer either
        assert probe.node(node)[0] == "IN_PROGRESS", probe.rows("SELECT extra FROM pubsub_nodes")
    finally:
        await threads.deferToThread(info.start)
    await until(lambda: defer.succeed(backend.clients.is_connected(reader.name)),
                "the reconnection", timeout=120)
    await wait_completed(reader)
    probe.assert_consistent()
    assert [name for name, __ in await reader.cached()] == ids
    assert await reader.mirrors_service()
    # "completed" is stored before the synchronisation's end is known in memory (its
    # events applied, the node marked checked on this stream): served a moment later
    await until(lambda: served_from_cache(reader), "the node served from the cache")


async def served_from_cache(reader: Reader) -> bool:
    return (await reader.get(max_items=5)).cached
