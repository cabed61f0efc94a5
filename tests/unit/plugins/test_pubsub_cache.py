"""Pubsub cache: analysers, synchronisation, answers equal to the service's, events.

The cache runs on a real Storage (SQLite, and PostgreSQL when available) and talks to
fake pubsub services (``fake_pubsub``) reproducing what ejabberd and Prosody answer.
"""

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.error import ConnectionLost

from libervia.backend.core.exceptions import NotConnected, NotFound
from libervia.backend.core.xml_tools import parse_xml
from libervia.backend.memory.sqla_mapping import SyncState
from libervia.backend.memory.storage import (
    RosterEntry,
    Storage,
    StorageError,
    StorageUnavailable,
)
from libervia.backend.plugins.pubsub_cache import (
    MISSED_CHECK_MAX_DELAY,
    CacheError,
    InvalidAnalyser,
    node_traits,
)
from libervia.backend.plugins.xep_0060 import ItemNotFound, PubsubHandler
from tests.unit.plugins.cache_env import (
    BLOG,
    BLOG_ANALYSER,
    SERVICE,
    Env,
    assert_cache_is_service,
    assert_same_answer,
    bridge_method,
)
from tests.unit.plugins.fake_pubsub import (
    NS_ATOM,
    FakePubsubService,
    entry,
    is_items_request,
    is_page_request,
)

# analysers


@pytest.mark.parametrize(
    ("analyser", "message"),
    [
        ("not a dict", "must be a dict"),
        ({"type": "blog", "node": "n"}, "needs a 'name'"),
        ({"name": "", "type": "blog", "node": "n"}, "needs a 'name'"),
        ({"name": "a", "node": "n"}, "needs a 'type'"),
        ({"name": "a", "type": 3, "node": "n"}, "needs a 'type'"),
        ({"name": "a", "type": "blog"}, "needs 'node' and/or 'namespace'"),
        ({"name": "a", "type": "blog", "node": ""}, "'node' must be a non-empty string"),
        ({"name": "a", "type": "blog", "namespace": 1}, "'namespace' must be"),
        ({"name": "a", "type": "blog", "node": "n", "subtype": ""}, "'subtype' must be"),
        ({"name": "a", "type": "blog", "node": "n", "order": "1"}, "'order' must be"),
        ({"name": "a", "type": "blog", "node": "n", "order": True}, "'order' must be"),
        ({"name": "a", "type": "blog", "node": "n", "to_sync": "yes"}, "'to_sync' must"),
        ({"name": "a", "type": "blog", "node": "n", "parser": "f"}, "'parser' must be"),
        ({"name": "a", "type": "blog", "node": "n", "match_cb": 1}, "'match_cb' must be"),
        ({"name": "a", "type": "blog", "node": "n", "colour": "red"}, "unknown analyser"),
        (dict(BLOG_ANALYSER), "already registered"),
    ],
)
def test_register_analyser_refuses_bad_analysers(storage, analyser, message):
    cache = Env(storage, FakePubsubService("ejabberd")).cache
    with pytest.raises(InvalidAnalyser, match=message):
        cache.register_analyser(analyser)
    assert list(cache.analysers) == ["test_blog"]


ATOM_ITEM = f"<item xmlns='http://jabber.org/protocol/pubsub' id='x'>{entry('x')}</item>"
OTHER_ITEM = "<item xmlns='http://jabber.org/protocol/pubsub' id='x'><p xmlns='urn:o'/></item>"


@pytest_twisted.ensureDeferred
async def test_analysers_order_prefix_namespace_and_match_cb(storage):
    seen = []

    def refuse_private(client, analyse):
        seen.append((analyse["node"], analyse["namespace"], analyse["item"] is not None))
        if analyse["node"].endswith("private"):
            return False
        analyse["subtype"] = "refined"
        return None

    env = Env(storage, FakePubsubService("ejabberd"), analysers=(
        {"name": "late_atom", "type": "atom", "namespace": NS_ATOM, "order": 10},
        {"name": "blog", "type": "blog", "node": BLOG, "namespace": NS_ATOM, "order": 5,
         "match_cb": refuse_private},
        {"name": "any_blog_node", "type": "blog_node", "node": BLOG, "order": 7},
        {"name": "early_other", "type": "other", "namespace": "urn:o", "order": -1},
    ))
    cache, client = env.cache, env.client

    async def analyse(node, xml):
        result = await cache.analyse_node(client, SERVICE, node, parse_xml(xml), {})
        return result and (result["analyser"], result["type"], result["subtype"])

    # first match by order wins; match_cb refines it
    assert await analyse(BLOG, ATOM_ITEM) == ("blog", "blog", "refined")
    # match_cb refuses: the next analyser (by order) is tried
    assert await analyse(BLOG + ":private", ATOM_ITEM) == ("any_blog_node", "blog_node",
                                                           None)
    # node prefix not matching: a namespace-only analyser matches
    assert await analyse("other_node", ATOM_ITEM) == ("late_atom", "atom", None)
    assert await analyse("other_node", OTHER_ITEM) == ("early_other", "other", None)
    # an analyser needing the namespace is skipped when it differs
    assert await analyse(BLOG, OTHER_ITEM) == ("early_other", "other", None)
    assert await analyse("nothing", "<item xmlns='http://jabber.org/protocol/pubsub' "
                         "id='x'><p xmlns='urn:unknown'/></item>") is None
    assert seen == [(BLOG, NS_ATOM, True), (BLOG + ":private", NS_ATOM, True)]


