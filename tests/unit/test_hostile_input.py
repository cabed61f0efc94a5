"""Hostile input from the server: forbidden XML on the stream, abusive pubsub items.

RFC 6120 §11.1 forbids DTDs and entity declarations; Expat would otherwise read an
internal DTD subset and expand its entities into stanzas.  The client's real Twisted
XML stream is fed through an in-memory transport: the stream must be closed with
``restricted-xml`` before anything is expanded, the connection attempt must fail with
a message saying why, and no reconnection must be scheduled (the server would only do
it again).

Pubsub items a service sends (1 MB payloads, thousands of nesting levels, items
without ids) go to the cache on a real Storage, from a fake service: each is cached
whole, or skipped with a log line, or makes the service answer for the node (the
cache never answers without an item the service holds; a frontend asking for a too
deeply nested item gets an error naming it); a normal publication afterwards is still
served.

Invalid service JIDs and node names given by a frontend (pubsub_* and cache_* bridge
methods) get a typed error, never an internal one or a traceback, never reach the
server (a control character in a node name would make it close the stream), and the
next normal call is served.
"""

import json

import pytest
import pytest_twisted
from twisted.internet import error as net_error
from twisted.internet import reactor, task
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import formatEvent
from twisted.python.failure import Failure

from libervia.backend.bridge.protocol import BridgeFactory
from libervia.backend.xmpp.client import (
    ConnectionState,
    RestrictedXMLError,
    RestrictedXmlStream,
    XMPPClient,
)
from libervia.backend.xmpp.profiles import ConnectionOptions, Profile
from tests.unit.bridge import test_bridge_protocol as bridge_tests
from tests.unit.bridge.helpers import Client
from tests.unit.plugins import conftest as plugin_fixtures
from tests.unit.plugins.cache_env import (
    BLOG,
    SERVICE,
    Env,
    assert_cache_is_service,
)
from tests.unit.plugins.fake_pubsub import NS_ATOM, FakePubsubService, entry

STREAM = ("<stream:stream xmlns='jabber:client' "
          "xmlns:stream='http://etherx.jabber.org/streams' from='example.org' "
          "id='s1' version='1.0'>")
DTD = "<!DOCTYPE stream:stream [<!ENTITY x 'EXPANDED'>]>"
MESSAGE = "<message from='example.org'><body>&x;</body></message>"
BOMB = ("<!DOCTYPE lolz [<!ENTITY lol 'lol'>"
        "<!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>"
        "<!ENTITY lol3 '&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;'>]>")


class Connector:
    def __init__(self):
        self.attempts = 1

    def connect(self):
        self.attempts += 1

    def disconnect(self):
        pass

    def stopConnecting(self):  # noqa: N802
        pass


def make_client():
    reactor = MemoryReactorClock()
    profile = Profile("alice", "alice@example.org",
                      ConnectionOptions(host="127.0.0.1", port=5299))
    client = XMPPClient(None, profile, "secret password", reactor=reactor)
    return client, reactor


def open_stream(client):
    """A real stream of the client's factory, on an in-memory transport."""
    xs = client.factory.buildProtocol(None)
    transport = StringTransport()
    xs.makeConnection(transport)
    received = []
    xs.addObserver("/message", received.append)
    return xs, transport, received


def drop(client, xs):
    """What Twisted does once the transport closed the connection."""
    reason = Failure(net_error.ConnectionDone())
    xs.connectionLost(reason)
    client.factory.clientConnectionLost(Connector(), reason)


def assert_refused(xs, transport, received):
    assert transport.disconnecting
    assert b"restricted-xml" in transport.value()
    assert b"</stream:stream>" in transport.value()
    assert received == []
    assert "forbids" in xs.refusal


