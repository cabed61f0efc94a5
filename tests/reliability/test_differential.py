"""Differential test: the pubsub cache against the real service, by random operations.

Hypothesis draws sequences of operations on two blog nodes of the server's pubsub
service: publish (new ids and re-published ones, with a payload that may change),
retract, purge, node deletion and re-creation, backend stop and start (a new backend on
the same database), and the drop of the profile's XMPP connection.  The service itself
is the oracle: after each step that settles (the backend runs and the profile had time
to reconnect), every node must end up served from the cache, with exactly the service's
items, ids and XML, in the service's order; a deleted node must leave the cache.  (A
node created again and emptied before the cache saw it is left alone: nothing tells
yet what it will hold.)

Hypothesis runs the state machine synchronously, in a thread of its own, and each step
calls into the reactor with ``blockingCallFromThread``.  The run is seeded: a failure
prints the seed and the shortest sequence of steps found.  Environment variables:

``LIBERVIA_DIFFERENTIAL_SEED``
    the seed (default: a fixed one, printed);
``LIBERVIA_DIFFERENTIAL_EXAMPLES``, ``LIBERVIA_DIFFERENTIAL_STEPS``
    the number of sequences and the largest number of steps in each (default: 10 of
    up to 15, for CI).  The full run (13 minutes on two busy cores, both servers and engines)::

        LIBERVIA_DIFFERENTIAL_EXAMPLES=25 LIBERVIA_DIFFERENTIAL_STEPS=40 \
            .venv/bin/pytest tests/reliability/test_differential.py -k random
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, threads

pytest.importorskip("slixmpp")

from hypothesis import HealthCheck, note, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import (  # noqa: E402
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.pubsub_support import (  # noqa: E402 - only once slixmpp is known there
    BackendFactory,
    Publisher,
    Reader,
    new_node,
    until,
)

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("LIBERVIA_DIFFERENTIAL_SEED", "20261127"))
EXAMPLES = int(os.environ.get("LIBERVIA_DIFFERENTIAL_EXAMPLES", "10"))
STEPS = int(os.environ.get("LIBERVIA_DIFFERENTIAL_STEPS", "15"))
#: how long a step may take to settle (reconnection, verification, events)
SETTLE = 30

NODES = ("n1", "n2")
#: few ids, so that re-publishing an existing id is frequent
IDS = ("a", "b", "c", "d")
TITLES = ("first", "second")


class Environment:
    """What the state machines of one test share: server, publisher, backends."""

    def __init__(self, server: Any, factory: BackendFactory, publisher: Publisher
                 ) -> None:
        self.server = server
        self.factory = factory
        self.publisher = publisher

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run ``function(*args)`` (a coroutine function, or one returning a Deferred)
        in the reactor, and wait for its result."""

        def start() -> defer.Deferred:
            result = function(*args)
            d = (defer.ensureDeferred(result) if inspect.isawaitable(result)
                 else defer.succeed(result))
            return d.addTimeout(SETTLE * 2, reactor)

        return threads.blockingCallFromThread(reactor, start)


