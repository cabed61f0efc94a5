"""Load: many profiles keep many nodes in sync while notifications pour in.

A backend *process* (``libervia-backend``) has N profiles, each on its own account of the
private ejabberd, each with the same M nodes of the pubsub service synchronised (K Atom
items each).  An independent client then publishes on those nodes at a target rate for
a while, through several connections without waiting for each answer (new items, and
new versions of existing ones); ejabberd notifies every profile.  Meanwhile the test
calls a cheap bridge method every half second and samples the backend's memory.

Afterwards every profile's cache of every node must hold exactly what the service holds
(same ids, same payloads, no duplicate, nothing lost), the bridge must have answered
within a bound throughout, and the memory must not have kept growing.

The CI size is small (``LoadSize`` defaults: 3 profiles, 4 nodes of 100 items, 200
publications/s for 10 s; about a minute per engine); the full size is asked with
environment variables (``CATCH_UP``: seconds the caches may take to catch up once the
publisher stopped, generous since the backend may handle fewer notifications a second
than the server sends)::

    LIBERVIA_LOAD_PROFILES=10 LIBERVIA_LOAD_NODES=20 LIBERVIA_LOAD_ITEMS=1000 \\
    LIBERVIA_LOAD_RATE=2000 LIBERVIA_LOAD_DURATION=60 LIBERVIA_LOAD_CONNECTIONS=4 \\
    LIBERVIA_LOAD_CATCH_UP=2400 .venv/bin/pytest -s tests/reliability/test_load.py

``-s`` shows the measured figures (rate sustained, lag, memory, bridge latency);
``LIBERVIA_LOAD_PROFILE_TO=FILE`` runs the backend under cProfile, its statistics
written to FILE when it stops (read them with ``python -m pstats FILE``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, threads

pytest.importorskip("slixmpp")

from libervia.cli.bridge_client import BridgeClient  # noqa: E402
from tests.pubsub_support import Publisher, atom, new_node  # noqa: E402
from tests.support import (  # noqa: E402
    BackendProcess,
    backend_env,
    venv_script,
    write_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

PROFILE_ENV = "LIBERVIA_LOAD_PROFILE_TO"
#: publications waiting for their answer, per connection
IN_FLIGHT = 200
#: bridge answers slower than this fail the test (seconds)
MAX_BRIDGE_LATENCY = 5.0
#: growth of the backend's memory allowed from the first half of the publication to
#: the second (KiB).  Notifications waiting to be handled are bounded per profile (the
#: stream is not read past them): that memory is taken in the first seconds, then the
#: allocator's noise is a few MiB.  An unbounded backlog grew by about 3 MiB/s at the
#: CI size on the development machine: 15 MiB or more between the halves of 10 s.
RSS_GROWTH_KIB = 14 * 1024
#: seconds between two samples of the backend (memory, bridge latency)
SAMPLE_PERIOD = 0.5


@dataclasses.dataclass(frozen=True)
class LoadSize:
    """How big the run is: CI defaults, or ``LIBERVIA_LOAD_*`` environment variables."""

    profiles: int = 3
    nodes: int = 4
    items: int = 100
    rate: int = 200  # publications per second, over every node
    duration: float = 10  # seconds of publishing
    connections: int = 2  # publisher connections
    catch_up: float = 0  # seconds the caches may take to catch up (0: 60 + 3 x duration)

    @classmethod
    def from_env(cls) -> LoadSize:
        values = {}
        for field in dataclasses.fields(cls):
            raw = os.environ.get(f"LIBERVIA_LOAD_{field.name.upper()}")
            if raw:
                values[field.name] = type(field.default)(float(raw))
        return cls(**values)


SIZE = LoadSize.from_env()


class Monitor(threading.Thread):
    """Every ``SAMPLE_PERIOD``: one bridge call timed, and the backend's memory."""

    def __init__(self, socket: str, pid: int) -> None:
        super().__init__(daemon=True)
        self.bridge = BridgeClient(socket, timeout=60)
        self.status = Path(f"/proc/{pid}/status")
        #: (monotonic time, VmRSS in KiB, bridge latency in s)
        self.samples: list[tuple[float, int, float]] = []
        self.peak_kib = 0
        self._stopping = threading.Event()

    def run(self) -> None:
        with self.bridge:
            while not self._stopping.is_set():
                started = time.monotonic()
                self.bridge.call("backend_status")
                latency = time.monotonic() - started
                memory = self._memory()
                self.peak_kib = memory.get("VmHWM", self.peak_kib)
                self.samples.append((started, memory["VmRSS"], latency))
                self._stopping.wait(max(0.0, SAMPLE_PERIOD - latency))

    def _memory(self) -> dict[str, int]:
        memory = {}
        for line in self.status.read_text().splitlines():
            key, __, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                memory[key] = int(value.split()[0])
        return memory

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=70)

    def wait_samples(self, count: int) -> None:
        """Block until ``count`` samples were taken (the baseline before a load)."""
        while len(self.samples) < count and self.is_alive():
            time.sleep(SAMPLE_PERIOD / 5)

    def between(self, start: float, end: float) -> list[tuple[float, int, float]]:
        return [s for s in self.samples if start <= s[0] <= end]


