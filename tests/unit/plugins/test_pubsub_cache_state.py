"""Pubsub cache: what ``cache_node_state`` and ``cache_get`` tell of a node, while the
profile is connected and while it is not; a request the service refuses leaves
nothing behind; the counts of a node follow its events.

The cache runs on a real Storage (SQLite, and PostgreSQL when available) and talks to
fake pubsub services (``fake_pubsub``).
"""

import pytest
import pytest_twisted

from libervia.backend.core.exceptions import NotFound
from libervia.backend.core.xml_tools import parse_xml
from libervia.backend.plugins.pubsub_cache import CacheError
from libervia.backend.plugins.xep_0060 import InvalidRequest, ItemNotFound, PubsubError
from libervia.backend.xmpp.profiles import ProfileError
from tests.unit.plugins.cache_env import (
    BLOG,
    BLOG_ANALYSER,
    SERVICE,
    Env,
    bridge_method,
)
from tests.unit.plugins.fake_pubsub import FakePubsubService, is_page_request


async def _state(env: Env, node: str = BLOG, service: str | None = SERVICE.full(),
                 profile: str = "alice") -> dict:
    return await bridge_method(env.cache, "node_state")(profile, service, node)


async def _cache_get(env: Env, node: str = BLOG, service: str | None = SERVICE.full(),
                     **kwargs) -> dict:
    return await bridge_method(env.cache, "get")("alice", service, node, **kwargs)


async def _disconnect(env: Env) -> None:
    """The profile disconnects: its client is gone, the cache is told."""
    del env.host.clients.clients[env.client.profile.name]
    await env.cache.profile_disconnected(env.client)


def _ids(answer: dict) -> list[str]:
    return [parse_xml(item)["id"] for item in answer["items"]]


# reading the cache while the profile is disconnected


@pytest_twisted.ensureDeferred
async def test_a_disconnected_profile_reads_its_cache_with_the_node_freshness(env):
    await env.sync()
    live = await _state(env)
    assert (live["state"], live["freshness"], live["served"]) == ("completed", "live", True)
    assert live["items"] == 12
    connected = await _cache_get(env, max_items=3)
    assert connected["metadata"]["freshness"] == "live"

    await _disconnect(env)
    offline = await _state(env)
    assert (offline["state"], offline["freshness"], offline["served"]) == (
        "completed", "offline", False)
    assert offline["items"] == 12 and offline["analyser"] == "test_blog"
    assert offline["since"] == live["since"]
    answer = await _cache_get(env, max_items=3)
    assert answer["items"] == connected["items"]
    assert answer["metadata"]["cached"] is True
    assert answer["metadata"]["freshness"] == "offline"
    by_id = await _cache_get(env, item_ids=["i04", "i02"])
    assert sorted(_ids(by_id)) == ["i02", "i04"]
    # nothing was asked to the service, which could not have been
    sent = len(env.client.sent)
    await _cache_get(env)
    assert len(env.client.sent) == sent

    # connected again: readable at once, but not live until checked
    env.client.xmlstream = object()
    env.host.clients.clients["alice"] = env.client
    assert (await _state(env))["freshness"] == "unchecked"
    assert (await _cache_get(env, max_items=1))["metadata"]["freshness"] == "unchecked"
    await env.cache.profile_connected(env.client)
    await env.cache.wait_background()
    assert (await _state(env))["freshness"] == "live"


@pytest_twisted.ensureDeferred
async def test_offline_reads_of_the_profile_own_account_use_its_stored_jid(storage):
    pep = FakePubsubService("prosody", jid="alice@example.org")
    env = Env(storage, pep)
    await storage.profiles.set_param("connection", "jid", "alice@example.org/home",
                                     "alice")
    pep.create(BLOG)
    for n in range(3):
        pep.publish(BLOG, f"p{n}")
    await env.xep_0060.get_items(env.client, None, BLOG)
    await env.cache.wait_background()
    await _disconnect(env)
    state = await _state(env, service=None)
    assert (state["service"], state["state"], state["freshness"]) == (
        "alice@example.org", "completed", "offline")
    assert _ids(await _cache_get(env, service=None)) == ["p0", "p1", "p2"]
    assert _ids(await _cache_get(env, service="")) == ["p0", "p1", "p2"]


@pytest_twisted.ensureDeferred
async def test_offline_reads_refuse_what_they_refuse_connected(env):
    await env.sync()
    env.service.create("status")
    await _disconnect(env)
    # a profile that does not exist, and a name no profile can have
    with pytest.raises(NotFound, match="no profile named 'nobody'"):
        await _state(env, profile="nobody")
    with pytest.raises(NotFound, match="no profile named 'nobody'"):
        await bridge_method(env.cache, "get")("nobody", SERVICE.full(), BLOG)
    with pytest.raises(ProfileError, match="invalid profile name"):
        await bridge_method(env.cache, "get")("../x", SERVICE.full(), BLOG)
    # a profile whose JID is not stored has no own account to read
    with pytest.raises(NotFound, match="has no JID"):
        await _state(env, service=None)
    for bad in ({"service": "@"}, {"node": ""}, {"node": "a\x00b"}):
        with pytest.raises(InvalidRequest):
            await _cache_get(env, **bad)
    with pytest.raises(InvalidRequest):
        await _cache_get(env, rsm={"max": -1})
    with pytest.raises(NotFound, match="not in the cache"):
        await _cache_get(env, node="status")
    # and the profile is not wedged: the next normal read is answered
    assert len((await _cache_get(env))["items"]) == 12


