"""The pubsub cache against the private Prosody and ejabberd, on SQLite and PostgreSQL.

An independent client (slixmpp, in a thread with its own event loop) creates a blog
node on the server's pubsub service and publishes, retracts, purges and deletes; a real
backend (plugins PRESENCE, XEP-0030, XEP-0059, XEP-0060, XEP-0092, PUBSUB_CACHE and
XEP-0277) has a profile reading that node.  The cache must end up holding what the
service holds, and answer the main get-items requests exactly as the service does.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure

from libervia.backend.core.exceptions import NotConnected
from libervia.backend.plugins.plugin_xep_0059 import RSMRequest

pytest.importorskip("slixmpp")

from tests.pubsub_support import (  # noqa: E402 - only once slixmpp is known there
    BackendFactory,
    Publisher,
    Reader,
    new_node,
    until,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def make_backend(tmp_path, db_url):
    """``make_backend()``: a started Backend with the cache plugins (same database).

    Those still running at the end of the test are stopped.
    """
    factory = BackendFactory(tmp_path / "local", db_url)
    yield factory
    pytest_twisted.blockon(factory.close())


async def assert_answers_like_the_service(reader: Reader, ids: list[str]) -> None:
    """The main get-items requests: same items (same XML) from the cache and service."""
    requests = [{}, {"max_items": 5}, {"item_ids": ids[3:6]},
                {"rsm_request": RSMRequest(max=7)},
                {"rsm_request": RSMRequest(max=7, index=4)},
                {"rsm_request": RSMRequest(max=5, before="")}]
    for kwargs in requests:
        cached = await reader.get(**kwargs)
        remote = await reader.get(use_cache=False, **kwargs)
        assert cached.cached is True, kwargs
        assert [i.toXml() for i in cached.items] == [i.toXml() for i in remote.items], (
            kwargs)
        for key in ("count", "index"):
            assert cached.rsm.get(key) == remote.rsm.get(key), (kwargs, key)
    # RSM paging with the cache's own cursors goes through the node, as the service's
    first = await reader.get(rsm_request=RSMRequest(max=7))
    if "last" in first.rsm:
        second = await reader.get(rsm_request=RSMRequest(max=7, after=first.rsm["last"]))
        assert second.cached
        assert [i["id"] for i in first.items + second.items] == ids[:14]


@pytest_twisted.ensureDeferred
async def test_cache_mirrors_a_node_published_by_another_client(xmpp_server, make_backend):
    node = new_node()
    publisher = Publisher(xmpp_server)
    ids = [f"post{n:03}" for n in range(45)]
    await publisher.create(node, ids)
    backend = await make_backend()
    reader = await Reader.connect(backend, xmpp_server, node)
    first = await reader.get()
    assert first.cached is False and len(first.items) == 45
    await reader.wait_synchronised()
    pubsub_node = await reader.pubsub_node()
    assert (pubsub_node.analyser, pubsub_node.type_) == ("XEP-0277", "blog")
    assert await reader.mirrors_service()
    await assert_answers_like_the_service(reader, ids)
    items, __ = await backend.storage.pubsub.get_items(pubsub_node.id, item_ids=["post007"],
                                                       details=True)
    assert items[0].parsed["title"] == "Post post007"
    assert items[0].parsed["author"]["jid"] == "admin@localhost"

    # new items and a re-published one arrive through events
    await publisher.publish(node, [("late1", None), ("late2", None),
                                   ("post010", "Edited title")])
    await until(reader.mirrors_service, "new and edited items in the cache")
    node_id = pubsub_node.id
    items, __ = await backend.storage.pubsub.get_items(node_id, item_ids=["post010"],
                                                       details=True)
    assert items[0].parsed["title"] == "Edited title"
    ids = [i["id"] for i in (await reader.get(use_cache=False)).items]
    await assert_answers_like_the_service(reader, ids)

    await publisher.retract(node, ["post000", "late1"])
    await until(reader.mirrors_service, "retracted items gone from the cache")
    await publisher.purge(node)
    await until(lambda: _empty(reader), "purged node empty in the cache")
    await publisher.publish(node, [("after_purge", None)])
    await until(reader.mirrors_service, "item published after the purge")
    await publisher.delete(node)
    await until(lambda: _gone(reader), "deleted node gone from the cache")


async def _empty(reader: Reader) -> bool:
    return await reader.state() == "completed" and await reader.cached() == []


async def _gone(reader: Reader) -> bool:
    return await reader.pubsub_node() is None


@pytest_twisted.ensureDeferred
async def test_restart_during_a_sync_ends_complete_without_duplicates(xmpp_server,
                                                                      make_backend):
    node = new_node()
    publisher = Publisher(xmpp_server)
    count = 150
    await publisher.create(node, [f"post{n:03}" for n in range(count)])
    backend = await make_backend()
    reader = await Reader.connect(backend, xmpp_server, node)
    # the backend stops while the synchronisation waits for a page: the second one
    # (ejabberd pages), or the only one (Prosody answers everything at once)
    xep_0060 = backend.plugins["XEP-0060"]
    original = xep_0060.get_items_from_service
    pages = []
    stopping: list[defer.Deferred] = []
    lost: defer.Deferred = defer.Deferred()

    async def get_items_from_service(client, service, node, max_items=None,
                                     item_ids=None, rsm_request=None, order_by=None):
        if rsm_request is not None:
            pages.append(rsm_request)
            if len(pages) == (1 if xmpp_server.kind == "prosody" else 2):
                stopping.append(backend.stopService())
                await lost  # the answer is lost with the connection
        return await original(client, service, node, max_items, item_ids, rsm_request,
                              order_by)

    xep_0060.get_items_from_service = get_items_from_service
    await reader.get()
    await until(lambda: defer.succeed(bool(stopping)), "the synchronisation to start")
    await stopping[0]
    # the node changes while the backend is stopped
    await publisher.publish(node, [("while_stopped", None)])
    await publisher.retract(node, ["post003"])

    restarted = await make_backend()
    left = await restarted.storage.pubsub.get_pubsub_node(reader.name, xmpp_server.pubsub_service,
                                                          node)
    assert reader.cache.node_state(left)["state"] == "in_progress"
    again = await Reader.connect(restarted, xmpp_server, node, name=reader.name)
    await again.wait_synchronised()
    names = [name for name, __ in await again.cached()]
    assert len(names) == len(set(names)) == count
    assert await again.mirrors_service()
    assert (await again.get()).cached is True
    # let the first backend's abandoned synchronisation end
    lost.errback(ConnectionLost("backend stopped"))


@pytest_twisted.ensureDeferred
async def test_items_dropped_beyond_max_items_leave_the_cache(xmpp_server, make_backend):
    """ejabberd notifies the items it drops, Prosody does not: both are mirrored."""
    node = new_node()
    publisher = Publisher(xmpp_server)
    await publisher.create(node, [f"post{n}" for n in range(5)], max_items=5)
    backend = await make_backend()
    reader = await Reader.connect(backend, xmpp_server, node)
    await reader.get()
    await reader.wait_synchronised()
    await publisher.publish(node, [("more1", None), ("more2", None)])
    await until(reader.mirrors_service, "dropped items gone from the cache")
    assert [name for name, __ in await reader.cached()] == [
        "more1", "more2", "post2", "post3", "post4"]


@pytest_twisted.ensureDeferred
async def test_changes_made_while_stopped_are_found_after_reconnection(xmpp_server,
                                                                       make_backend):
    node = new_node()
    publisher = Publisher(xmpp_server)
    await publisher.create(node, [f"post{n:02}" for n in range(20)])
    backend = await make_backend()
    reader = await Reader.connect(backend, xmpp_server, node)
    await reader.get()
    await reader.wait_synchronised()
    await backend.stopService()
    # events sent meanwhile are lost: the cache must find out by itself
    await publisher.publish(node, [("missed", None), ("post05", "Edited while away")])
    await publisher.retract(node, ["post00"])

    restarted = await make_backend()
    again = await Reader.connect(restarted, xmpp_server, node, name=reader.name)
    await until(lambda: _served_from_cache(again), "the node checked and served again")
    assert await again.mirrors_service()
    ids = [i["id"] for i in (await again.get(use_cache=False)).items]
    await assert_answers_like_the_service(again, ids)


async def _served_from_cache(reader: Reader) -> bool:
    return (await reader.get()).cached


@pytest_twisted.ensureDeferred
async def test_changes_missed_during_a_connection_drop_are_caught_up(xmpp_server,
                                                                     make_backend,
                                                                     monkeypatch):
    from libervia.backend.xmpp.client import ClientFactory

    # a long enough gap for the publisher to act while the profile is away
    monkeypatch.setattr(ClientFactory, "initialDelay", 4.0)
    monkeypatch.setattr(ClientFactory, "jitter", 0.0)
    node = new_node()
    publisher = Publisher(xmpp_server)
    await publisher.create(node, [f"post{n:02}" for n in range(15)])
    backend = await make_backend()
    reader = await Reader.connect(backend, xmpp_server, node)
    await reader.get()
    await reader.wait_synchronised()
    reader.client.xmlstream.transport.abortConnection()
    await publisher.publish(node, [("during_gap", None)])
    await publisher.retract(node, ["post01"])
    await until(lambda: defer.succeed(reader.backend.clients.is_connected(reader.name)),
                "the reconnection")
    # whether the server kept the notifications for the session or not, the cache
    # ends up equal to the service, and served again
    await until(reader.mirrors_service, "the cache caught up after the reconnection")
    await until(lambda: _served_from_cache(reader), "the node served again")


@pytest_twisted.ensureDeferred
async def test_the_cache_serves_nothing_while_the_link_to_the_server_is_cut(
        xmpp_server, make_backend, monkeypatch):
    """The link is lost without any disconnection asked (the profile reconnecting):
    from that moment the cache passes nothing off as the service's answer; once
    connected again and the node checked, it serves the service's new state."""
    from libervia.backend.xmpp.client import ClientFactory
    from libervia.backend.xmpp.profiles import ConnectionOptions
    from tests.relay import Relay

    monkeypatch.setattr(ClientFactory, "initialDelay", 0.5)
    monkeypatch.setattr(ClientFactory, "maxDelay", 1.0)
    monkeypatch.setattr(ClientFactory, "jitter", 0.0)
    node = new_node()
    publisher = Publisher(xmpp_server)
    await publisher.create(node, [f"post{n:02}" for n in range(12)])
    relay = await Relay.start(xmpp_server.c2s_port)
    try:
        backend = await make_backend()
        user = xmpp_server.user(0)
        await backend.profiles.create("cut", user.jid, user.password, ConnectionOptions(
            host="127.0.0.1", port=relay.port, ca_file=str(xmpp_server.ca_file)))
        reader = await Reader.connect(backend, xmpp_server, node, name="cut")
        await reader.get()
        await reader.wait_synchronised()
        await until(lambda: _served_from_cache(reader), "the node served")

        relay.cut()
        await until(lambda: defer.succeed(
            backend.clients.info("cut")["state"] == "reconnecting"), "the link lost")
        await publisher.publish(node, [("while_cut", None)])
        # asked during the outage: no answer from the cache
        during = defer.ensureDeferred(reader.xep_0060.get_items(
            backend.clients.get("cut"), reader.service, node))
        await task.deferLater(reactor, 1.5, lambda: None)
        # the request fails (the client is not connected); never the cache's old items
        assert during.called and isinstance(during.result, Failure), during.result
        assert during.result.check(NotConnected), during.result
        during.addErrback(lambda __: None)
        relay.restore()
        await until(lambda: _served_from_cache(reader), "the node checked and served")
        served = await reader.get()
        assert served.cached is True
        assert "while_cut" in [i["id"] for i in served.items]
        assert await reader.mirrors_service()
    finally:
        await relay.stop()