@dataclasses.dataclass
class Published:
    """What the publisher got acknowledged, and how fast."""

    acked: dict[tuple[str, str], str] = dataclasses.field(default_factory=dict)
    errors: list[str] = dataclasses.field(default_factory=list)
    sent: int = 0
    elapsed: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.acked) / self.elapsed if self.elapsed else 0.0


class LoadPublisher:
    """Publish on nodes at a target rate, through several connections, pipelined.

    Each connection publishes its share of the rate without waiting for each answer
    (at most ``IN_FLIGHT`` unanswered): a new item most of the time, and every tenth
    time a new version of one of the node's first items, each at most once (so the
    version acknowledged is the one the service keeps).
    """

    def __init__(self, publisher: Publisher, nodes: list[str], size: LoadSize) -> None:
        self.publisher = publisher
        self.nodes = nodes
        self.size = size
        self.published = Published()
        self._lock = threading.Lock()

    def run(self) -> defer.Deferred:
        """Publish for ``size.duration`` seconds; fires once every answer came."""
        return defer.DeferredList(
            [self.publisher.run(self._body(c)) for c in range(self.size.connections)],
            fireOnOneErrback=True, consumeErrors=True)

    def _item(self, connection: int, sequence: int) -> tuple[str, str, str | None]:
        size = self.size
        node = self.nodes[sequence % len(self.nodes)]
        turn = sequence // len(self.nodes)
        if turn % 10 == 9 and turn // 10 < size.items // size.connections:
            index = (turn // 10) * size.connections + connection
            return node, item_name(index), f"Version {connection}-{sequence}"
        return node, f"load{connection}-{sequence:07}", None

    def _body(self, connection: int):
        share = self.size.rate / self.size.connections

        async def body(xmpp, pubsub):
            loop = asyncio.get_running_loop()
            window = asyncio.Semaphore(IN_FLIGHT)
            pending: set[asyncio.Future] = set()

            def done(future: asyncio.Future, key: tuple[str, str], title: str) -> None:
                window.release()
                pending.discard(future)
                error = None if future.cancelled() else future.exception()
                with self._lock:
                    if future.cancelled() or error is not None:
                        self.published.errors.append(repr(error or "cancelled"))
                    else:
                        self.published.acked[key] = title

            start = loop.time()
            sequence = 0
            while loop.time() - start < self.size.duration:
                delay = start + sequence / share - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                node, item_id, title = self._item(connection, sequence)
                sequence += 1
                await window.acquire()
                future = asyncio.ensure_future(pubsub.publish(
                    self.publisher.service, node, id=item_id,
                    payload=atom(item_id, title)))
                pending.add(future)
                future.add_done_callback(
                    lambda f, key=(node, item_id), title=title or f"Post {item_id}":
                    done(f, key, title))
            await asyncio.gather(*list(pending), return_exceptions=True)
            with self._lock:
                self.published.sent += sequence
                self.published.elapsed = max(self.published.elapsed, loop.time() - start)

        return body


def item_name(index: int) -> str:
    return f"item{index:05}"


@pytest.fixture(scope="module")
def accounts(ejabberd_server) -> list[Any]:
    """One new account per profile.  Not the pre-registered users: earlier tests left
    them contacts and pubsub subscriptions, whose items arrive at login (ejabberd
    replays the last item of each subscribed node, contacts' PEP nodes come with
    +notify) and would be cached next to this test's nodes."""
    token = secrets.token_hex(3)
    with ThreadPoolExecutor(max_workers=min(SIZE.profiles, 8)) as pool:
        return list(pool.map(
            lambda n: ejabberd_server.register(f"load{n}-{token}",
                                               secrets.token_urlsafe(12)),
            range(SIZE.profiles)))


@pytest.fixture
def backend(tmp_path, db_url):
    """A ``libervia-backend`` process on ``db_url``; yields it and its bridge socket."""
    sockets = Path(tempfile.mkdtemp(prefix="li-"))  # a UNIX socket path is short
    config = tmp_path / "libervia.conf"
    write_config(config, {
        "DEFAULT": {"local_dir": tmp_path / "local"},
        "bridge": {"socket": sockets / "bridge.sock"},
        "storage": {"url": db_url},
        "plugin PUBSUB_CACHE": {
            "page_size": 100,
            "max_items_per_node": max(10_000, 2 * node_capacity(SIZE))},
    })
    env = backend_env(tmp_path)
    args = [venv_script("libervia-backend"), "--config", str(config)]
    profile_to = os.environ.get(PROFILE_ENV)
    if profile_to:
        args = [sys.executable, "-m", "cProfile", "-o", profile_to, *args]
    process = BackendProcess(args, env=env, cwd=tmp_path)
    try:
        process.wait_for("backend ready")
        yield process, str(sockets / "bridge.sock")
    finally:
        process.stop()
        shutil.rmtree(sockets, ignore_errors=True)


def node_capacity(size: LoadSize) -> int:
    """Items a node may end with: the first ones, and its share of the new ones."""
    return size.items + int(size.rate * size.duration / size.nodes * 1.5) + 100


def items_of(answer: dict[str, Any]) -> list[tuple[str, str]]:
    """(id, XML) of the items of a bridge answer, sorted."""
    return sorted((ET.fromstring(xml).get("id"), xml) for xml in answer["items"])


def title_of(xml: str) -> str:
    return ET.fromstring(xml).findtext(".//{http://www.w3.org/2005/Atom}title")


def in_threads(socket: str, calls: list[tuple[str, dict[str, Any]]], workers: int = 4
               ) -> list[Any]:
    """Bridge calls made concurrently, each thread with its own connection."""
    local = threading.local()

    def call(method_params: tuple[str, dict[str, Any]]) -> Any:
        if not hasattr(local, "bridge"):
            local.bridge = BridgeClient(socket, timeout=600)
        return local.bridge.call(method_params[0], **method_params[1])

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(call, calls))


