"""What the benchmarks needing a backend share: a backend, profiles, a synced node.

Everything is prepared through the backend itself, as a user would: the node is
created and filled by a profile with the XEP-0060 plugin, and read by another profile,
whose cache synchronises it.  What is started is stopped through ``bench.on_close``.

- :func:`server_for`: a server keeping nodes of a given size;
- :func:`start_backend`: an in-process backend on a temporary SQLite database;
- :func:`add_profile`: a profile for an account of a server, connected;
- :func:`fill_node`: create a node and publish N Atom items into it;
- :func:`synced_node`: all of the above, until the reader's cache serves the node;
- :func:`shared_synced_node`: the same, made once per run for the benchmarks that only
  read the node (filling a big node on Prosody takes minutes).
"""

from __future__ import annotations

import time
import weakref
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.words.xish import domish

from bench.harness import Bench, Result
from libervia.backend.plugins.xep_0060.stanzas import NS_PUBSUB
from libervia.backend.xmpp.profiles import ConnectionOptions
from tests.pubsub_support import BackendFactory, Reader, atom, new_node, until

#: publish requests in flight at once while filling a node
PUBLISH_CONCURRENCY = 32

#: seconds allowed per item published or synchronised (the machine may be slow)
SECONDS_PER_ITEM = 0.05

#: items per request of the cache's synchronisation: the plugin's default (the test
#: backends ask for 10, to page small nodes)
PAGE_SIZE = 100

#: per-node item cap of the test servers when not given (``max_items`` option)
SERVER_MAX_ITEMS = 100_000


def server_for(bench: Bench, kind: str, items: int) -> Any:
    """A server of ``kind`` whose pubsub service keeps nodes of ``items`` items.

    The default server is shared with the other benchmarks when its cap suffices.
    """
    if items <= SERVER_MAX_ITEMS:
        return bench.server(kind)
    return bench.server(kind, max_items=items)


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'libervia.db'}"


async def start_backend(bench: Bench, label: str = "backend",
                        settings: dict[str, dict[str, Any]] | None = None,
                        db_url: str | None = None) -> tuple[Any, BackendFactory]:
    """A started in-process backend on a new database (SQLite unless ``db_url`` is
    given); stopped at the end.

    :return: the backend, and its factory (its ``config`` gives the database and the
        bridge socket, e.g. to start another backend on the same data)
    """
    local = bench.tempdir(label)
    factory = BackendFactory(local / "local", db_url or sqlite_url(local), settings)
    bench.on_close(factory.close)
    backend = await factory()
    return backend, factory


async def add_profile(backend: Any, info: Any, account: Any, name: str) -> Reader:
    """Create profile ``name`` for ``account`` (an XmppUser of ``info``) and connect it.

    The result reads no node yet: set its ``node`` to the one it should read.
    """
    await backend.profiles.create(name, account.jid, account.password, ConnectionOptions(
        host=info.address, port=info.c2s_port, ca_file=str(info.ca_file)))
    return await Reader.connect(backend, info, node="", name=name)


def atom_item(item_id: str) -> domish.Element:
    """A pubsub ``<item/>`` holding the Atom entry of the tests."""
    item = domish.Element((NS_PUBSUB, "item"))
    item["id"] = item_id
    item.addRawXml(ET.tostring(atom(item_id), encoding="unicode"))
    return item


def item_ids(count: int) -> list[str]:
    return [f"item{n:06}" for n in range(count)]


async def fill_node(publisher: Reader, node: str, count: int,
                    concurrency: int = PUBLISH_CONCURRENCY) -> list[str]:
    """Create ``node`` (open, keeping at least ``count`` items) and publish ``count`` items.

    ``publisher`` is a connected profile allowed to create nodes on the service (the
    server's admin for Prosody's pubsub component).  Publications are sent
    ``concurrency`` at a time: one after the other, a big node takes minutes.
    """
    xep_0060 = publisher.xep_0060
    await xep_0060.create_node(publisher.client, publisher.service, node, {
        "pubsub#max_items": str(max(count, 1)),
        "pubsub#access_model": "open",
        "pubsub#persist_items": "1",
        "pubsub#deliver_payloads": "1",
        "pubsub#notify_retract": "1",
    })
    ids = item_ids(count)
    semaphore = defer.DeferredSemaphore(concurrency)

    def publish(item_id: str) -> defer.Deferred:
        return semaphore.run(lambda: defer.ensureDeferred(xep_0060.publish(
            publisher.client, publisher.service, node, [atom_item(item_id)])))

    await defer.gatherResults([publish(i) for i in ids], consumeErrors=True)
    return ids