@pytest_twisted.ensureDeferred
async def test_a_node_of_a_service_announcing_a_wrong_count_is_never_served(
        prosody_server, make_backend):
    """A component of the server pages a blog with RSM but announces 25 items of 60:
    the cache does not take the node for complete (state error, with the reason), and
    every request goes to the service."""
    from twisted.words.protocols.jabber.jid import JID

    from tests import hostile_pubsub

    node = "urn:xmpp:microblog:0"
    liar = hostile_pubsub.LyingPubsub(node, count=60, announced=25)
    component = await hostile_pubsub.start(prosody_server._control, liar)
    try:
        backend = await make_backend()
        reader = await Reader.connect(backend, prosody_server, node)
        reader.service = JID(prosody_server._control.component_jid)
        first = await reader.get()
        assert first.cached is False and len(first.items) == 60
        await until(lambda: reader._is("error"), "the synchronisation given up")
        state = reader.cache.node_state(await reader.pubsub_node())
        assert "announced 25 items" in state["error"] and "gave 60" in state["error"]
        again = await reader.get()
        assert again.cached is False and len(again.items) == 60
    finally:
        await defer.maybeDeferred(component.stopService)


@pytest.mark.parametrize("bad_id", ["with\x01control", "lone \ud800 surrogate"])
@pytest_twisted.ensureDeferred
async def test_an_item_id_no_stanza_can_carry_is_refused_and_the_stream_stays_up(
        xmpp_server, make_backend, bad_id):
    """Sent, a control character would make the server close the stream: the request
    is refused before anything is sent, and the profile goes on working."""
    from libervia.backend.plugins.xep_0060 import InvalidRequest

    node = new_node()
    publisher = Publisher(xmpp_server)
    await publisher.create(node, ["a", "b"])
    backend = await make_backend()
    reader = await Reader.connect(backend, xmpp_server, node)
    stream = reader.client.xmlstream
    for call in (lambda: reader.xep_0060.retract_items(reader.client, reader.service,
                                                       node, ["a", bad_id]),
                 lambda: reader.get(item_ids=[bad_id])):
        with pytest.raises(InvalidRequest, match="item id"):
            await call()
    answer = await reader.get(use_cache=False)
    assert sorted(i["id"] for i in answer.items) == ["a", "b"]
    assert reader.client.is_connected and reader.client.xmlstream is stream


