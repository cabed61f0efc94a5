"""Group commit of item writes: writes queued during one share the next transaction.

The first tests drive :class:`GroupCommit` with a runner whose transactions the test
ends itself (no thread, no database); the last ones run the storage's own item writes
on SQLite and on PostgreSQL.
"""

from typing import Any

import pytest_twisted
from sqlalchemy.exc import IntegrityError
from twisted.internet import defer

from libervia.backend.memory.storage import StorageError
from libervia.backend.memory.storage.group_commit import GroupCommit

SERVICE = "pubsub.example.org"


class ScriptedRunner:
    """A runner whose transactions are ended by the test: each call of
    ``run_in_session`` is recorded with the members it got, and its Deferred waits."""

    def __init__(self) -> None:
        self.transactions: list[tuple[list[tuple[Any, ...]], frozenset | None,
                                      defer.Deferred]] = []

    def run_in_session(self, name: str, thd: Any, members: list[tuple[Any, ...]],
                       tables: frozenset | None = None) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.transactions.append((members, tables, d))
        return d

    def commit(self, index: int = -1) -> list[tuple[Any, ...]]:
        """End a transaction successfully: each member's result is its arguments."""
        members, __, d = self.transactions[index]
        d.callback([("written", *m) for m in members])
        return members

    def fail(self, index: int, error: Exception) -> None:
        self.transactions[index][2].errback(error)


def outcomes(deferreds: list[defer.Deferred]) -> list[Any]:
    """What each Deferred fired with: its result, or its error's type (consumed)."""
    found = []
    for d in deferreds:
        d.addCallbacks(found.append, lambda f: found.append(f.type))
    return found


def test_a_write_alone_is_run_at_once_in_a_transaction_of_its_own():
    runner = ScriptedRunner()
    group = GroupCommit(runner, "writes", lambda session, members: [], max_size=100)
    done = outcomes([group.submit("a")])
    assert [m for m, __, __ in runner.transactions] == [[("a",)]]
    runner.commit(0)
    assert done == [("written", "a")]


def test_writes_queued_during_a_transaction_share_the_next_one_in_order():
    runner = ScriptedRunner()
    group = GroupCommit(runner, "writes", lambda session, members: [], max_size=100)
    done = outcomes([group.submit(name) for name in ("a", "b", "c", "d")])
    assert len(runner.transactions) == 1
    runner.commit(0)
    # a was alone; b, c and d came while it was written: one transaction, in order
    assert [m for m, __, __ in runner.transactions] == [[("a",)], [("b",), ("c",), ("d",)]]
    assert done == [("written", "a")]
    runner.commit(1)
    assert done == [("written", n) for n in "abcd"]
    assert (group.transactions, group.members) == (2, 4)


def test_a_transaction_takes_members_up_to_the_size_limit_at_least_one():
    runner = ScriptedRunner()
    group = GroupCommit(runner, "writes", lambda session, members: [], max_size=10)
    outcomes([group.submit("first", size=1), group.submit("big", size=25),
              group.submit("x", size=6), group.submit("y", size=4),
              group.submit("z", size=1)])
    for __ in range(3):
        runner.commit()
    assert [m for m, __, __ in runner.transactions] == [
        [("first",)], [("big",)], [("x",), ("y",)], [("z",)]]


def test_the_tables_of_a_transaction_are_those_of_its_members():
    runner = ScriptedRunner()
    group = GroupCommit(runner, "writes", lambda session, members: [], max_size=10)
    items = frozenset({"pubsub_items"})
    outcomes([group.submit("a", tables=items), group.submit("b", tables=items),
              group.submit("c", tables=frozenset({"other"}))])
    runner.commit(0)
    assert runner.transactions[0][1] == items
    assert runner.transactions[1][1] == {"pubsub_items", "other"}
    runner.commit(1)
    # a member that does not say which tables it writes may write any
    outcomes([group.submit("d", tables=items)])
    outcomes([group.submit("e"), group.submit("f", tables=items)])
    runner.commit(2)
    assert runner.transactions[3][1] is None


def test_a_failing_member_fails_alone_and_the_others_are_written_again_alone():
    """A transaction failing on a statement committed nothing: each member is run
    again in a transaction of its own, in order; only the failing one fails."""
    runner = ScriptedRunner()
    group = GroupCommit(runner, "writes", lambda session, members: [], max_size=100)
    done = outcomes([group.submit(n) for n in ("a", "b", "bad", "c")])
    runner.commit(0)
    runner.fail(1, ValueError("constraint of bad"))
    assert [m for m, __, __ in runner.transactions[2:]] == [[("b",)]]
    runner.commit(2)
    runner.fail(3, ValueError("constraint of bad"))
    runner.commit(4)
    assert [m for m, __, __ in runner.transactions[2:]] == [[("b",)], [("bad",)], [("c",)]]
    assert done == [("written", "a"), ("written", "b"), ValueError, ("written", "c")]
    # writes queued meanwhile wait for the members run again, then go on as usual
    later = outcomes([group.submit("d")])
    assert len(runner.transactions) == 6
    runner.commit(5)
    assert later == [("written", "d")]


def test_an_unavailable_database_fails_every_member_without_running_them_again():
    """A commit that lost its connection may have been done: nothing is run twice."""
    runner = ScriptedRunner()
    group = GroupCommit(runner, "writes", lambda session, members: [], max_size=100)
    done = outcomes([group.submit(n) for n in ("a", "b", "c")])
    runner.commit(0)
    runner.fail(1, StorageError("the database is unavailable"))
    assert len(runner.transactions) == 2
    assert done == [("written", "a"), StorageError, StorageError]
    # the next write is tried again as usual
    later = outcomes([group.submit("d")])
    runner.commit(2)
    assert later == [("written", "d")]