@pytest_twisted.ensureDeferred
async def test_analysis_fetches_an_item_and_uses_metadata_type(storage):
    env = Env(storage, FakePubsubService("ejabberd"))
    env.service.create(BLOG).payload_type = NS_ATOM
    # an empty node whose metadata tells the payload type
    result = await env.cache.analyse_node(env.client, SERVICE, BLOG)
    assert result["analyser"] == "test_blog" and result["namespace"] == NS_ATOM
    env.service.nodes[BLOG].payload_type = None
    env.service.publish(BLOG, "a")
    result = await env.cache.analyse_node(env.client, SERVICE, BLOG)
    assert result["item"]["id"] == "a" and result["analyser"] == "test_blog"


# synchronisation and serving


@pytest_twisted.ensureDeferred
async def test_unknown_node_is_analysed_then_synchronised_with_progress(storage, kind):
    env = Env(storage, FakePubsubService(kind), settings={"page_size": 5})
    env.fill()
    # analysis alone records the node, not synchronised yet (state NULL)
    recorded = await env.cache._sync.analyse_and_record(env.client, SERVICE, BLOG)
    assert recorded.analyser == "test_blog" and recorded.sync_state is None
    assert await env.state() == "none"
    # the synchronisation is held at its second page (ejabberd) or first (Prosody)
    pages = []
    env.client.hold(lambda iq: is_items_request(iq) and pages.append(iq) is None
                    and len(pages) == (1 if kind == "prosody" else 2))
    sync = defer.ensureDeferred(env.cache.synchronise(env.client, SERVICE, BLOG))
    await env.client.wait_held()
    pubsub_node = await env.node()
    assert pubsub_node.sync_state is SyncState.IN_PROGRESS
    if kind != "prosody":
        assert (pubsub_node.sync_items_done, pubsub_node.sync_items_expected) == (5, 12)
    # not served while in progress
    assert (await env.get(use_cache=False)).cached is False
    env.client.release()
    state = await sync
    assert state["state"] == "completed"
    assert (state["items_done"], state["items_expected"]) == (12, 12)
    assert state["subscribed"] is True
    assert "alice@example.org" in env.service.nodes[BLOG].subscribers
    progress = [d for name, d in env.host.bridge.emitted if name == "cache_sync_progress"]
    assert progress[0]["state"] == "in_progress" and progress[-1]["state"] == "completed"
    assert progress[-1]["done"] == 12
    # ejabberd pages by 5: 3 requests; Prosody answers everything at once (plus the
    # request made with use_cache=False above)
    requests = [r for r in env.service.items_requests if r.getAttribute("max_items")
                is None and not list(r.elements())]
    assert len(requests) == (1 if kind == "prosody" else 3) + 1
    # what the cache learnt of the service decides how it answers
    traits = node_traits(await env.node()).as_dict()
    assert traits == {
        "ejabberd": {"software": "ejabberd", "rsm": True, "order_by": False,
                     "republish_moves": False, "ids_in_request_order": False,
                     "silent_trim": False, "id_cursors": False},
        "ordering": {"software": "ejabberd", "rsm": True, "order_by": True,
                     "republish_moves": False, "ids_in_request_order": False,
                     "silent_trim": False, "id_cursors": False},
        "prosody": {"software": "Prosody PubSub Service", "rsm": False,
                    "order_by": False, "republish_moves": True,
                    "ids_in_request_order": True, "silent_trim": True,
                    "id_cursors": True},
    }[kind]
    rows = await env.cached_rows()
    assert [r.name for r in rows] == [f"i{n:02}" for n in range(12)]
    assert rows[0].parsed == {"title": "Entry i00 <&> 'ok'", "node": BLOG}
    assert (await env.get()).cached is True


def _cursor(answer: Any, key: str) -> str:
    if key in answer.rsm:
        return answer.rsm[key]
    # a service ignoring RSM gives no cursor: use an item id
    return answer.items[0 if key == "first" else -1]["id"]


CASES = [
    ("everything", {}, None),
    ("max_items", {"max_items": 5}, None),
    ("max_items_more_than_node", {"max_items": 50}, None),
    ("item_ids", {"item_ids": ["i09", "i01", "i03", "missing", "i10"]}, None),
    ("rsm_first_page", {"rsm": {"max": 5}}, None),
    ("rsm_after", {"rsm": {"max": 5}}, ("rsm_first_page", "last", "after")),
    ("rsm_after_again", {"rsm": {"max": 5}}, ("rsm_after", "last", "after")),
    ("rsm_after_end", {"rsm": {"max": 5}}, ("rsm_after_again", "last", "after")),
    ("rsm_last_page", {"rsm": {"max": 5, "before": ""}}, None),
    ("rsm_before", {"rsm": {"max": 5}}, ("rsm_last_page", "first", "before")),
    ("rsm_before_start", {"rsm": {"max": 5}}, ("rsm_before", "first", "before")),
    ("rsm_index", {"rsm": {"max": 5, "index": 3}}, None),
    ("rsm_index_past_end", {"rsm": {"max": 5, "index": 20}}, None),
    ("rsm_count_only", {"rsm": {"max": 0}}, None),
    ("order_creation", {"order_by": "creation"}, None),
    ("order_modification", {"order_by": "modification"}, None),
    ("order_modification_max", {"order_by": "modification", "max_items": 4}, None),
    ("order_modification_rsm", {"order_by": "modification", "rsm": {"max": 4}}, None),
    ("order_modification_last", {"order_by": "modification",
                                 "rsm": {"max": 4, "before": ""}}, None),
]