class CacheVersusService(RuleBasedStateMachine):
    """Operations on the service and on the backend; the cache must follow."""

    env: Environment

    def __init__(self) -> None:
        super().__init__()
        note(f"seed {SEED} (LIBERVIA_DIFFERENTIAL_SEED)")
        # fresh nodes and profile for each sequence: the service outlives them
        self.names = {n: new_node() for n in NODES}
        self.items: dict[str, set[str] | None] = dict.fromkeys(NODES)
        self.backend: Any = None
        self.profile: str | None = None
        #: the connection was just dropped / the last check was skipped for that
        self.away = self.unchecked = False
        self.difference: str | None = None
        #: what was done, for the failure message (also when the failure does not
        #: happen again while Hypothesis shrinks the sequence)
        self.steps: list[str] = []
        for node in NODES:
            self.items[node] = {IDS[0]}
            self._on_service("create", node, [IDS[0]])
        self._start()

    # the backend

    def _start(self) -> None:
        env = self.env
        self.backend = env.call(env.factory)
        # the node does not matter here: each check reads them all
        reader = env.call(Reader.connect, self.backend, env.server,
                          self.names[NODES[0]], self.profile)
        self.profile = reader.name

    @precondition(lambda self: self.backend is not None)
    @rule()
    def stop_backend(self) -> None:
        self.steps.append("stop the backend")
        self.env.call(self.backend.stopService)
        self.backend = None

    @precondition(lambda self: self.backend is None)
    @rule()
    def start_backend(self) -> None:
        self.steps.append("start the backend")
        self._start()

    @precondition(lambda self: self.backend is not None)
    @rule()
    def drop_connection(self) -> None:
        """The profile's stream is cut; it reconnects after a delay, during which the
        next steps may happen."""
        self.steps.append("drop the connection")
        stream = self.backend.clients.get(self.profile).xmlstream
        if stream is not None and stream.transport is not None:
            stream.transport.abortConnection()
        # else: still away after the previous drop
        self.away = True

    # the service

    @precondition(lambda self: any(i is None for i in self.items.values()))
    @rule(data=st.data(), first=st.sampled_from(IDS))
    def create_node(self, data: st.DataObject, first: str) -> None:
        """(Re-)create a node, with one item: an empty node is not cached yet."""
        node = data.draw(st.sampled_from([n for n, i in self.items.items() if i is None]))
        self._on_service("create", node, [first])
        self.items[node] = {first}

    @precondition(lambda self: self._existing())
    @rule(data=st.data(), published=st.lists(
        st.tuples(st.sampled_from(IDS), st.sampled_from(TITLES)), min_size=1,
        max_size=3))
    def publish(self, data: st.DataObject, published: list[tuple[str, str]]) -> None:
        node = data.draw(st.sampled_from(self._existing()))
        self._on_service("publish", node, [(i, f"{t} {i}") for i, t in published])
        self.items[node] |= {i for i, __ in published}

    @precondition(lambda self: self._existing(with_items=True))
    @rule(data=st.data())
    def retract(self, data: st.DataObject) -> None:
        node = data.draw(st.sampled_from(self._existing(with_items=True)))
        ids = data.draw(st.lists(st.sampled_from(sorted(self.items[node])), min_size=1,
                                 max_size=2, unique=True))
        self._on_service("retract", node, ids)
        self.items[node] -= set(ids)

    @precondition(lambda self: self._existing())
    @rule(data=st.data())
    def purge(self, data: st.DataObject) -> None:
        node = data.draw(st.sampled_from(self._existing()))
        self._on_service("purge", node)
        self.items[node] = set()

    @precondition(lambda self: self._existing())
    @rule(data=st.data())
    def delete_node(self, data: st.DataObject) -> None:
        node = data.draw(st.sampled_from(self._existing()))
        self._on_service("delete", node)
        self.items[node] = None

    def _on_service(self, operation: str, node: str, *args: Any) -> None:
        self.steps.append(f"{operation} {node} {', '.join(map(repr, args))}".strip())
        self.env.call(getattr(self.env.publisher, operation), self.names[node], *args)

    def _existing(self, with_items: bool = False) -> list[str]:
        return [n for n, i in self.items.items()
                if i is not None and (i or not with_items)]

    # the invariant

    @invariant()
    def cache_equals_the_service(self) -> None:
        if self.backend is None:
            return  # nothing to compare until the backend is started again
        if self.away:
            # the next step happens while the profile is away, then it is checked
            self.away, self.unchecked = False, True
            return
        self.unchecked = False
        self.difference = None
        try:
            self.env.call(self._settle)
        except AssertionError as e:
            raise AssertionError(
                f"{e}; last difference seen: {self.difference}; seed {SEED}, steps: "
                + "; ".join(self.steps)) from None

    async def _settle(self) -> None:
        await until(self._connected, "the profile connected", SETTLE)
        for node, items in self.items.items():
            view = Reader(self.backend, self.profile, self.env.server, self.names[node])
            if items is None:
                await until(functools.partial(self._forgotten, view),
                            f"deleted node {node} gone from the cache", SETTLE)
            else:
                await until(functools.partial(self._mirrored, view),
                            f"node {node} served from the cache, equal to the service",
                            SETTLE)

    async def _connected(self) -> bool:
        return self.backend.clients.is_connected(self.profile)

    async def _forgotten(self, view: Reader) -> bool:
        return await view.pubsub_node() is None

    async def _mirrored(self, view: Reader) -> bool:
        """Served from the cache, with the service's items, XML and order."""
        # reading the node is also what makes the cache analyse a (re-)created one
        served = await view.get()
        if not served.cached:
            pubsub_node = await view.pubsub_node()
            if pubsub_node is None and not served.items:
                # nothing tells yet what a new empty node will hold: the cache leaves
                # it alone until it has items (and has nothing of it meanwhile)
                return True
            self.difference = f"{view.node} not served from the cache, " + (
                "unknown to it" if pubsub_node is None
                else f"state {view.cache.node_state(pubsub_node)}")
            return False
        remote = await view.get(use_cache=False)
        ordered = [(i["id"], i.toXml()) for i in served.items]
        if ordered != [(i["id"], i.toXml()) for i in remote.items]:
            self.difference = (f"{view.node}: cache {ordered}, service "
                               f"{[(i['id'], i.toXml()) for i in remote.items]}")
            return False
        return await view.mirrors_service()

    def teardown(self) -> None:
        try:
            if self.backend is not None and self.unchecked:
                self.cache_equals_the_service()
        finally:
            # whatever happened: a backend left running would fight over the account
            # with the next sequence's
            if self.backend is not None:
                self.env.call(self.backend.stopService)
            for node, items in self.items.items():
                if items is not None:
                    self.env.call(self.env.publisher.delete, self.names[node])


