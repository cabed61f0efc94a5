"""Pubsub cache against services that contradict themselves.

A node is completed only when what the synchronisation fetched is consistent with
everything the service said; otherwise it is not served, and its state says why.  The
check after a connection holds the service to the same rules.
"""

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from libervia.backend.plugins.pubsub_cache import node_traits
from tests.unit.plugins.cache_env import BLOG, SERVICE, Env, assert_cache_is_service
from tests.unit.plugins.fake_pubsub import (
    FakePubsubService,
    LyingService,
    SilentComponent,
    is_page_request,
)

SETTINGS = {"page_size": 5}


async def sync_state(env: Env) -> dict:
    env.fill()
    assert (await env.get()).cached is False
    await env.cache.wait_background()
    return env.cache.node_state(await env.node())


@pytest.mark.parametrize(("lie", "reason"), [
    ("count_low", "announced 5 items in 'urn:xmpp:microblog:0' and gave 12"),
    ("count_zero", "announced 0 items"),
    ("ignores_after", "answered the same items"),
    ("cursor_back", "pages go backwards"),
    ("repeat_other", "came twice with two different payloads"),
    ("repeat_inside", "came twice with two different payloads"),
])
@pytest_twisted.ensureDeferred
async def test_a_node_a_service_contradicts_is_never_completed(storage, lie, reason):
    env = Env(storage, LyingService(lie), settings=SETTINGS)
    state = await sync_state(env)
    assert state["state"] == "error" and reason in state["error"]
    # never served: every answer comes from the service
    assert (await env.get()).cached is False
    assert (await env.get(max_items=2)).cached is False


@pytest_twisted.ensureDeferred
async def test_a_contradiction_is_fetched_again_before_the_node_is_given_up(storage):
    """A node changing during a fetch can make an honest service look inconsistent:
    the node is fetched a second time before it is given up."""
    env = Env(storage, LyingService("count_low"), settings=SETTINGS)
    await sync_state(env)
    page_requests = [r for r in env.service.items_requests if not r.getAttribute(
        "max_items") and not list(r.elements())]
    # 3 pages, twice (the answer to the first get-items is not a page request)
    assert len(page_requests) == 3 * 2 + 1


@pytest.mark.parametrize("lie", ["no_set", "repeat_same"])
@pytest_twisted.ensureDeferred
async def test_answers_that_can_be_made_whole_complete_the_node_exactly(storage, lie):
    """A service honouring max without saying it paged is asked again without paging;
    an id repeated with the same payload keeps its first copy and place."""
    env = Env(storage, LyingService(lie), settings=SETTINGS)
    state = await sync_state(env)
    assert state["state"] == "completed" and state["items_done"] == 12
    rows = await env.cached_rows()
    assert sorted(r.name for r in rows) == env.service.ids(BLOG)
    assert [i["id"] for i in (await env.get()).items] == env.service.ids(BLOG)


@pytest.mark.parametrize("lie", ["count_low", "ignores_after", "repeat_other"])
@pytest_twisted.ensureDeferred
async def test_the_check_after_a_connection_catches_a_service_turned_liar(storage, lie):
    honest = FakePubsubService("ejabberd")
    env = Env(storage, honest, settings=SETTINGS)
    await sync_state(env)
    await assert_cache_is_service(env)
    await env.cache.profile_disconnected(env.client)
    # the same service, now lying, while the profile was away
    liar = LyingService(lie)
    liar.nodes, liar._seq = honest.nodes, honest._seq
    restarted = Env(storage, liar, settings=SETTINGS)
    await restarted.cache.profile_connected(restarted.client)
    await restarted.cache.wait_background()
    state = restarted.cache.node_state(await restarted.node())
    assert state["state"] == "error" and state["error"]
    assert (await restarted.get()).cached is False


@pytest_twisted.ensureDeferred
async def test_a_component_gets_its_own_traits_never_its_hosts(storage):
    """A component that answers no software version, on a server that says it runs
    Prosody, is not taken for Prosody (ids in request order, re-published items
    moving...): its traits come from its own answers."""
    env = Env(storage, SilentComponent(), settings=SETTINGS)
    state = await sync_state(env)
    assert state["state"] == "completed"
    traits = node_traits(await env.node())
    assert traits.software is None
    assert not (traits.republish_moves or traits.ids_in_request_order
                or traits.silent_trim)
    assert traits.rsm is True
    await assert_cache_is_service(env)


def slow_service(env: Env, nodes: tuple[str, ...]) -> FakePubsubService:
    """A second service, whose page answers are held until ``env.client.release()``."""
    slow = FakePubsubService("ejabberd", "slow.example.org")
    env.client.services[slow.jid.full()] = slow
    for node in nodes:
        slow.create(node)
        for n in range(12):
            slow.publish(node, f"s{n:02}")
    env.client.hold(lambda iq: iq.getAttribute("to") == slow.jid.full()
                    and is_page_request(iq))
    return slow


@pytest_twisted.ensureDeferred
async def test_a_slow_service_holds_one_sync_slot_at_most(storage):
    """Two nodes of a service answering slowly can't take both sync slots: the nodes
    of other services are synchronised meanwhile."""
    env = Env(storage, FakePubsubService("ejabberd"), settings=SETTINGS)
    nodes = (BLOG, f"{BLOG}:comments/first")
    slow = slow_service(env, nodes)
    env.fill()
    slow_syncs = [defer.ensureDeferred(env.cache.synchronise(env.client, slow.jid, node))
                  for node in nodes]
    await env.client.wait_held()
    honest = defer.ensureDeferred(env.cache.synchronise(env.client, SERVICE, BLOG))
    state = await honest.addTimeout(10, reactor)  # a safety net: it must not wait
    assert state["state"] == "completed" and state["items_done"] == 12
    assert not any(d.called for d in slow_syncs)
    env.client.release()
    for d in slow_syncs:
        assert (await d)["state"] == "completed"


@pytest_twisted.ensureDeferred
async def test_a_service_slower_than_sync_timeout_is_not_cached(storage):
    env = Env(storage, FakePubsubService("ejabberd"),
              settings=SETTINGS | {"sync_timeout": 30})
    slow = slow_service(env, (BLOG,))
    sync = defer.ensureDeferred(env.cache.synchronise(env.client, slow.jid, BLOG))
    await env.client.wait_held()
    # the held page is asked just before the time-out is set: let the sync go on
    await task.deferLater(reactor, 0, lambda: None)
    env.host.reactor.advance(30)
    state = await sync
    assert state["state"] == "error" and "sync_timeout" in state["error"]
    env.client.release()  # the late answer changes nothing
    await env.cache.wait_background()
    pubsub_node = await env.storage.pubsub.get_pubsub_node("alice", slow.jid.full(), BLOG)
    assert env.cache.node_state(pubsub_node)["state"] == "error"