@pytest_twisted.ensureDeferred
async def test_every_get_items_case_from_cache_equals_the_service(env):
    await env.sync()
    # re-published items: their place differs by service, and by modification time
    for item_id in ("i03", "i07"):
        await env.event(env.service.publish(BLOG, item_id, entry(item_id, "changed")))
    answers: dict[str, tuple[Any, Any]] = {}
    for name, kwargs, cursor_from in CASES:
        cached_kwargs, remote_kwargs = dict(kwargs), dict(kwargs)
        if cursor_from is not None:
            base, key, direction = cursor_from
            cached_base, remote_base = answers[base]
            if not remote_base.items:
                continue
            cached_kwargs["rsm"] = kwargs["rsm"] | {direction: _cursor(cached_base, key)}
            remote_kwargs["rsm"] = kwargs["rsm"] | {direction: _cursor(remote_base, key)}
        sent = len(env.client.sent)
        cached = await env.get(**cached_kwargs)
        assert len(env.client.sent) == sent, f"{name}: the cache asked the service"
        remote = await env.get(use_cache=False, **remote_kwargs)
        try:
            assert_same_answer(env.service, cached, remote)
        except AssertionError as e:
            raise AssertionError(f"case {name}: {e}") from None
        answers[name] = (cached, remote)
    everything = [i["id"] for i in answers["everything"][0].items]
    if env.service.kind == "prosody":
        assert everything[-2:] == ["i03", "i07"]
    else:
        assert everything == [f"i{n:02}" for n in range(12)]


@pytest_twisted.ensureDeferred
async def test_cursor_unknown_to_the_cache_is_asked_to_the_service(storage):
    env = Env(storage, FakePubsubService("ejabberd"))
    await env.sync()
    remote_first = await env.get(use_cache=False, rsm={"max": 5})
    stamp = remote_first.rsm["last"]
    result = await env.get(rsm={"max": 5, "after": stamp})
    assert result.cached is False
    assert [i["id"] for i in result.items] == [f"i{n:02}" for n in range(5, 10)]


@pytest_twisted.ensureDeferred
async def test_a_failing_database_lets_the_service_answer(storage, monkeypatch):
    env = Env(storage, FakePubsubService("ejabberd"))
    await env.sync()
    monkeypatch.setattr(storage.pubsub, "get_items", lambda *a, **k: defer.fail(
        StorageError("database is locked")))
    result = await env.get(max_items=3)
    assert result.cached is False and [i["id"] for i in result.items] == [
        "i09", "i10", "i11"]


@pytest_twisted.ensureDeferred
async def test_a_stream_lost_without_a_disconnection_stops_the_serving(storage, kind):
    """However a stream ends (connection lost, stream error, server gone), events are
    missed from then on: the cache does not answer for the profile's nodes until it
    has checked them on a new stream."""
    env = Env(storage, FakePubsubService(kind))
    env.client.xmlstream = object()
    env.client.is_connected = True
    await env.sync()
    assert (await env.get()).cached is True
    # the link is cut: the client is reconnecting, no hook ran
    env.client.is_connected = False
    env.service.publish(BLOG, "while-away")  # no event reaches the backend
    result = await env.get()
    assert result.cached is False and result.items[-1]["id"] == "while-away"
    # a new stream: still not served before the check the connection hook starts
    env.client.xmlstream = object()
    env.client.is_connected = True
    assert (await env.get()).cached is False
    await env.cache.profile_connected(env.client)
    await env.cache.wait_background()
    result = await env.get()
    assert result.cached is True and result.items[-1]["id"] == "while-away"


@pytest_twisted.ensureDeferred
async def test_a_check_started_on_a_stream_since_lost_does_not_make_the_node_served(
        storage):
    """A synchronisation that ends after its stream was replaced proves nothing about
    the events of the gap: the node waits for the check of the new stream."""
    env = Env(storage, FakePubsubService("ejabberd"), settings={"page_size": 5})
    env.client.xmlstream = first_stream = object()
    env.fill()
    env.client.hold(is_page_request)
    assert (await env.get()).cached is False
    await env.client.wait_held()
    env.client.xmlstream = object()  # reconnected while the sync waits for a page
    env.client.release()
    await env.cache.wait_background()
    assert await env.state() == "completed"
    assert (await env.get()).cached is False
    env.client.xmlstream = first_stream
    assert (await env.get()).cached is True  # (only the stream differed)