@pytest.fixture
def monkeypatched_reconnection(monkeypatch):
    from libervia.backend.xmpp.client import ClientFactory

    # a short, fixed gap: the step after a connection drop happens during it
    monkeypatch.setattr(ClientFactory, "initialDelay", 1.0)
    monkeypatch.setattr(ClientFactory, "jitter", 0.0)


@pytest.fixture
def backends(tmp_path, db_url):
    """``backends()`` starts a backend; all share one database, and are stopped at the
    end."""
    factory = BackendFactory(tmp_path / "local", db_url)
    yield factory
    pytest_twisted.blockon(factory.close())


@pytest.fixture
def publisher(xmpp_server):
    """The independent client, with one session for the whole test."""
    publisher = Publisher(xmpp_server)
    pytest_twisted.blockon(publisher.keep_session())
    yield publisher
    pytest_twisted.blockon(publisher.close())


@pytest_twisted.ensureDeferred
async def test_cache_equals_the_service_after_random_operations(
        xmpp_server, backends, publisher, monkeypatched_reconnection):
    print(f"differential test: seed {SEED}, {EXAMPLES} sequences of up to {STEPS} "
          "steps (LIBERVIA_DIFFERENTIAL_SEED, _EXAMPLES, _STEPS)")
    machine_class = type("CacheVersusService", (CacheVersusService,), {
        "env": Environment(xmpp_server, backends, publisher)})

    # Hypothesis reads the factory's source to name the test. For a class, Python 3.11
    # parses the whole module with ast.parse, whose recursion guard is not thread-safe
    # (CPython gh-106905: "AST constructor recursion depth mismatch" when another thread
    # parses at the same time). A function's source is found without parsing.
    @seed(SEED)
    def new_machine():
        return machine_class()

    await threads.deferToThread(
        run_state_machine_as_test, new_machine, settings=settings(
            max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
            database=None, print_blob=True, report_multiple_bugs=False,
            suppress_health_check=list(HealthCheck)))


@pytest_twisted.ensureDeferred
async def test_a_node_created_again_while_the_backend_was_stopped_is_followed_again(
        xmpp_server, backends, publisher):
    """The subscription went with the deleted node, though its name and items are
    the same: the verification after the connection subscribes again."""
    node = new_node()
    await publisher.create(node, ["a"])
    reader = await Reader.connect(await backends(), xmpp_server, node)
    await reader.get()
    await reader.wait_synchronised()
    await reader.backend.stopService()
    await publisher.delete(node)
    await publisher.create(node, ["a"])
    again = await Reader.connect(await backends(), xmpp_server, node, name=reader.name)
    await until(lambda: _served(again), "the node verified and served again")
    await publisher.publish(node, [("b", None)])
    await until(again.mirrors_service, "the item published afterwards in the cache")
    await publisher.delete(node)


async def _served(reader: Reader) -> bool:
    return (await reader.get()).cached