@pytest.mark.parametrize("prologue", [
    pytest.param("<?xml version='1.0'?>" + DTD, id="dtd-with-entity"),
    pytest.param(BOMB, id="billion-laughs"),
    pytest.param("<!DOCTYPE stream:stream SYSTEM 'file:///etc/passwd'>", id="external"),
])
def test_dtd_before_the_stream_closes_it_and_expands_nothing(prologue):
    client, reactor = make_client()
    failures = []
    client.connect().addErrback(failures.append)
    xs, transport, received = open_stream(client)
    assert isinstance(xs, RestrictedXmlStream)
    xs.dataReceived((prologue + STREAM + MESSAGE).encode())
    assert_refused(xs, transport, received)
    drop(client, xs)
    # the first attempt fails, with the reason, and nothing is retried
    assert failures and failures[0].check(RestrictedXMLError)
    assert "document type declaration" in failures[0].getErrorMessage()
    assert client.state is ConnectionState.FAILED
    assert "forbids" in client.error
    reactor.advance(3600)
    assert reactor.getDelayedCalls() == []


def test_entity_declaration_inside_the_stream_closes_it():
    client, __ = make_client()
    client.connect().addErrback(lambda __: None)
    xs, transport, received = open_stream(client)
    xs.dataReceived(STREAM.encode())
    xs.dataReceived(b"<!ENTITY x 'EXPANDED'>" + MESSAGE.encode())
    assert transport.disconnecting
    assert received == []
    assert b"EXPANDED" not in transport.value()


def test_dtd_after_a_stream_restart_is_refused_too():
    # after STARTTLS and SASL the stream restarts with a new parser
    client, __ = make_client()
    client.connect().addErrback(lambda __: None)
    xs, transport, received = open_stream(client)
    xs.dataReceived(STREAM.encode())
    xs.reset()
    xs.sendHeader()
    xs.dataReceived((DTD + STREAM + MESSAGE).encode())
    assert_refused(xs, transport, received)


def test_established_connection_given_a_dtd_stops_instead_of_reconnecting():
    client, reactor = make_client()
    client.connect()
    xs, transport, received = open_stream(client)
    xs.dataReceived(STREAM.encode())
    client._authd(xs)  # the stream is up: authenticated and bound
    assert client.state is ConnectionState.CONNECTED
    xs.reset()
    xs.sendHeader()
    xs.dataReceived((DTD + STREAM + MESSAGE).encode())
    assert_refused(xs, transport, received)
    drop(client, xs)
    assert client.state is ConnectionState.FAILED
    reactor.advance(3600)
    assert reactor.getDelayedCalls() == []


def test_a_well_formed_stream_is_still_read():
    client, __ = make_client()
    client.connect()
    xs, transport, received = open_stream(client)
    xs.dataReceived((STREAM + "<message from='example.org'><body>a &amp; b</body>"
                     "</message>").encode())
    assert not transport.disconnecting
    assert [str(m.body) for m in received] == ["a & b"]


# --- hostile pubsub items from the service -------------------------------------------


#: a real Storage (SQLite, and PostgreSQL when available), as in the cache's tests
storage = plugin_fixtures.storage


@pytest.fixture
def env(storage):
    return Env(storage, FakePubsubService("ejabberd"))


#: every log event of the test
log_events = bridge_tests.log_events


def logged(events, text):
    return [formatEvent(e) for e in events if text in formatEvent(e)]


async def assert_still_served(env, node=BLOG):
    """A normal publication afterwards is cached, and the node answers like the service."""
    await env.event(env.service.publish(node, "normal"))
    answer = await env.get(node)
    assert [i["id"] for i in answer.items] == [i.id for i in env.service.nodes[node].items]


def nested(depth):
    return (f"<entry xmlns='{NS_ATOM}'><title>deep</title>" + "<d>" * depth + "core"
            + "</d>" * depth + "</entry>")


