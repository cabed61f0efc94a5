"""P5: pubsub item notifications ingested per second into the cache of a synced node.

A backend profile (the *reader*) has a blog node on ejabberd synchronised (a new one
for each burst): from then on the cache follows it through the notifications the
service sends.  Two rows:

* **through ejabberd**: independent publishers (slixmpp clients, each in its own
  process so that they don't share the backend's CPU time slot, the GIL) publish N
  items as fast as the server takes them, keeping many requests in flight instead of
  waiting for each answer.  The time runs from the first notification the reader's
  XML stream receives to the moment the last item is written into the cache;
* **backend alone**: ``<message><event/>`` stanzas like those ejabberd sends (one
  Atom entry per item) are fed into the reader's connected XML stream
  (``dataReceived``, where the bytes from TLS go) in chunks, yielding to the reactor
  between chunks, as fast as the backend reads them: this is the rate the backend
  sustains when the server is not the limit.

In both, every item id must end up in the cache exactly once: the cache's writes are
watched (a wrapper counts how many times each id is written) and the node's items are
read back from the database at the end.  Target: at least 2,000 items per second,
nothing lost, nothing duplicated.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from twisted.internet import defer, reactor, task, threads
from twisted.words.xish import domish

from bench.backend import add_profile, start_backend, wait_served
from bench.harness import Bench, Result, Stats
from libervia.backend.plugins.xep_0060.stanzas import NS_PUBSUB_EVENT
from tests.pubsub_support import Publisher, Reader, atom, new_node

TARGET = 2000
#: publish requests each publisher keeps in flight
WINDOW = 64
#: independent publishing processes
PUBLISHERS = 2
#: items fed into the XML stream per reactor turn (backend alone)
FEED_CHUNK = 50
#: seconds allowed per item for the whole burst to be cached (the machine is shared)
SECONDS_PER_ITEM = 0.01
#: items of each node before its burst
INITIAL = 5
#: share of the server's delivery rate the backend must reach to be keeping up with it
KEEP_UP = 0.9


class WriteWatch:
    """Counts each expected item id the cache writes, until all of them are."""

    def __init__(self, backend: Any, expected: list[str]) -> None:
        self.expected = set(expected)
        self.missing = set(expected)
        self.writes: Counter[str] = Counter()
        #: CPU time of the process (every thread) at the start, and spent until the
        #: last item was written
        self._cpu_start = 0.0
        self.cpu_seconds: float | None = None
        self.last_stored: float | None = None
        self.done = defer.Deferred()
        self._storage = backend.storage.pubsub
        self._original = self._storage.cache_pubsub_items
        self._storage.cache_pubsub_items = self._cache_pubsub_items

    def close(self) -> None:
        self._storage.cache_pubsub_items = self._original

    def _cache_pubsub_items(self, node_id: int, items: Any, **kwargs: Any
                            ) -> defer.Deferred:
        items = list(items)
        d = self._original(node_id, items, **kwargs)

        def written(result: Any) -> Any:
            names = [i["name"] for i in items if i["name"] in self.expected]
            self.writes.update(names)
            self.missing.difference_update(names)
            if names and not self.missing and not self.done.called:
                self.last_stored = time.perf_counter()
                self.cpu_seconds = time.process_time() - self._cpu_start
                self.done.callback(None)
            return result

        return d.addCallback(written)

    def duplicated(self, cached: Counter[str]) -> int:
        """Ids written twice, or found twice among the ``cached`` ones."""
        return sum(n - 1 for n in cached.values() if n > 1) + sum(
            n - 1 for n in self.writes.values() if n > 1)


class Ingestion(WriteWatch):
    """Watches the reader's stream and cache while a burst of items arrives."""

    def __init__(self, reader: Any, expected: list[str]) -> None:
        super().__init__(reader.backend, expected)
        self.reader = reader
        self.first_notification: float | None = None
        self.last_notification: float | None = None
        self.notifications = 0
        self._xmlstream = reader.client.xmlstream
        # priority: seen before the plugin's handler, as soon as the stanza is parsed
        self._xmlstream.addObserver(f'/message/event[@xmlns="{NS_PUBSUB_EVENT}"]',
                                    self._on_event, priority=100)

    def close(self) -> None:
        super().close()
        self._xmlstream.removeObserver(f'/message/event[@xmlns="{NS_PUBSUB_EVENT}"]',
                                       self._on_event)

    def _on_event(self, message: domish.Element) -> None:
        now = time.perf_counter()
        if self.first_notification is None:
            self.first_notification = now
            self._cpu_start = time.process_time()
        self.last_notification = now
        self.notifications += 1

    async def wait(self, timeout: float) -> None:
        try:
            await self.done.addTimeout(timeout, reactor)
        except defer.TimeoutError:
            pass  # reported as lost items

    async def check(self) -> dict[str, Any]:
        """What reached the cache: lost and duplicated ids, and the rate."""
        node = await self.reader.pubsub_node()
        items, __ = await self.reader.backend.storage.pubsub.get_items(node.id)
        cached = Counter(i.name for i in items if i.name in self.expected)
        lost = len(self.expected - set(cached))
        duplicated = self.duplicated(cached)
        seconds = None
        if self.last_stored is not None and self.first_notification is not None:
            seconds = self.last_stored - self.first_notification
        delivery = None
        if self.notifications > 1 and self.last_notification != self.first_notification:
            delivery = (self.notifications - 1) / (self.last_notification
                                                  - self.first_notification)
        return {"items": len(self.expected), "lost": lost, "duplicated": duplicated,
                "seconds": seconds, "notifications": self.notifications,
                "delivery_rate": delivery, "cpu_seconds": self.cpu_seconds,
                "rate": len(self.expected) / seconds if seconds else 0.0}