def wait_caught_up(bridge: BridgeClient, profiles: list[str], expected: int,
                   timeout: float) -> float:
    """Wait until every profile's cache holds ``expected`` items; return how long."""
    started = time.monotonic()
    counts: dict[str, int] = {}
    while True:
        counts = {p: bridge.call("cache_stats", profile=p)["items"] for p in profiles}
        if all(count == expected for count in counts.values()):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"caches not caught up within {timeout:.0f} s: "
                                 f"{counts}, expected {expected} items each")
        time.sleep(0.5)


@pytest_twisted.ensureDeferred
async def test_caches_stay_equal_to_the_service_under_a_notification_load(
        ejabberd_server, accounts, backend):
    info = ejabberd_server
    process, socket = backend
    service = info.pubsub_service
    profiles = [f"load{n}" for n in range(SIZE.profiles)]
    nodes = [new_node() for __ in range(SIZE.nodes)]
    publisher = Publisher(info)
    first_items = [item_name(n) for n in range(SIZE.items)]
    report: dict[str, Any] = {"size": dataclasses.asdict(SIZE)}

    # setup: the nodes, the profiles, every node synchronised by every profile
    started = time.monotonic()
    for node in nodes:
        # one after the other: ejabberd may answer "Database failure" to concurrent
        # node creations
        await publisher.create(node, first_items, max_items=node_capacity(SIZE))
    report["nodes_created_s"] = time.monotonic() - started
    bridge = BridgeClient(socket, timeout=120)
    for profile, user in zip(profiles, accounts, strict=True):
        bridge.call("profile_create", name=profile, jid=user.jid, password=user.password,
                    host=info.address, port=info.c2s_port, ca_file=str(info.ca_file))
    await threads.deferToThread(
        in_threads, socket, [("profile_connect", {"name": p}) for p in profiles])
    started = time.monotonic()
    states = await threads.deferToThread(in_threads, socket, [
        ("cache_sync", {"profile": p, "service": service, "node": n})
        for p in profiles for n in nodes])
    report["synchronised_s"] = time.monotonic() - started
    assert {s["state"] for s in states} == {"completed"}, states

    # the load, watched
    monitor = Monitor(socket, process.process.pid)
    monitor.start()
    await threads.deferToThread(monitor.wait_samples, 2)
    load = LoadPublisher(publisher, nodes, SIZE)
    load_started = time.monotonic()
    await load.run()
    load_published = time.monotonic()
    published = load.published
    assert not published.errors, published.errors[:10]
    new_ids = {key for key in published.acked if not key[1].startswith("item")}
    expected_count = SIZE.items * SIZE.nodes + len(new_ids)
    lag = await threads.deferToThread(wait_caught_up, bridge, profiles, expected_count,
                                      timeout=SIZE.catch_up or 60 + 3 * SIZE.duration)
    monitor.stop()

    # every cache equals the service, which holds what was acknowledged
    for node in nodes:
        remote = items_of(bridge.call("pubsub_get", profile=profiles[0], service=service,
                                      node=node, use_cache=False))
        expected = {item_id: f"Post {item_id}" for item_id in first_items}
        expected |= {item_id: title for (n, item_id), title in published.acked.items()
                     if n == node}
        assert {item_id: title_of(xml) for item_id, xml in remote} == expected, node
        for profile in profiles:
            cached = items_of(bridge.call("cache_get", profile=profile, service=service,
                                          node=node))
            assert cached == remote, (profile, node)

    # the bridge kept answering; the memory did not keep growing while notifications
    # poured in: a backlog held in memory (events read faster than they are handled)
    # would grow from the first half of the publication to the second
    middle = (load_started + load_published) / 2
    first_half = max(rss for __, rss, __ in monitor.between(load_started, middle))
    second_half = max(rss for __, rss, __ in monitor.between(middle, load_published))
    report |= {
        "published": len(published.acked), "rate_per_s": round(published.rate),
        "publish_s": round(published.elapsed, 1), "lag_s": round(lag, 1),
        "bridge_max_latency_s": round(max(s[2] for s in monitor.samples), 3),
        "rss_before_mib": monitor.samples[0][1] // 1024,
        "rss_first_half_mib": first_half // 1024,
        "rss_second_half_mib": second_half // 1024,
        "rss_after_mib": monitor.samples[-1][1] // 1024,
        "peak_rss_mib": monitor.peak_kib // 1024,
        "rss_timeline_mib": [rss // 1024 for __, rss, __ in monitor.samples[::4]],
    }
    print(f"\nload figures: {report}")
    assert report["bridge_max_latency_s"] < MAX_BRIDGE_LATENCY, report
    assert second_half - first_half <= RSS_GROWTH_KIB, report