@pytest_twisted.ensureDeferred
async def test_one_megabyte_item_is_cached_whole_and_the_node_still_served(env):
    await env.sync()
    big = entry("big", "big").replace("Text of big", "x" * 1_000_000)
    await env.event(env.service.publish(BLOG, "big", big))
    await assert_cache_is_service(env)
    rows = {r.name: r for r in await env.cached_rows()}
    assert len(rows["big"].data) > 1_000_000
    assert rows["big"].parsed == {"title": "big", "node": BLOG}
    await assert_still_served(env)
    await assert_cache_is_service(env)


@pytest_twisted.ensureDeferred
async def test_deeply_nested_item_in_an_event_makes_the_service_answer(env, log_events):
    await env.sync()
    before = sorted(r.name for r in await env.cached_rows())
    await env.event(env.service.publish(BLOG, "deep", nested(5000)))
    # the cache can't hold it: it stops answering instead of answering without it
    assert await env.state() == "error"
    assert logged(log_events, "'deep' of node")
    assert "nested too deeply" in (await env.node()).extra["error"]
    answer = await env.get()
    assert answer.cached is False
    assert "deep" in [i["id"] for i in answer.items]
    assert sorted(r.name for r in await env.cached_rows()) == before  # nothing lost
    await assert_still_served(env)


@pytest_twisted.ensureDeferred
async def test_deeply_nested_item_met_during_a_sync_fails_it_with_a_reason(env):
    env.fill()
    env.service.publish(BLOG, "deep", nested(5000))
    first = await env.get()
    assert first.cached is False and len(first.items) == 13
    await env.cache.wait_background()
    assert await env.state() == "error"
    assert "'deep' of node" in (await env.node()).extra["error"]
    await assert_still_served(env)


@pytest_twisted.ensureDeferred
async def test_items_without_id_in_an_event_are_skipped_with_a_log_line(env, log_events):
    await env.sync()
    env.service.publish(BLOG, "named")  # what the service holds
    await env.event(env.service._event(
        f"<items node='{BLOG}'><item>{entry('x')}</item><item id=''>{entry('y')}</item>"
        f"<item id='named'>{entry('named')}</item></items>"))
    assert logged(log_events, "ignoring 2 item(s) without id")
    await assert_cache_is_service(env)
    await assert_still_served(env)
    await assert_cache_is_service(env)


# --- invalid JIDs and node names through the bridge ----------------------------------


async def bridge_answer(frontend, timeout=10.0):
    """The next answer the frontend gets (storage calls run in threads)."""
    deadline = reactor.seconds() + timeout
    while True:
        messages = frontend.received()
        if messages:
            assert len(messages) == 1, messages
            return messages[0]
        if reactor.seconds() > deadline:
            pytest.fail("no answer from the bridge")
        await task.deferLater(reactor, 0.01, lambda: None)