@pytest_twisted.ensureDeferred
async def test_cache_cursors_still_page_when_the_service_answers(storage):
    """A caller paging with the cache's cursors (item ids) goes on when the node stops
    being served: ejabberd, whose cursors are time stamps, gets positions instead."""
    env = Env(storage, FakePubsubService("ejabberd"))
    await env.sync()
    first = await env.get(rsm={"max": 5})
    last_page = await env.get(rsm={"max": 5, "before": ""})
    assert first.cached and first.rsm["last"] == "i04"
    await env.cache.profile_disconnected(env.client)  # not served any more
    after = await env.get(rsm={"max": 5, "after": first.rsm["last"]})
    assert after.cached is False
    assert [i["id"] for i in after.items] == ["i05", "i06", "i07", "i08", "i09"]
    before = await env.get(rsm={"max": 5, "before": last_page.rsm["first"]})
    assert [i["id"] for i in before.items] == ["i02", "i03", "i04", "i05", "i06"]
    start = await env.get(rsm={"max": 5, "before": "i02"})
    assert [i["id"] for i in start.items] == ["i00", "i01"]
    end = await env.get(rsm={"max": 5, "after": "i11"})
    assert end.items == [] and end.rsm["count"] == 12


@pytest_twisted.ensureDeferred
async def test_use_cache_false_goes_to_the_service(env):
    await env.sync()
    before = len(env.service.items_requests)
    result = await env.get(use_cache=False, max_items=2)
    assert result.cached is False and len(env.service.items_requests) == before + 1


@pytest_twisted.ensureDeferred
async def test_node_too_large_is_not_synchronised(storage, kind):
    env = Env(storage, FakePubsubService(kind),
              settings={"max_items_per_node": 10, "page_size": 5})
    env.fill()
    await env.get()
    await env.cache.wait_background()
    pubsub_node = await env.node()
    state = env.cache.node_state(pubsub_node)
    assert state["state"] == "error" and "max_items_per_node" in state["error"]
    assert await env.cached_rows() == []
    if kind != "prosody":
        # the count of the first page was enough to decide
        # the request itself, the sample item, the first page
        assert len(env.service.items_requests) == 3
    before = len(env.service.items_requests)
    for __ in range(2):
        assert (await env.get()).cached is False
    assert len(env.service.items_requests) == before + 2


@pytest_twisted.ensureDeferred
async def test_not_to_sync_no_analyser_and_errors_always_ask_the_service(storage):
    service = FakePubsubService("ejabberd")
    env = Env(storage, service, analysers=(
        BLOG_ANALYSER,
        {"name": "status", "type": "status", "node": "status", "to_sync": False},
    ))
    for node in ("status", "unknown_node", BLOG):
        service.create(node)
        service.publish(node, "a")
    service.nodes[BLOG].closed = True  # subscription refused: sync error
    for node in ("status", "unknown_node", BLOG):
        await env.get(node)
    await env.cache.wait_background()
    states = {node: env.cache.node_state(await env.node(node))
              for node in ("status", "unknown_node", BLOG)}
    assert states["status"]["state"] == "no_sync"
    assert states["status"]["analyser"] == "status"
    assert states["unknown_node"]["state"] == "no_sync"
    assert states["unknown_node"]["analyser"] is None
    assert states[BLOG]["state"] == "error"
    assert "subscribe" in states[BLOG]["error"]
    before = len(service.items_requests)
    for node in ("status", "unknown_node", BLOG):
        assert (await env.get(node)).cached is False
    assert len(service.items_requests) == before + 3
    # cache_get refuses nodes that are not synchronised, saying why
    with pytest.raises(CacheError, match="not synchronised"):
        await bridge_method(env.cache, "get")("alice", SERVICE.full(), "status")


@pytest_twisted.ensureDeferred
async def test_empty_node_is_analysed_once_it_has_items(storage):
    env = Env(storage, FakePubsubService("ejabberd"))
    env.service.create(BLOG)
    await env.get()
    await env.cache.wait_background()
    assert await env.node() is None
    await env.event(env.service.publish(BLOG, "first"))  # not followed yet: ignored
    await env.get()
    await env.cache.wait_background()
    assert await env.state() == "completed"
    assert [r.name for r in await env.cached_rows()] == ["first"]


# events


@pytest_twisted.ensureDeferred
async def test_every_event_kind_keeps_the_cache_equal_to_the_service(env):
    service = env.service
    await env.sync()
    # new item and updated item, with payload
    await env.event(service.publish(BLOG, "new"))
    await env.event(service.publish(BLOG, "i05", entry("i05", "updated")))
    await assert_cache_is_service(env)
    rows = {r.name: r for r in await env.cached_rows()}
    assert rows["i05"].parsed["title"] == "updated"
    assert any(name == "cache_new_items" and data["item_ids"] == ["i05"]
               for name, data in env.host.bridge.emitted)
    # notifications without payload: the cache fetches the items named
    await env.event(service.publish(BLOG, "bare", with_payload=False))
    await env.event(service.publish(BLOG, "i06", entry("i06", "silent"), False))
    await assert_cache_is_service(env)
    assert {r.name: r for r in await env.cached_rows()}["i06"].parsed["title"] == "silent"
    # retraction
    await env.event(service.retract(BLOG, ["i01", "new"]))
    await assert_cache_is_service(env)
    # purge
    await env.event(service.purge(BLOG))
    assert await env.cached_rows() == []
    await env.event(service.publish(BLOG, "after_purge"))
    await assert_cache_is_service(env)
    # node deletion: the node leaves the cache, the service answers
    await env.event(service.delete(BLOG))
    assert await env.node() is None
    with pytest.raises(ItemNotFound):
        await env.get()