@pytest_twisted.ensureDeferred
async def test_search_finds_cached_items_by_parsed_field_and_by_full_text(xmpp_server,
                                                                         make_backend):
    node = new_node()
    publisher = Publisher(xmpp_server)
    await publisher.create(node, [])
    await publisher.publish(node, [("leeks1", "Cooking with leeks"),
                                   ("trip", "Mountain trip"),
                                   ("leeks2", "Leeks again, in a soup")])
    backend = await make_backend()
    reader = await Reader.connect(backend, xmpp_server, node)
    await reader.get()
    await reader.wait_synchronised()
    search = backend.bridge.methods["cache_search"].func

    # by a field the XEP-0277 parser extracted
    by_title = await search(reader.name, {
        "nodes": [node], "conditions": [["title", "==", "Mountain trip"]]})
    assert [i["id"] for i in by_title["items"]] == ["trip"]
    assert by_title["items"][0]["parsed"]["author"]["jid"] == "admin@localhost"

    # by full text, best match first, with the payload when asked
    by_text = await search(reader.name, {"nodes": [node], "fts": "leeks",
                                         "order": ["rank"], "payload": True})
    assert sorted(i["id"] for i in by_text["items"]) == ["leeks1", "leeks2"]
    assert all("<entry" in i["xml"] for i in by_text["items"])

    # an item published later is found once its event reached the cache
    await publisher.publish(node, [("leeks3", "Leeks for the third time")])
    await until(reader.mirrors_service, "the new item in the cache")
    later = await search(reader.name, {"nodes": [node], "fts": "leeks"})
    assert sorted(i["id"] for i in later["items"]) == ["leeks1", "leeks2", "leeks3"]
    assert later["total"] == 3

    # another profile of the same backend sees nothing of it
    other = await Reader.connect(backend, xmpp_server, node)
    assert (await search(other.name, {"fts": "leeks"}))["items"] == []