@pytest_twisted.ensureDeferred
async def test_a_node_not_synchronised_is_read_neither_connected_nor_offline(storage):
    env = Env(storage, FakePubsubService("ejabberd"), analysers=(
        BLOG_ANALYSER, {"name": "status", "type": "status", "node": "status",
                        "to_sync": False}))
    env.fill("status", 2)
    await env.get("status")
    await env.cache.wait_background()
    for connected in (True, False):
        state = await _state(env, node="status")
        assert (state["state"], state["freshness"], state["served"]) == (
            "no_sync", None, False)
        with pytest.raises(CacheError, match="not synchronised"):
            await _cache_get(env, node="status")
        if connected:
            await _disconnect(env)


# a request the service refuses leaves nothing in the cache


@pytest.mark.parametrize("refusal", ["item-not-found", "forbidden"])
@pytest.mark.parametrize("node", ["unknown_node", BLOG])
@pytest_twisted.ensureDeferred
async def test_a_refused_get_leaves_the_node_as_unknown_as_one_never_asked_for(
    storage, refusal, node
):
    service = FakePubsubService("ejabberd")
    env = Env(storage, service)
    if refusal == "forbidden":
        env.fill(node, 3)
        service.nodes[node].private = True
    with pytest.raises(ItemNotFound if refusal == "item-not-found" else PubsubError,
                       match=refusal.replace("-", ".") if refusal == "forbidden"
                       else "not found"):
        await env.get(node)
    await env.cache.wait_background()
    assert await env.node(node) is None
    stats = await bridge_method(env.cache, "stats")("alice")
    assert (stats["nodes"], stats["nodes_by_state"], stats["items"]) == (0, {}, 0)
    # the same error, word for word, as for a profile that never asked for it
    bob = Env(storage, service, "bob")
    with pytest.raises(NotFound) as never_asked:
        await _state(bob, node=node, profile="bob")
    with pytest.raises(NotFound) as refused:
        await _state(env, node=node)
    assert str(refused.value) == str(never_asked.value)
    assert "not in the cache" in str(refused.value)
    # once the node can be read, it is analysed as a new one
    if refusal == "forbidden":
        service.nodes[node].private = False
    else:
        env.fill(node, 3)
    assert len((await env.get(node)).items) == 3
    await env.cache.wait_background()
    assert await env.state(node) == ("completed" if node == BLOG else "no_sync")


@pytest.mark.parametrize("refusal", ["item-not-found", "forbidden"])
@pytest_twisted.ensureDeferred
async def test_a_sync_of_a_node_the_service_refuses_records_nothing(storage, refusal):
    env = Env(storage, FakePubsubService("ejabberd"))
    if refusal == "forbidden":
        env.fill(BLOG, 2)
        env.service.nodes[BLOG].private = True
    with pytest.raises(PubsubError, match="not found" if refusal == "item-not-found"
                       else "forbidden"):
        await bridge_method(env.cache, "sync")("alice", SERVICE.full(), BLOG)
    assert await env.node() is None
    assert (await bridge_method(env.cache, "stats")("alice"))["nodes"] == 0


@pytest_twisted.ensureDeferred
async def test_a_node_gone_when_its_sync_subscribes_is_forgotten_not_in_error(storage):
    env = Env(storage, FakePubsubService("ejabberd"))
    env.fill(BLOG, 2)
    # the service lets the node be read, then deletes it before the subscription
    original = env.client.request

    def request(iq_request):
        iq = iq_request.toElement()
        if iq.pubsub is not None and iq.pubsub.subscribe is not None:
            env.service.nodes.pop(BLOG, None)
        return original(iq_request)

    env.client.request = request
    with pytest.raises(NotFound, match="does not exist any more"):
        await bridge_method(env.cache, "sync")("alice", SERVICE.full(), BLOG)
    assert await env.node() is None


# counts that follow the events


@pytest_twisted.ensureDeferred
async def test_state_counts_follow_items_added_retracted_and_purged_by_events(env):
    await env.sync(count=1)
    state = await _state(env)
    assert (state["items"], state["items_done"], state["items_expected"]) == (1, 1, 1)
    await env.event(env.service.publish(BLOG, "second"))
    state = await _state(env)
    assert (state["items"], state["items_done"], state["items_expected"]) == (2, 2, 2)
    await env.event(env.service.publish(BLOG, "i00", with_payload=False))  # an edit
    await env.event(env.service.publish(BLOG, "third"))
    assert (await _state(env))["items"] == 3
    await env.event(env.service.retract(BLOG, ["i00", "third"]))
    state = await _state(env)
    assert (state["items"], state["items_done"], state["items_expected"]) == (1, 1, 1)
    await env.event(env.service.purge(BLOG))
    state = await _state(env)
    assert (state["state"], state["items"], state["items_done"]) == ("completed", 0, 0)
    stats = await bridge_method(env.cache, "stats")("alice")
    assert (stats["nodes"], stats["items"]) == (1, 0)
    # a forced sync answers with the same description
    env.service.publish(BLOG, "after")
    synced = await bridge_method(env.cache, "sync")("alice", SERVICE.full(), BLOG)
    assert (synced["items"], synced["items_done"], synced["freshness"]) == (1, 1, "live")


@pytest_twisted.ensureDeferred
async def test_a_sync_in_progress_shows_its_progress_not_the_items_held(storage):
    env = Env(storage, FakePubsubService("ejabberd"), settings={"page_size": 5})
    env.fill()
    pages = []
    # held at its second page
    env.client.hold(lambda iq: is_page_request(iq) and pages.append(iq) is None
                    and len(pages) == 2)
    await env.get()
    await env.client.wait_held()
    state = await _state(env)
    assert (state["state"], state["items_done"], state["items_expected"]) == (
        "in_progress", 5, 12)
    assert (state["items"], state["freshness"]) == (0, None)
    env.client.release()
    await env.cache.wait_background()
    assert (await _state(env))["items"] == 12