def writes_of_items(env: Env) -> int:
    stats = env.storage.timings.get("cache_pubsub_items")
    return 0 if stats is None else stats.calls


@pytest_twisted.ensureDeferred
async def test_notifications_arriving_during_a_write_are_cached_together(env):
    """The notifications received while the first one is written wait, then reach the
    cache as one call, written in one transaction: a burst costs the database one
    write, not one each."""
    await env.sync()
    writes = writes_of_items(env)
    handled: list[list[str]] = []
    done = defer.Deferred()

    def after_the_cache(client, event):
        handled.append([i["id"] for i in event.items])
        if event.items[-1]["id"] == "new5":
            done.callback(None)
        return True

    env.host.trigger.add("XEP-0060_items", after_the_cache)
    handler = PubsubHandler(env.xep_0060.dispatch, env.client)
    for n in range(6):
        handler._on_event(env.service.publish(BLOG, f"new{n}"))
    await done
    assert handled == [["new0"], ["new1", "new2", "new3", "new4", "new5"]]
    assert writes_of_items(env) - writes == 2
    await assert_cache_is_service(env)


@pytest_twisted.ensureDeferred
async def test_events_the_database_could_not_store_are_caught_up_once_it_answers(
        env, monkeypatch):
    await env.sync()
    storage = env.storage
    answering = storage.pubsub.get_pubsub_node
    monkeypatch.setattr(storage.pubsub, "get_pubsub_node", lambda *a, **k: defer.fail(
        StorageUnavailable("the database is unavailable")))
    waiting = env.host.reactor.next_call()
    await env.event(env.service.publish(BLOG, "missed"))
    await env.event(env.service.retract(BLOG, ["i02"]))
    await waiting  # for the database to answer again
    monkeypatch.setattr(storage.pubsub, "get_pubsub_node", answering)
    # the cache would miss the events: the service answers until the node is checked
    assert (await env.get()).cached is False
    env.host.reactor.advance(MISSED_CHECK_MAX_DELAY)
    await env.cache.wait_background()
    await assert_cache_is_service(env)


@pytest_twisted.ensureDeferred
async def test_items_dropped_beyond_max_items_leave_the_cache(env):
    await env.sync()
    env.service.nodes[BLOG].max_items = 12
    for item_id in ("new1", "new2", "i05"):
        await env.event(env.service.publish(BLOG, item_id))
        # ejabberd notifies what it drops; Prosody does not, the cache finds out
        for message in env.service.trim_events:
            await env.event(message)
        env.service.trim_events.clear()
        await assert_cache_is_service(env)
    assert "i00" not in [r.name for r in await env.cached_rows()]


@pytest_twisted.ensureDeferred
async def test_configuration_event_analyses_the_node_again(storage):
    def only_public(client, analyse):
        return (analyse["metadata"] or {}).get("meta_data", {}).get(
            "pubsub#title") != "private"

    env = Env(storage, FakePubsubService("ejabberd"),
              analysers=(BLOG_ANALYSER | {"match_cb": only_public},))
    await env.sync()
    await env.event(env.service.configure(BLOG, "private"))
    await env.cache.wait_background()
    assert await env.state() == "no_sync"
    assert await env.cached_rows() == []
    assert (await env.get()).cached is False
    await env.event(env.service.configure(BLOG, "public again"))
    await env.cache.wait_background()
    assert await env.state() == "completed"
    await assert_cache_is_service(env)


@pytest_twisted.ensureDeferred
async def test_events_during_a_sync_are_not_lost(storage, kind):
    env = Env(storage, FakePubsubService(kind), settings={"page_size": 5})
    service = env.service
    env.fill()
    # hold the first page of the synchronisation
    env.client.hold(is_page_request)
    await env.get()
    await env.client.wait_held()
    assert await env.state() == "in_progress"
    events = [service.publish(BLOG, "during"), service.retract(BLOG, ["i02"]),
              service.publish(BLOG, "i04", entry("i04", "re-published")),
              service.publish(BLOG, "bare", with_payload=False)]
    # the bare notification's fetch must not be held
    env.client.hold(lambda iq: False)
    held = env.client.held
    for message in events:
        await env.event(message)
    env.client.held = held
    env.client.release()
    await env.cache.wait_background()
    assert await env.state() == "completed"
    await assert_cache_is_service(env)
    rows = {r.name: r for r in await env.cached_rows()}
    assert rows["i04"].parsed["title"] == "re-published"
    assert "i02" not in rows and "during" in rows and "bare" in rows


