"""Pubsub cache: the creation and modification times of cached items, across
synchronisations, and the order they give.

A synchronisation done again must not reset the times: each item keeps its first-seen
creation time (and its modification time unless its content changed), items first
seen by a synchronisation take the dates their payload gives, and items of equal
times come in the service's order, never in the order of their ids as text.  Checked
differentially: sync, change the service behind the cache's back, sync again, compare
the times and the order with the service's.  On a real Storage (SQLite, and
PostgreSQL when available), against the three fake services.
"""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_twisted

from libervia.backend.plugins.pubsub_cache import node_traits
from tests.unit.plugins.cache_env import (
    BLOG,
    SERVICE,
    Env,
    assert_cache_is_service,
    bridge_method,
)
from tests.unit.plugins.fake_pubsub import NS_ATOM, FakePubsubService


async def _times(env: Env) -> dict[str, tuple[datetime, datetime]]:
    return {row.name: (row.created, row.updated) for row in await env.cached_rows()}


async def _search(env: Env, **query: Any) -> list[dict[str, Any]]:
    result = await bridge_method(env.cache, "search")("alice", {"limit": 500, **query})
    return result["items"]


async def _resync(env: Env) -> None:
    state = await bridge_method(env.cache, "sync")("alice", SERVICE.full(), BLOG)
    assert state["state"] == "completed"


@pytest_twisted.ensureDeferred
async def test_a_resync_keeps_first_seen_times_and_the_service_order(env):
    env.service.create(BLOG)
    for n in range(1, 201):
        env.service.publish(BLOG, f"n{n}")
    await env.get()
    await env.cache.wait_background()
    first = await _times(env)
    assert len(first) == 200
    # first seen together: the service's order decides, not the ids as text
    newest_first = [hit["id"] for hit in await _search(env)]
    assert newest_first == [f"n{n}" for n in range(200, 0, -1)]
    assert {hit["created"] for hit in await _search(env)} == {
        first["n1"][0].isoformat()}

    # behind the cache's back (no event): an edit, a retraction, a new item
    env.service.publish(BLOG, "n5", "<entry xmlns='http://www.w3.org/2005/Atom'>"
                        "<title>edited</title></entry>")
    env.service.retract(BLOG, ["n7"])
    env.service.publish(BLOG, "n201")
    before = datetime.now(UTC)
    await _resync(env)
    second = await _times(env)
    assert set(second) == set(first) - {"n7"} | {"n201"}
    for name, (created, updated) in second.items():
        if name == "n201":
            assert created == updated and before <= created
            assert created > max(c for c, __ in first.values())
        elif name == "n5":
            assert created == first[name][0] and updated >= before
        else:
            assert (created, updated) == first[name], name
    # answers and searches follow the service's order, times as they were
    traits = node_traits(await env.node())
    pubsub_node = await env.node()
    rows, __ = await env.storage.pubsub.get_items(pubsub_node.id,
                                                  order_by=traits.item_order)
    assert [r.name for r in rows] == env.service.ids(BLOG)
    await assert_cache_is_service(env)
    hits = await _search(env)
    assert [hit["id"] for hit in hits] == env.service.ids(BLOG)[::-1]
    assert all(hit["created"] == second[hit["id"]][0].isoformat() for hit in hits)
    by_update = await _search(env, order=[["updated", "desc"]])
    assert [hit["id"] for hit in by_update][:2] == ["n201", "n5"]

    # again, nothing changed: nothing moves
    await _resync(env)
    assert await _times(env) == second


def _dated_entry(item_id: str, published: str | None = None,
                 updated: str | None = None) -> str:
    dates = "".join(f"<{tag}>{value}</{tag}>" for tag, value in (
        ("published", published), ("updated", updated)) if value is not None)
    return (f"<entry xmlns='{NS_ATOM}'><title>{item_id}</title>{dates}"
            f"<content>Text of {item_id}</content></entry>")


def _dates_parser(client: Any, item: Any, service: Any, node: str) -> Any:
    """Dates as they are written in the entry, whatever they are (hostile ones too)."""
    entry = item.entry
    if entry.title and str(entry.title) == "not-a-dict":
        return ["published", "2024-01-01"]
    if entry.title and str(entry.title) == "number":
        return {"published": 5, "updated": {"a": 1}}
    return {tag: str(element) for tag in ("published", "updated")
            if (element := next(entry.elements(NS_ATOM, tag), None)) is not None}


DATED_ANALYSER = {"name": "dated", "type": "blog", "node": BLOG, "namespace": NS_ATOM,
                  "to_sync": True, "parser": _dates_parser}


@pytest.mark.parametrize("kind", ["ejabberd", "prosody"])
@pytest_twisted.ensureDeferred
async def test_items_first_seen_by_a_sync_take_the_dates_their_payload_gives(storage,
                                                                             kind):
    env = Env(storage, FakePubsubService(kind), analysers=(DATED_ANALYSER,))
    env.service.create(BLOG)
    entries = [
        ("a", "2024-01-01T10:00:00Z", "2024-01-02T10:00:00+02:00"),
        ("b", "2024-01-01T10:00:00Z", None),  # same date as a: the service's order
        ("c", "2024-01-03T00:00:00", None),   # no zone: UTC
        ("d", None, None),                    # no date: first seen
        ("future", "9999-01-01T00:00:00Z", None),
        ("words", "yesterday", "soon"),
        ("edge", "0001-01-01T00:00:00+01:00", "2024-13-45T00:00:00Z"),
        ("not-a-dict", None, None),
        ("number", None, None),
        ("backdated", "2020-01-01T00:00:00Z", "2020-01-01T00:00:00Z"),
    ]
    for item_id, published, updated in entries:
        env.service.publish(BLOG, item_id, _dated_entry(item_id, published, updated))
    before = datetime.now(UTC)
    await env.get()
    await env.cache.wait_background()
    assert await env.state() == "completed"
    times = await _times(env)
    day = datetime(2024, 1, 1, 10, tzinfo=UTC)
    assert times["a"] == (day, day + timedelta(hours=22))
    # (Prosody orders by modification: b's can't be before a's, which it follows)
    assert times["b"] == (day, day if kind == "ejabberd" else day + timedelta(hours=22))
    assert times["c"] == (datetime(2024, 1, 3, tzinfo=UTC),) * 2
    seen = times["d"][0]
    assert before <= seen <= datetime.now(UTC) and times["d"] == (seen, seen)
    for name in ("future", "words", "edge", "not-a-dict", "number"):
        assert times[name] == (seen, seen), name
    order_key = 0 if kind == "ejabberd" else 1
    # dated before the items the service gives before it: not before them
    assert times["backdated"][order_key] == seen
    # the service's order is kept, and search shows those dates
    await assert_cache_is_service(env)
    hits = {hit["id"]: hit for hit in await _search(env)}
    assert hits["a"]["created"] == day.isoformat()
    assert hits["a"]["updated"] == (day + timedelta(hours=22)).isoformat()
    # (Prosody does not order by creation: the backdated item keeps its date there)
    oldest = (["backdated"] if kind == "prosody" else []) + ["a", "b", "c"]
    assert [hit["id"] for hit in await _search(env, order=["created"])][:3] == oldest[:3]
    # a resync changes none of them
    await _resync(env)
    assert await _times(env) == times