@pytest_twisted.ensureDeferred
async def test_a_resync_keeps_the_items_times_and_the_service_order(xmpp_server,
                                                                   make_backend):
    node = new_node()
    publisher = Publisher(xmpp_server)
    # ejabberd sends the last item again to a new subscriber, when it likes: a
    # notification the cache takes as a publication (new modification time), which
    # would race with the snapshot below
    config = ({"pubsub#send_last_published_item": "never"}
              if xmpp_server.kind == "ejabberd" else None)
    await publisher.create(node, [f"n{n}" for n in range(1, 201)], config=config)
    backend = await make_backend()
    reader = await Reader.connect(backend, xmpp_server, node)
    await reader.get()
    await reader.wait_synchronised()
    search = backend.bridge.methods["cache_search"].func
    sync = backend.bridge.methods["cache_sync"].func

    async def times() -> dict[str, tuple[str, str]]:
        found = await search(reader.name, {"nodes": [node], "limit": 500})
        return {hit["id"]: (hit["created"], hit["updated"]) for hit in found["items"]}

    async def newest_first() -> list[str]:
        # the default order: created, newest first
        found = await search(reader.name, {"nodes": [node], "limit": 500})
        return [hit["id"] for hit in found["items"]]

    async def service_order() -> list[str]:
        return [i["id"] for i in (await reader.get(use_cache=False)).items]

    # every entry says it was published at the same time: the service's order decides
    # between them, never the ids as text (n99 before n200)
    first = await times()
    assert len(first) == 200
    assert {created for created, __ in first.values()} == {"2024-03-01T10:00:00+00:00"}
    assert await newest_first() == [f"n{n}" for n in range(200, 0, -1)]

    # a forced sync of an unchanged node changes nothing
    state = await sync(reader.name, xmpp_server.pubsub_service, node)
    assert (state["state"], state["items"]) == ("completed", 200)
    assert await times() == first
    assert await newest_first() == (await service_order())[::-1]

    # changes made while the profile is away are found by the check at the next
    # connection, which fetches the node again: only what changed changes
    await backend.clients.disconnect(reader.name)
    await publisher.publish(node, [("n5", "Edited while away"), ("n201", None)])
    await publisher.retract(node, ["n7"])
    reader = await Reader.connect(backend, xmpp_server, node, name=reader.name)
    await until(lambda: _served_from_cache(reader), "the node checked and served again")
    assert await reader.mirrors_service()
    second = await times()
    assert set(second) == set(first) - {"n7"} | {"n201"}
    assert second["n201"][0] == "2024-03-01T10:00:00+00:00"
    assert second["n5"][0] == first["n5"][0] and second["n5"][1] > first["n5"][1]
    assert {name: second[name] for name in first if name not in ("n5", "n7")} == {
        name: first[name] for name in first if name not in ("n5", "n7")}
    assert await newest_first() == (await service_order())[::-1]
    ids = await service_order()
    await assert_answers_like_the_service(reader, ids)