@pytest.mark.parametrize("event", ["delete", "configure"])
@pytest_twisted.ensureDeferred
async def test_node_deleted_or_reconfigured_during_a_sync(storage, event):
    env = Env(storage, FakePubsubService("ejabberd"), settings={"page_size": 5})
    env.fill()
    env.client.hold(is_page_request)
    await env.get()
    await env.client.wait_held()
    if event == "delete":
        await env.event(env.service.delete(BLOG))
    else:
        await env.event(env.service.configure(BLOG, "new title"))
    env.client.release()
    await env.cache.wait_background()
    if event == "delete":
        assert await env.node() is None
        with pytest.raises(ItemNotFound):
            await env.get()
    else:
        # analysed and synchronised again, from the new configuration
        assert await env.state() == "completed"
        await assert_cache_is_service(env)


@pytest_twisted.ensureDeferred
async def test_concurrent_requests_on_a_new_node_sync_it_once(storage):
    env = Env(storage, FakePubsubService("ejabberd"))
    env.fill()
    answers = await defer.gatherResults(
        [defer.ensureDeferred(env.get()) for __ in range(5)])
    assert all(a.cached is False for a in answers)
    await env.cache.wait_background()
    assert await env.state() == "completed"
    subscriptions = [iq for iq in env.client.sent
                     if iq.getAttribute("type") == "set" and iq.pubsub
                     and iq.pubsub.subscribe]
    assert len(subscriptions) == 1
    assert len(await env.cached_rows()) == 12


@pytest_twisted.ensureDeferred
async def test_restart_during_a_sync_redoes_it_complete_without_duplicates(storage, kind):
    env = Env(storage, FakePubsubService(kind), settings={"page_size": 5})
    env.fill()
    env.client.hold(is_page_request)
    await env.get()
    await env.client.wait_held()
    pubsub_node = await env.node()
    # what a previous version may have written before it was stopped
    await storage.pubsub.cache_pubsub_items(pubsub_node.id, [
        {"name": "i00", "data": "<item id='i00'/>"},
        {"name": "gone", "data": "<item id='gone'/>"}])
    # the backend stops here: the node stays IN_PROGRESS; items change meanwhile
    env.service.publish(BLOG, "while_stopped")
    env.service.retract(BLOG, ["i03"])
    restarted = env.restart(settings={"page_size": 5})
    assert (await restarted.get()).cached is False  # not served before the resync
    await restarted.cache.profile_connected(restarted.client)
    await restarted.cache.wait_background()
    assert await restarted.state() == "completed"
    names = [r.name for r in await restarted.cached_rows()]
    assert len(names) == len(set(names)) == 12
    await assert_cache_is_service(restarted)


@pytest_twisted.ensureDeferred
async def test_a_sync_asks_for_the_next_page_before_handling_the_current_one(storage):
    pages_asked = []

    def parser(client, item, service, node):
        pages_asked.append(sum(1 for iq in env.client.sent if is_page_request(iq)))
        return {}

    env = Env(storage, FakePubsubService("ejabberd"), settings={"page_size": 5},
              analysers=(BLOG_ANALYSER | {"parser": parser},))
    await env.sync(count=12)
    # items 0-4 are parsed once page 2 is asked for, 5-9 once page 3 is; the last page
    # has no next one
    assert pages_asked == [2] * 5 + [3] * 7
    assert [r.name for r in await env.cached_rows()] == [f"i{n:02}" for n in range(12)]


@pytest.mark.parametrize("lost", [
    ConnectionLost("the server went away"),
    # what the client fails its waiting requests with (xmpp/client.py)
    NotConnected("profile 'alice' is not connected (connection lost: ...)"),
])
@pytest_twisted.ensureDeferred
async def test_stream_lost_during_a_sync_leaves_it_to_redo_not_in_error(storage, lost):
    env = Env(storage, FakePubsubService("ejabberd"), settings={"page_size": 5})
    env.fill()
    env.client.hold(is_page_request)
    await env.get()
    await env.client.wait_held()
    # the requests of a lost stream fail before the client knows it is disconnected
    __, held = env.client.held.pop()
    held.errback(lost)
    await env.cache.wait_background()
    assert await env.state() == "in_progress"
    env.client.release()
    await env.cache.profile_connected(env.client)
    await env.cache.wait_background()
    await assert_cache_is_service(env)


@pytest_twisted.ensureDeferred
async def test_verification_after_connection_fixes_a_diverged_cache(env):
    await env.sync()
    service = env.service
    # the profile is away: events are lost
    await env.cache.profile_disconnected(env.client)
    assert (await env.get()).cached is False
    service.publish(BLOG, "missed")
    service.retract(BLOG, ["i00"])
    service.publish(BLOG, "i08", entry("i08", "changed while away"))
    restarted = env.restart()
    assert (await restarted.get()).cached is False
    await restarted.cache.profile_connected(restarted.client)
    await restarted.cache.wait_background()
    await assert_cache_is_service(restarted)
    rows = {r.name: r for r in await restarted.cached_rows()}
    assert rows["i08"].parsed["title"] == "changed while away"
    # a node deleted while away leaves the cache
    service.delete(BLOG)
    await restarted.cache.profile_connected(restarted.client)
    await restarted.cache.wait_background()
    assert await restarted.node() is None


