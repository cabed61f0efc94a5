"""Pubsub cache against services that contradict themselves.

A node is completed only when what the synchronisation fetched is consistent with
everything the service said; otherwise it is not served, and its state says why.  The
check after a connection holds the service to the same rules.
"""

import pytest
import pytest_twisted

from libervia.backend.plugins.pubsub_cache import node_traits
from tests.unit.plugins.cache_env import BLOG, Env, assert_cache_is_service
from tests.unit.plugins.fake_pubsub import (
    FakePubsubService,
    LyingService,
    SilentComponent,
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