def burst_ids(label: str, count: int) -> list[str]:
    return [f"{label}-{n:06}" for n in range(count)]


# the independent publishers (separate processes)


def _publish_main(argv: list[str]) -> None:
    """Entry of a publishing process: ``publish <json>``; prints a JSON result."""
    params = json.loads(argv[0])
    info = SimpleNamespace(
        admin=SimpleNamespace(jid=params["jid"], password=params["password"]),
        pubsub_service=params["service"], ca_file=params["ca_file"],
        address=params["address"], c2s_port=params["port"])
    ids: list[str] = params["ids"]
    payloads = [atom(i) for i in ids]
    publisher = Publisher(info)

    async def body(xmpp: Any, pubsub: Any) -> dict[str, float]:
        window = asyncio.Semaphore(params["window"])

        async def publish(item_id: str, payload: Any) -> None:
            async with window:
                await pubsub.publish(info.pubsub_service, params["node"], id=item_id,
                                     payload=payload)

        started = time.perf_counter()
        await asyncio.gather(*(publish(i, p) for i, p in zip(ids, payloads,
                                                                strict=True)))
        return {"seconds": time.perf_counter() - started}

    print(json.dumps(publisher.run_here(body)), flush=True)


def _publish_command(info: Any, node: str, ids: list[str]) -> list[str]:
    params = {"jid": info.admin.jid, "password": info.admin.password,
              "service": info.pubsub_service, "ca_file": str(info.ca_file),
              "address": info.address, "port": info.c2s_port, "node": node,
              "ids": ids, "window": WINDOW}
    return [sys.executable, "-m", "bench.p5_event_ingestion", "publish",
            json.dumps(params)]