@pytest_twisted.ensureDeferred
async def test_a_node_created_again_while_away_is_subscribed_to_again(env):
    await env.sync()
    service = env.service
    await env.cache.profile_disconnected(env.client)
    # the same name, and the same items: only the subscription went with the deletion
    items = service.nodes[BLOG].items
    service.delete(BLOG)
    service.create(BLOG).items = items
    restarted = env.restart()
    await restarted.cache.profile_connected(restarted.client)
    await restarted.cache.wait_background()
    assert "alice@example.org" in service.nodes[BLOG].subscribers
    assert (await restarted.get()).cached is True


@pytest_twisted.ensureDeferred
async def test_a_node_unchanged_while_away_is_served_again_once_verified(env):
    await env.sync()
    await env.cache.profile_disconnected(env.client)
    restarted = env.restart()
    await restarted.cache.profile_connected(restarted.client)
    await restarted.cache.wait_background()
    # checking the node does not leave it looking like a synchronisation in progress
    assert await restarted.state() == "completed"
    assert (await restarted.get()).cached is True


# parsers


async def _parsed_with(storage: Storage, parser: Any, count: int = 2,
                       clock_steps: int = 0) -> list[Any]:
    await storage.pubsub.delete_pubsub_nodes()  # each parser on a fresh cache
    env = Env(storage, FakePubsubService("ejabberd"), settings={"parser_timeout": 5},
              analysers=(BLOG_ANALYSER | {"parser": parser},))
    env.fill(count=count)
    await env.get()
    clock = env.host.reactor
    done = defer.ensureDeferred(env.cache.wait_background())
    timeouts = 0
    while not done.called:
        # a parser's time-out (the sync's own, much longer, is left alone)
        if [c for c in clock.getDelayedCalls() if c.getTime() - clock.seconds() <= 5]:
            # a parser is waited for: time passes beyond the time-out
            clock.advance(5)
            timeouts += 1
        else:
            await defer.DeferredList([clock.next_call(), done], fireOnOneCallback=True)
    await done
    assert timeouts == clock_steps
    assert await env.state() == "completed"
    return [r.parsed for r in await env.cached_rows()]


@pytest_twisted.ensureDeferred
async def test_parsers_plain_coroutine_and_deferred(storage):
    async def coroutine(client, item, service, node):
        return {"id": item["id"], "kind": "coroutine"}

    def deferred(client, item, service, node):
        return defer.succeed({"id": item["id"], "kind": "deferred"})

    def plain(client, item, service, node):
        return [item["id"], 1.5, None]

    assert await _parsed_with(storage, coroutine) == [
        {"id": "i00", "kind": "coroutine"}, {"id": "i01", "kind": "coroutine"}]
    assert await _parsed_with(storage, deferred) == [
        {"id": "i00", "kind": "deferred"}, {"id": "i01", "kind": "deferred"}]
    assert await _parsed_with(storage, plain) == [["i00", 1.5, None], ["i01", 1.5, None]]


@pytest_twisted.ensureDeferred
async def test_parser_raising_leaves_items_without_parsed_data(storage):
    def broken(client, item, service, node):
        if item["id"] == "i00":
            raise ValueError("garbage")
        return {"ok": True}

    async def broken_async(client, item, service, node):
        raise RuntimeError("no")

    assert await _parsed_with(storage, broken) == [None, {"ok": True}]
    assert await _parsed_with(storage, broken_async) == [None, None]


@pytest.mark.parametrize("bad", [{"when": object()}, {"x": float("nan")},
                                 {"text": "a\x00b"}, {1, 2}])
@pytest_twisted.ensureDeferred
async def test_parser_data_the_database_refuses_is_dropped_not_the_items(storage, bad):
    def parser(client, item, service, node):
        return bad if item["id"] == "i00" else {"fine": item["id"]}

    assert await _parsed_with(storage, parser) == [None, {"fine": "i01"}]


@pytest_twisted.ensureDeferred
async def test_parser_never_answering_times_out(storage):
    calls = []

    def never(client, item, service, node):
        calls.append(item["id"])
        if item["id"] == "i01":
            return {"quick": True}
        return defer.Deferred()  # never fires

    async def never_coroutine(client, item, service, node):
        await defer.Deferred()

    # i00 and i02 wait until the (injected) clock passes the time-out
    assert await _parsed_with(storage, never, count=3, clock_steps=2) == [
        None, {"quick": True}, None]
    assert calls == ["i00", "i01", "i02"]
    assert await _parsed_with(storage, never_coroutine, count=1, clock_steps=1) == [None]


# profiles and management