@dataclass
class SyncedNode:
    """A node of ``count`` items on ``info``'s pubsub service, synchronised by ``reader``."""

    backend: Any
    factory: BackendFactory
    info: Any
    publisher: Reader
    reader: Reader
    node: str
    count: int
    fill_seconds: float
    sync_seconds: float
    #: the backend's database
    engine: str = "SQLite"

    @property
    def setting(self) -> str:
        where = "" if self.engine == "SQLite" else f" ({self.engine})"
        return f"{self.info.kind}{where}, {self.count:,} items"

    @property
    def folder(self) -> Path:
        """The folder of the backend's data: ``local`` (data folder), ``libervia.db``."""
        return self.factory.config.local_dir.parent


async def wait_served(reader: Reader, count: int) -> None:
    """Until the reader's cache has synchronised its node and answers from it."""
    timeout = 60 + count * SECONDS_PER_ITEM

    async def served() -> bool:
        state = await reader.state()
        if state == "error":
            node = await reader.pubsub_node()
            raise RuntimeError(f"synchronisation of {reader.node} failed: {node.extra}")
        if state != "completed":
            return False
        return (await reader.get(max_items=1)).cached

    await until(served, f"node {reader.node} synchronised and served", timeout=timeout)


async def synced_node(bench: Bench, info: Any, count: int,
                      settings: dict[str, dict[str, Any]] | None = None,
                      label: str = "backend") -> SyncedNode:
    """A backend whose reader profile has a synced node of ``count`` items.

    The server's admin creates and fills the node, its first user reads it: the first
    get-items request makes the cache analyse the node and synchronise it.
    """
    merged = {"plugin PUBSUB_CACHE": {"page_size": PAGE_SIZE}}
    for section, values in (settings or {}).items():
        merged.setdefault(section, {}).update(values)
    backend, factory = await start_backend(bench, label, merged)
    publisher = await add_profile(backend, info, info.admin, "publisher")
    reader = await add_profile(backend, info, info.user(0), "reader")
    node = publisher.node = reader.node = new_node()
    started = time.perf_counter()
    await fill_node(publisher, node, count)
    filled = time.perf_counter()
    await reader.get(max_items=1)
    await wait_served(reader, count)
    synced = time.perf_counter()
    return SyncedNode(backend, factory, info, publisher, reader, node, count,
                      filled - started, synced - filled)


#: the nodes of :func:`shared_synced_node`, by run
_shared: weakref.WeakKeyDictionary[Bench, dict[tuple[str, int], SyncedNode]] = (
    weakref.WeakKeyDictionary())


async def shared_synced_node(bench: Bench, kind: str, count: int) -> SyncedNode:
    """A :func:`synced_node` of ``count`` items on the ``kind`` server, shared in the run.

    Benchmarks using it must leave the node as they found it (same items, synchronised)
    and must not stop its backend: it is stopped at the end of the run.
    """
    nodes = _shared.setdefault(bench, {})
    if (kind, count) not in nodes:
        nodes[kind, count] = await synced_node(
            bench, server_for(bench, kind, count), count, label=f"shared-{kind}")
    return nodes[kind, count]


async def shared_synced_node_on_postgresql(bench: Bench, kind: str, count: int
                                           ) -> SyncedNode:
    """The node of :func:`shared_synced_node`, synchronised by another backend, on
    PostgreSQL (made once per run, as that one)."""
    nodes = _shared.setdefault(bench, {})
    key = (f"{kind}-postgresql", count)
    if key not in nodes:
        shared = await shared_synced_node(bench, kind, count)
        backend, factory = await start_backend(
            bench, f"shared-{kind}-postgresql",
            {"plugin PUBSUB_CACHE": {"page_size": PAGE_SIZE}},
            db_url=bench.postgresql_url())
        reader = await add_profile(backend, shared.info, shared.info.user(0), "reader")
        reader.node = shared.node
        started = time.perf_counter()
        await reader.get(max_items=1)
        await wait_served(reader, count)
        nodes[key] = SyncedNode(backend, factory, shared.info, shared.publisher, reader,
                                shared.node, count, shared.fill_seconds,
                                time.perf_counter() - started, engine="PostgreSQL")
    return nodes[key]


#: node sizes of the benchmarks reading a node on each server (full, quick): large on
#: ejabberd, smaller on Prosody, whose publications are slow
NODE_SIZES = (("ejabberd", 10_000, 200), ("prosody", 1_000, 50))


async def on_each_server(bench: Bench, bench_id: str, what: str,
                         measure: Callable[[str, int], Awaitable[Result | list[Result]]]
                         ) -> list[Result]:
    """``await measure(kind, items)`` (one result or several) for each server of
    :data:`NODE_SIZES`.

    A server failing is reported as such; the other one still runs.
    """
    results: list[Result] = []
    for kind, full, quick in NODE_SIZES:
        try:
            found = await measure(kind, bench.size(full=full, quick=quick))
            results.extend(found if isinstance(found, list) else [found])
        except Exception as e:  # noqa: BLE001 - reported, the other server still runs
            results.append(Result.failed(bench_id, f"{what} on {kind}",
                                         f"{type(e).__name__}: {e}"))
    return results