def test_a_member_whose_caller_gave_up_does_not_stop_the_others():
    runner = ScriptedRunner()
    group = GroupCommit(runner, "writes", lambda session, members: [], max_size=100)
    first = outcomes([group.submit("a")])
    cancelled = group.submit("b")
    done = outcomes([group.submit("c")])
    cancelled.cancel()
    cancelled.addErrback(lambda f: f.trap(defer.CancelledError))
    runner.commit(0)
    runner.commit(1)
    assert first == [("written", "a")]
    assert done == [("written", "c")]


# the storage's item writes, on both engines


def item(name: str, data: str = "") -> dict[str, str]:
    return {"name": name, "data": data or f"<item id='{name}'/>"}


async def stored(storage, node_id):
    items, __ = await storage.pubsub.get_items(node_id)
    return {i.name: i.data for i in items}


@pytest_twisted.ensureDeferred
async def test_item_writes_of_many_nodes_share_transactions(storage, profile):
    nodes = [await storage.pubsub.set_pubsub_node(profile, SERVICE, f"n{n}")
             for n in range(5)]
    before = storage.timings["cache_pubsub_items"].calls if (
        "cache_pubsub_items" in storage.timings) else 0
    written = await defer.gatherResults([
        storage.pubsub.cache_pubsub_items(node.id, [item(f"{node.name}-{i}")
                                                    for i in range(3)])
        for node in nodes])
    assert written == [3] * 5
    # the first one alone, the four others queued meanwhile in one transaction
    assert storage.timings["cache_pubsub_items"].calls - before == 2
    for node in nodes:
        assert set(await stored(storage, node.id)) == {f"{node.name}-{i}" for i in range(3)}


@pytest_twisted.ensureDeferred
async def test_writes_of_one_node_in_one_transaction_keep_their_order(storage, profile):
    node = await storage.pubsub.set_pubsub_node(profile, SERVICE, "blog")
    other = await storage.pubsub.set_pubsub_node(profile, SERVICE, "other")
    await defer.gatherResults([
        storage.pubsub.cache_pubsub_items(other.id, [item("o")]),
        storage.pubsub.cache_pubsub_items(node.id, [item("a", "<v1/>")]),
        storage.pubsub.cache_pubsub_items(node.id, [item("a", "<v2/>"), item("b")]),
        storage.pubsub.cache_pubsub_items(node.id, [item("a", "<v3/>")]),
    ])
    assert await stored(storage, node.id) == {"a": "<v3/>", "b": "<item id='b'/>"}


@pytest_twisted.ensureDeferred
async def test_a_write_to_a_deleted_node_fails_alone(storage, profile):
    """A node deleted while its items waited to be written: that write fails, with
    nothing of it stored, and the writes sharing its transaction are stored."""
    nodes = [await storage.pubsub.set_pubsub_node(profile, SERVICE, f"n{n}")
             for n in range(3)]
    gone = await storage.pubsub.set_pubsub_node(profile, SERVICE, "gone")
    await storage.pubsub.delete_pubsub_nodes(names=["gone"])
    writes = [storage.pubsub.cache_pubsub_items(nodes[0].id, [item("first")]),
              storage.pubsub.cache_pubsub_items(nodes[1].id, [item("x")]),
              storage.pubsub.cache_pubsub_items(gone.id, [item("lost")]),
              storage.pubsub.cache_pubsub_items(nodes[2].id, [item("y")],
                                                count_progress=True),
              storage.pubsub.cache_pubsub_items(gone.id, [item("counted")],
                                                count_progress=True)]
    results = await defer.DeferredList(writes, consumeErrors=True)
    assert [ok for ok, __ in results] == [True, True, False, True, False]
    # the foreign key refuses them (before the progress of the missing node is counted)
    assert results[2][1].check(IntegrityError) and results[4][1].check(IntegrityError)
    assert set(await stored(storage, nodes[1].id)) == {"x"}
    assert set(await stored(storage, nodes[2].id)) == {"y"}
    node = await storage.pubsub.get_pubsub_node(profile, SERVICE, "n2")
    assert node.sync_items_done == 1
    assert (await storage.pubsub.get_items(gone.id))[1].count == 0


@pytest_twisted.ensureDeferred
async def test_a_node_in_memory_stays_through_writes_of_its_items_only(storage, profile):
    """Items written don't change node rows: a node read before is still given from
    memory; a write counting a synchronisation's progress changes it, and is seen."""
    node = await storage.pubsub.set_pubsub_node(profile, SERVICE, "blog")
    await storage.pubsub.get_pubsub_node(profile, SERVICE, "blog")
    reads = storage.timings["get_pubsub_node"].calls
    await storage.pubsub.cache_pubsub_items(node.id, [item("a")])
    await storage.pubsub.delete_pubsub_items(node.id, ["a"])
    again = await storage.pubsub.get_pubsub_node(profile, SERVICE, "blog")
    assert storage.timings["get_pubsub_node"].calls == reads
    assert again.sync_items_done == 0
    await storage.pubsub.cache_pubsub_items(node.id, [item("b")], count_progress=True)
    counted = await storage.pubsub.get_pubsub_node(profile, SERVICE, "blog")
    assert storage.timings["get_pubsub_node"].calls == reads + 1
    assert counted.sync_items_done == 1
    # asked so, the database is read whatever is remembered
    fresh = await storage.pubsub.get_pubsub_node(profile, SERVICE, "blog",
                                                 from_memory=False)
    assert storage.timings["get_pubsub_node"].calls == reads + 2
    assert fresh.sync_items_done == 1