@pytest_twisted.ensureDeferred
async def test_cache_methods_only_see_the_profile_own_data(storage):
    service = FakePubsubService("ejabberd")
    alice = Env(storage, service, "alice")
    await alice.sync()
    bob = Env(storage, service, "bob")
    bob_client = bob.client
    alice.host.clients.clients["bob"] = bob_client
    # bob's node is not synchronised: alice's cache does not answer for him
    assert (await alice.xep_0060.get_items(bob_client, SERVICE, BLOG)).cached is False
    await alice.cache.wait_background()
    assert (await alice.xep_0060.get_items(bob_client, SERVICE, BLOG)).cached is True
    cache = alice.cache
    got = await bridge_method(cache, "get")("alice", SERVICE.full(), BLOG, max_items=2)
    assert [parse_xml(i)["id"] for i in got["items"]] == ["i10", "i11"]
    assert got["metadata"]["cached"] is True
    stats = await bridge_method(cache, "stats")("alice")
    assert stats["items"] == 12 and stats["nodes_by_state"] == {"completed": 1}
    assert stats["nodes"] == 1 and stats["bytes"] > 12 * 100
    assert await bridge_method(cache, "purge")("alice", nodes=[BLOG]) == 12
    assert await storage.pubsub.get_cache_stats("bob") == {
        "nodes": {"COMPLETED": 1}, "items": 12, "bytes": (await storage.pubsub.get_cache_stats(
            "bob"))["bytes"]}
    assert await bridge_method(cache, "reset")("alice") == 1
    assert (await bridge_method(cache, "stats")("bob"))["items"] == 12
    with pytest.raises(NotFound):
        await bridge_method(cache, "node_state")("alice", SERVICE.full(), BLOG)
    bob_state = await bridge_method(cache, "node_state")("bob", SERVICE.full(), BLOG)
    assert bob_state["state"] == "completed"
    with pytest.raises(CacheError, match="ISO 8601"):
        await bridge_method(cache, "purge")("bob", created_before="yesterday")


@pytest_twisted.ensureDeferred
async def test_forced_sync_of_a_synchronised_node_replaces_its_items(storage):
    env = Env(storage, FakePubsubService("ejabberd"))
    await env.sync()
    env.service.retract(BLOG, ["i00"])  # no event
    state = await bridge_method(env.cache, "sync")("alice", SERVICE.full(), BLOG)
    assert state["state"] == "completed" and state["items_done"] == 11
    await assert_cache_is_service(env)


async def contact_env(storage, kind, subscription="both"):
    """alice's cache, and the PEP service of bob, a contact whose presence she sees."""
    service = FakePubsubService(kind, "bob@example.org")
    await storage.roster.apply_push("alice", None, RosterEntry(
        "bob@example.org", None, subscription, False, ()))
    return Env(storage, service), service


async def contact_node_state(env, node):
    pubsub_node = await env.storage.pubsub.get_pubsub_node("alice", "bob@example.org",
                                                           node)
    return None if pubsub_node is None else env.cache.node_state(pubsub_node)["state"]


@pytest_twisted.ensureDeferred
async def test_a_node_first_seen_through_a_notification_is_analysed_and_synchronised(
        storage, kind):
    env, bob = await contact_env(storage, kind)
    env.fill(BLOG, 5)
    sent = len(env.client.sent)
    await env.event(bob.publish(BLOG, "pushed"))
    await env.cache.wait_background()
    assert await contact_node_state(env, BLOG) == "completed"
    pubsub_node = await storage.pubsub.get_pubsub_node("alice", "bob@example.org", BLOG)
    items, __ = await storage.pubsub.get_items(pubsub_node.id)
    assert sorted(r.name for r in items) == sorted(bob.ids(BLOG))
    assert len(env.client.sent) > sent  # the node was fetched whole
    # nodes an analyser leaves alone are recorded once, never synchronised
    await env.event(bob.publish("urn:example:other", "x"))
    await env.cache.wait_background()
    assert await contact_node_state(env, "urn:example:other") == "no_sync"


@pytest_twisted.ensureDeferred
async def test_a_notification_from_a_full_jid_starts_nothing(env):
    env.fill(BLOG, 3)
    message = env.service.publish(BLOG, "forged")
    message["from"] = "mallory@example.org/bot"
    sent = len(env.client.sent)
    await env.event(message)
    await env.cache.wait_background()
    assert len(env.client.sent) == sent
    assert await env.storage.pubsub.get_pubsub_nodes("alice") == []


@pytest.mark.parametrize("sender, subscription, analysed", [
    ("bob@example.org", "both", True),  # a contact whose presence alice sees
    ("bob@example.org", "to", True),
    ("bob@example.org", "from", False),  # she is seen, does not see: no +notify
    ("bob@example.org", None, False),  # not in the roster
    ("alice@example.org", None, True),  # her own account
    ("mallory@evil.example", None, False),  # a stranger, stamped by his own server
    ("pubsub.evil.example", None, False),  # a service of another server
    ("example.org", None, False),  # services: cached when a get asks
    ("pubsub.example.org", None, False),
])
@pytest_twisted.ensureDeferred
async def test_only_the_account_and_contacts_it_sees_have_new_nodes_analysed(
        storage, kind, sender, subscription, analysed, log_lines):
    if subscription is not None:
        await storage.roster.apply_push("alice", None, RosterEntry(
            "bob@example.org", None, subscription, False, ()))
    service = FakePubsubService(kind, sender)
    env = Env(storage, service)
    env.fill(BLOG, 3)
    sent = len(env.client.sent)
    await env.event(service.publish(BLOG, "pushed"))
    await env.cache.wait_background()
    nodes = await storage.pubsub.get_pubsub_nodes("alice")
    assert [n.service for n in nodes] == ([sender] if analysed else [])
    assert (len(env.client.sent) > sent) is analysed
    if not analysed:
        assert any(f"from {sender} ignored" in line for line in log_lines())