def _run_publisher(command: list[str]) -> dict[str, Any]:
    root = Path(__file__).parent.parent
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise RuntimeError(f"publisher failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


async def through_server(info: Any, reader: Any, node: str, label: str,
                         count: int) -> dict[str, Any]:
    ids = burst_ids(label, count)
    ingestion = Ingestion(reader, ids)
    try:
        shares = [ids[n::PUBLISHERS] for n in range(PUBLISHERS)]
        publishers = [threads.deferToThread(_run_publisher,
                                            _publish_command(info, node, share))
                      for share in shares if share]
        published = await defer.gatherResults(publishers, consumeErrors=True)
        await ingestion.wait(30 + count * SECONDS_PER_ITEM)
        outcome = await ingestion.check()
    finally:
        ingestion.close()
    outcome["publish_rate"] = count / max(p["seconds"] for p in published)
    return outcome


# the backend alone


def event_stanzas(reader: Any, node: str, ids: list[str]) -> list[bytes]:
    """The notifications ejabberd would send the reader for ``ids``, serialised."""
    to = reader.client.jid.full()
    stanzas = []
    for item_id in ids:
        entry = ET.tostring(atom(item_id), encoding="unicode")
        stanzas.append(
            f"<message from='{reader.service.full()}' to='{to}' type='headline' "
            f"id='{item_id}'><event xmlns='{NS_PUBSUB_EVENT}'><items node='{node}'>"
            f"<item id='{item_id}'>{entry}</item></items></event></message>".encode())
    return stanzas


async def backend_alone(reader: Any, node: str, label: str, count: int
                        ) -> dict[str, Any]:
    ids = burst_ids(label, count)
    stanzas = event_stanzas(reader, node, ids)
    ingestion = Ingestion(reader, ids)
    stream = reader.client.xmlstream
    try:
        for start in range(0, len(stanzas), FEED_CHUNK):
            stream.dataReceived(b"".join(stanzas[start:start + FEED_CHUNK]))
            # let the reactor run (database answers, event handlers) between chunks
            await task.deferLater(reactor, 0, lambda: None)
        await ingestion.wait(30 + count * SECONDS_PER_ITEM)
        return await ingestion.check()
    finally:
        ingestion.close()


def rate_result(what: str, setting: str, runs: list[dict[str, Any]], notes: str
                ) -> Result:
    rates = [r["rate"] for r in runs]
    lost = sum(r["lost"] for r in runs)
    duplicated = sum(r["duplicated"] for r in runs)
    measured = Stats.of(rates, unit="items/s")
    # the CPU time says what the rate would be with a core to itself (the machine is
    # shared: the rate depends on the load, the CPU time per item much less)
    cpu = [r["cpu_seconds"] / r["items"] for r in runs if r["cpu_seconds"]]
    if cpu:
        per_item = Stats.of(cpu)
        notes += (f"; CPU time (all threads) {per_item.text()} per item, i.e. "
                  f"{1 / per_item.median:,.0f} items per CPU second")
    return Result(
        id="P5", what=what, setting=setting, measured=measured,
        target=f">= {TARGET:,}/s, 0 lost", met=(measured.median >= TARGET and not lost
                                                and not duplicated),
        notes=f"{notes}; lost {lost}, duplicated {duplicated} over {len(runs)} runs",
        details={"runs": runs, "lost": lost, "duplicated": duplicated})


def server_result(count: int, runs: list[dict[str, Any]]) -> Result:
    """The row through ejabberd: when the server delivers less than the target, what
    counts is that the backend kept up with it (the other row measures the backend)."""
    delivery = Stats.of([r["delivery_rate"] or 0.0 for r in runs], "items/s")
    publish = Stats.of([r["publish_rate"] for r in runs], "items/s")
    result = rate_result(
        "item notifications cached, through ejabberd",
        f"ejabberd, bursts of {count:,} items, {PUBLISHERS} publishers", runs,
        f"through ejabberd: notifications arrived at {delivery.text()}, published at "
        f"{publish.text()}")
    kept_up = result.measured.median >= KEEP_UP * delivery.median
    if delivery.median < TARGET and result.met is False and kept_up and not (
        result.details["lost"] or result.details["duplicated"]
    ):
        result.met = None
        result.notes += (f"; the server delivers less than {TARGET:,}/s here: this row "
                         "is its rate, which the backend kept up with")
    return result


async def followed_node(info: Any, reader: Any, capacity: int) -> str:
    """A new node of a few items, synchronised by ``reader``, keeping ``capacity`` more.

    Each burst gets its own node: ejabberd publishes slower as a node grows, and the
    cache's node limit must not be reached.
    """
    node = reader.node = new_node()
    await Publisher(info).create(node, burst_ids("initial", INITIAL),
                                 max_items=capacity + INITIAL)
    await reader.get(max_items=1)
    await wait_served(reader, INITIAL)
    await reader.cache.wait_background()
    return node


# the backend alone, notifications spread over many nodes of many profiles


class SpreadIngestion(WriteWatch):
    """Watches the storage while notifications of many nodes of many profiles arrive.

    Every item id is unique in the burst (whatever its node), so that counting the ids
    written is enough to find one written twice or never.
    """

    def __init__(self, backend: Any, readers: list[Any], expected: list[str]) -> None:
        super().__init__(backend, expected)
        self.first: float | None = None
        self._readers = readers

    def start(self) -> None:
        self.first = time.perf_counter()
        self._cpu_start = time.process_time()

    async def check(self) -> dict[str, Any]:
        """What reached the cache of every node: lost and duplicated ids, the rate."""
        cached: Counter[str] = Counter()
        for reader in self._readers:
            node = await reader.pubsub_node()
            items, __ = await self._storage.get_items(node.id)
            cached.update(i.name for i in items if i.name in self.expected)
        lost = len(self.expected - set(cached))
        duplicated = self.duplicated(cached)
        seconds = None
        if self.last_stored is not None and self.first is not None:
            seconds = self.last_stored - self.first
        return {"items": len(self.expected), "lost": lost, "duplicated": duplicated,
                "seconds": seconds, "cpu_seconds": self.cpu_seconds,
                "rate": len(self.expected) / seconds if seconds else 0.0}


@dataclass
class SpreadSetting:
    """Profiles, each following the same nodes of the service."""

    profiles: list[Any]
    #: (profile's reader, node) pairs: one cached node each
    readers: list[Any]


async def spread_setting(bench: Bench, info: Any, profiles: int, nodes: int
                         ) -> SpreadSetting:
    """``profiles`` profiles of one backend, each with the same ``nodes`` nodes of
    ejabberd synchronised (``profiles`` x ``nodes`` cached nodes).

    The accounts of the server are shared by the profiles (each connection has a
    resource of its own): notifications are fed to each profile's stream, the server
    sends none.
    """
    backend, __ = await start_backend(bench, "p5-spread")
    accounts = (info.admin, *info.users)
    connected = [await add_profile(backend, info, accounts[n % len(accounts)],
                                   f"reader{n}") for n in range(profiles)]
    names = [new_node() for __ in range(nodes)]
    publisher = Publisher(info)
    await publisher.keep_session()
    try:
        for name in names:
            await publisher.create(name, burst_ids("initial", INITIAL), max_items=10_000)
    finally:
        await publisher.close()
    readers = [Reader(backend, profile.name, info, name)
               for profile in connected for name in names]
    await defer.gatherResults([defer.ensureDeferred(r.get(max_items=1))
                               for r in readers], consumeErrors=True)
    for reader in readers:
        await wait_served(reader, INITIAL)
    for profile in connected:
        await profile.cache.wait_background()
    return SpreadSetting(connected, readers)


async def spread_burst(setting: SpreadSetting, label: str, count: int) -> dict[str, Any]:
    """``count`` notifications, one new item each, going round every node of every
    profile, fed to each profile's stream by chunks in turn."""
    ids = burst_ids(label, count)
    by_profile: dict[str, list[bytes]] = {p.name: [] for p in setting.profiles}
    readers = setting.readers
    for n, item_id in enumerate(ids):
        reader = readers[n % len(readers)]
        by_profile[reader.name].extend(event_stanzas(reader, reader.node, [item_id]))
    ingestion = SpreadIngestion(setting.profiles[0].backend, readers, ids)
    streams = [(p.client.xmlstream, by_profile[p.name]) for p in setting.profiles]
    try:
        ingestion.start()
        longest = max(len(stanzas) for __, stanzas in streams)
        for start in range(0, longest, FEED_CHUNK):
            for stream, stanzas in streams:
                if start < len(stanzas):
                    stream.dataReceived(b"".join(stanzas[start:start + FEED_CHUNK]))
            await task.deferLater(reactor, 0, lambda: None)
        try:
            await ingestion.done.addTimeout(30 + count * SECONDS_PER_ITEM, reactor)
        except defer.TimeoutError:
            pass  # reported as lost items
        return await ingestion.check()
    finally:
        ingestion.close()


async def across_nodes(bench: Bench, info: Any) -> Result:
    """The row of notifications spread over many nodes of many profiles."""
    profiles, nodes = bench.size(full=10, quick=2), bench.size(full=20, quick=5)
    count, runs = bench.size(full=10_000, quick=1_000), bench.size(5, 2)
    setting = await spread_setting(bench, info, profiles, nodes)
    done = [await spread_burst(setting, f"n{n}", count) for n in range(runs)]
    return rate_result(
        "item notifications cached, backend alone, across nodes",
        f"bursts of {count:,} items over {profiles * nodes} nodes of {profiles} profiles",
        done, f"backend alone, each notification on the next node ({nodes} nodes "
        f"followed by each of {profiles} profiles)")


async def run(bench: Bench) -> list[Result]:
    server_count, server_runs = bench.size(full=5_000, quick=1_000), bench.size(3, 2)
    alone_count, alone_runs = bench.size(full=10_000, quick=1_000), bench.size(5, 2)
    info = bench.server("ejabberd")
    backend, __ = await start_backend(bench, "p5")
    reader = await add_profile(backend, info, info.user(0), "reader")
    through = []
    alone = []
    for n in range(max(server_runs, alone_runs)):
        if n < server_runs:
            node = await followed_node(info, reader, server_count)
            through.append(await through_server(info, reader, node, f"s{n}",
                                                server_count))
        if n < alone_runs:
            node = await followed_node(info, reader, alone_count)
            alone.append(await backend_alone(reader, node, f"a{n}", alone_count))
    return [
        server_result(server_count, through),
        rate_result("item notifications cached, backend alone",
                    f"stanzas fed to the XML stream, bursts of {alone_count:,} items",
                    alone, "backend alone"),
        await across_nodes(bench, info),
    ]


if __name__ == "__main__":
    if sys.argv[1:2] == ["publish"]:
        _publish_main(sys.argv[2:])
    else:
        sys.exit("usage: python -m bench.p5_event_ingestion publish PARAMETERS")