BAD_CALLS = [
    ("pubsub_get", {"service": "a@b@c"}, "InvalidRequest", "invalid service JID"),
    ("pubsub_get", {"service": "\x00"}, "InvalidRequest", "invalid service JID"),
    ("pubsub_get", {"service": "pubsub.example..org"}, "InvalidRequest",
     "invalid service JID"),
    ("pubsub_get", {"service": 5}, "InvalidParams", '"service" must be a string or null'),
    ("pubsub_get", {"service": ["x"]}, "InvalidParams", '"service" must be a string'),
    ("pubsub_get", {"node": ""}, "InvalidRequest", "node name"),
    ("pubsub_get", {"node": 5}, "InvalidParams", '"node" must be a string'),
    ("pubsub_get", {"node": "a\x01b"}, "InvalidRequest", "node name"),
    ("pubsub_get", {"node": "a\ud800b"}, "InvalidParams", "lone surrogate"),
    ("pubsub_get", {"node": "\ufffe"}, "InvalidRequest", "node name"),
    ("pubsub_get", {"node": "x" * 5000}, "InvalidRequest", "node name"),
    ("pubsub_publish", {"service": "a@b@c", "items": ["<a/>"]}, "InvalidRequest",
     "invalid service JID"),
    ("pubsub_publish", {"node": "a\x1fb", "items": ["<a/>"]}, "InvalidRequest",
     "node name"),
    ("pubsub_publish", {"items": [5]}, "InvalidParams", '"items"[0]'),
    ("pubsub_publish", {"items": "<a/>"}, "InvalidParams",
     '"items" must be an array of strings'),
    ("pubsub_publish", {"items": ["<!DOCTYPE a [<!ENTITY x 'boom'>]><a>&x;</a>"]},
     "InvalidRequest", "invalid XML"),
    ("cache_get", {"service": "a@b@c"}, "InvalidRequest", "invalid service JID"),
    ("cache_get", {"node": "a\x01b"}, "InvalidRequest", "node name"),
    ("cache_get", {"node": 5}, "InvalidParams", '"node" must be a string'),
    ("cache_node_state", {"service": "@"}, "InvalidRequest", "invalid service JID"),
    ("cache_node_state", {"node": None}, "InvalidParams", '"node" must be a string'),
    ("cache_sync", {"service": "a@b@c"}, "InvalidRequest", "invalid service JID"),
    ("cache_sync", {"node": "a\x01b"}, "InvalidRequest", "node name"),
    ("cache_sync", {"node": None}, "InvalidParams", '"node" must be a string'),
    ("cache_search", {"query": {"services": ["a@b@c"]}}, "InvalidQuery",
     "invalid service JID"),
]


@pytest_twisted.ensureDeferred
async def test_invalid_jids_and_node_names_get_typed_errors_and_the_bridge_serves_on(
        env, log_events):
    await env.sync()
    before = [(r.name, r.data) for r in await env.cached_rows()]
    frontend = Client(BridgeFactory(env.host.bridge, max_frame_size=1_000_000))
    normal = {"service": SERVICE.full(), "node": BLOG}
    for method, params, error_type, message in BAD_CALLS:
        # cache_search takes a query, not a node
        frontend.call(method, profile="alice",
                      **(params if method == "cache_search" else normal | params))
        answer = await bridge_answer(frontend)
        what = f"{method} {params!r}"
        assert "result" not in answer, what
        error = answer["error"]
        code = -32602 if error_type == "InvalidParams" else -32000
        assert (error["data"]["type"], error["code"]) == (error_type, code), what
        assert message in error["message"], what
        assert "Traceback" not in json.dumps(answer), what
        # a normal request right after is served, from the cache
        frontend.call("pubsub_get", profile="alice", **normal)
        served = (await bridge_answer(frontend))["result"]
        assert served["metadata"]["cached"] is True, what
        assert len(served["items"]) == 12, what
    # none of them reached the service as a stanza, or changed the cache
    assert not [iq for iq in env.client.sent if "\x01" in iq.toXml()]
    assert [(r.name, r.data) for r in await env.cached_rows()] == before
    assert not [e for e in log_events if e.get("log_failure") is not None]


@pytest_twisted.ensureDeferred
async def test_deeply_nested_item_asked_through_the_bridge_gets_a_typed_error(env):
    await env.sync()
    env.service.publish(BLOG, "deep", nested(5000))
    frontend = Client(BridgeFactory(env.host.bridge, max_frame_size=1_000_000))
    normal = {"service": SERVICE.full(), "node": BLOG}
    frontend.call("pubsub_get", profile="alice", use_cache=False, **normal)
    error = (await bridge_answer(frontend))["error"]
    assert (error["data"]["type"], error["code"]) == ("PubsubError", -32000)
    assert "'deep'" in error["message"] and "nested too deeply" in error["message"]
    # the other items are still served
    frontend.call("pubsub_get", profile="alice", use_cache=False,
                  item_ids=["i00", "i01"], **normal)
    served = (await bridge_answer(frontend))["result"]
    assert len(served["items"]) == 2
