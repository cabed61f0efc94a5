"""One bad stanza or one failing handler never wedges a profile's stream.

The streams here are the client's own (its factory's
:class:`~libervia.backend.xmpp.client.RestrictedXmlStream`) on an in-memory transport;
stream events go through Twisted's dispatcher as on a real connection, which logs and
swallows what a bootstrap raises: a stream left half initialized there would stay so.
"""

import pytest
from twisted.internet import error as net_error
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.words.protocols.jabber import xmlstream
from twisted.words.xish import domish
from wokkel.subprotocols import XMPPHandler

from libervia.backend.core.exceptions import NotConnected
from libervia.backend.xmpp.client import (
    ConnectionState,
    StanzaNotSerializable,
    serialize_stanza,
)
from libervia.backend.xmpp.iq import IQRequest
from tests.unit.xmpp.test_xmpp_client import Connector, collect, make_client, next_delay

LONE_SURROGATE = "\ud800"


@pytest.fixture
def logs():
    events = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def texts(events):
    return [formatEvent(e) for e in events
            if e.get("log_namespace") == "libervia.backend.xmpp.client"]


def open_stream(client):
    """A connection made: the client's stream on an in-memory transport."""
    xs = client.factory.buildProtocol(None)
    transport = StringTransport()
    xs.makeConnection(transport)
    transport.clear()  # the stream header
    return xs, transport


def authenticate(xs):
    """What the authenticator dispatches once TLS, SASL and binding are done."""
    xs.dispatch(xs, xmlstream.STREAM_AUTHD_EVENT)


def stream_up(client):
    xs, transport = open_stream(client)
    authenticate(xs)
    return xs, transport


def drop(client, xs):
    reason = Failure(net_error.ConnectionLost())
    xs.connectionLost(reason)
    client.factory.clientConnectionLost(Connector(), reason)


def answer(xs, stanza_id):
    iq = domish.Element((None, "iq"))
    iq["type"], iq["id"] = "result", stanza_id
    xs.dispatch(iq)
    return iq


def request(stanza_id, payload=None):
    payload = payload if payload is not None else domish.Element(("urn:test", "query"))
    iq_request = IQRequest(None, "get", payload)
    iq_request.stanzaID = stanza_id
    return iq_request


def message(body):
    element = domish.Element((None, "message"))
    element["to"] = "bob@example.org"
    element.addElement("body", content=body)
    return element


def connected_after_a_drop():
    """A client that was connected, lost its connection and is trying again: stanzas
    and requests are queued for the new stream."""
    client, reactor, states = make_client()
    results = collect(client.connect())
    xs, __ = stream_up(client)
    assert results == [client]
    drop(client, xs)
    assert client.state is ConnectionState.RECONNECTING
    reactor.advance(next_delay(reactor))
    client.factory.startedConnecting(Connector())  # the new attempt
    return client, reactor


# the reconnection gap (issue #13)


def test_a_request_that_cant_be_serialized_fails_at_once_and_is_not_queued():
    client, __ = connected_after_a_drop()
    payload = domish.Element(("urn:test", "query"))
    payload["node"] = "bad" + LONE_SURROGATE
    results = collect(client.request(request("bad1", payload)))
    assert results[0].check(StanzaNotSerializable)
    assert "U+D800" in results[0].getErrorMessage()
    assert client._packetQueue == [] and client._iqDeferreds == {}
    xs, transport = stream_up(client)
    assert client.state is ConnectionState.CONNECTED
    assert transport.value() == b""


def test_a_queued_stanza_that_fails_at_login_is_dropped_and_the_stream_comes_up(logs):
    client, __ = connected_after_a_drop()
    before = message("first")
    bad = message("fine when queued")
    after = message("last")
    for stanza in (before, bad, after):
        client.send(stanza)
    bad.children[0].children[0] = "changed since" + LONE_SURROGATE  # the caller kept it
    xs, transport = stream_up(client)
    assert client.state is ConnectionState.CONNECTED
    sent = transport.value()
    assert b">first<" in sent and b">last<" in sent
    assert b"changed since" not in sent
    assert client._packetQueue == [] and client._initialized
    assert any("queued stanza dropped: stanza <message/>" in t and "U+D800" in t
               for t in texts(logs))
    # the stream works: later stanzas go straight out
    transport.clear()
    client.send(message("after login"))
    assert b">after login<" in transport.value()


def test_a_queued_request_that_fails_at_login_fails_its_caller(logs):
    client, reactor = connected_after_a_drop()
    payload = domish.Element(("urn:test", "query"))
    broken = collect(client.request(request("q1", payload)))
    fine = collect(client.request(request("q2")))
    payload["node"] = LONE_SURROGATE
    xs, transport = stream_up(client)
    assert client.state is ConnectionState.CONNECTED
    assert broken[0].check(StanzaNotSerializable)
    assert "stanza <iq/> (id q1)" in broken[0].getErrorMessage()
    assert b"id='q2'" in transport.value() or b'id="q2"' in transport.value()
    assert list(client._iqDeferreds) == ["q2"]
    result = answer(xs, "q2")
    assert fine == [result]
    # its time-out was cancelled with it
    reactor.advance(3600)
    assert len(broken) == 1


def test_a_queued_stanza_the_stream_refuses_for_another_reason_is_dropped(logs):
    client, __ = connected_after_a_drop()
    client._packetQueue.append(object())  # never checked: what Wokkel's queue may hold
    client.send(message("still sent"))
    xs, transport = stream_up(client)
    assert client.state is ConnectionState.CONNECTED
    assert b">still sent<" in transport.value()
    assert any("queued stanza dropped: raw XML data can't be serialized" in t
               for t in texts(logs))


# handlers


class Recorder(XMPPHandler):
    def __init__(self):
        super().__init__()
        self.calls = []

    def makeConnection(self, xs):  # noqa: N802 (Wokkel API)
        super().makeConnection(xs)
        self.calls.append("made")

    def connectionInitialized(self):  # noqa: N802 (Wokkel API)
        self.calls.append("initialized")

    def connectionLost(self, reason):  # noqa: N802 (Wokkel API)
        super().connectionLost(reason)
        self.calls.append("lost")


class Broken(XMPPHandler):
    """A plugin's handler failing at every step of the stream's life."""

    def makeConnection(self, xs):  # noqa: N802 (Wokkel API)
        raise RuntimeError("broken plugin: makeConnection")

    def connectionInitialized(self):  # noqa: N802 (Wokkel API)
        raise RuntimeError("broken plugin: connectionInitialized")

    def connectionLost(self, reason):  # noqa: N802 (Wokkel API)
        raise RuntimeError("broken plugin: connectionLost")


def test_a_handler_raising_at_initialization_is_logged_and_the_profile_connects(logs):
    client, __, states = make_client()
    Broken().setHandlerParent(client)
    recorder = Recorder()
    recorder.setHandlerParent(client)
    results = collect(client.connect())
    client.send(message("queued before login"))
    xs, transport = stream_up(client)
    assert results == [client]
    assert client.state is ConnectionState.CONNECTED and states[-1] is ConnectionState.CONNECTED
    assert recorder.calls == ["made", "initialized"]
    assert b">queued before login<" in transport.value()
    failed = [t for t in texts(logs) if "handler Broken failed" in t]
    assert [t.split(" in ")[1].split(";")[0] for t in failed] == [
        "makeConnection", "connectionInitialized"]


def test_a_handler_raising_when_the_connection_is_lost_does_not_stop_the_others():
    client, reactor, __ = make_client()
    Broken().setHandlerParent(client)
    recorder = Recorder()
    recorder.setHandlerParent(client)
    client.connect()
    xs, __ = stream_up(client)
    pending = collect(client.request(request("q1")))
    drop(client, xs)
    assert recorder.calls == ["made", "initialized", "lost"]
    # the request fails at once, not after its time-out, saying why
    assert pending[0].check(NotConnected)
    assert "connection lost: Connection to the other side was lost" in (
        pending[0].getErrorMessage())
    assert client.state is ConnectionState.RECONNECTING
    stream_up(client)
    assert client.state is ConnectionState.CONNECTED


def test_a_handler_added_to_a_connected_client_may_fail_without_harm(logs):
    client, __, __ = make_client()
    client.connect()
    stream_up(client)
    Broken().setHandlerParent(client)
    recorder = Recorder()
    recorder.setHandlerParent(client)
    assert recorder.calls == ["made", "initialized"]
    assert client.state is ConnectionState.CONNECTED
    assert len([t for t in texts(logs) if "handler Broken failed" in t]) == 2


def test_a_failing_state_listener_does_not_stop_the_login(logs):
    client, __, __ = make_client()

    def listener(c):
        raise RuntimeError("listener bug")

    client._on_state_change = listener
    results = collect(client.connect())
    stream_up(client)
    assert results == [client] and client.state is ConnectionState.CONNECTED
    assert any("connection state listener failed" in t for t in texts(logs))


# while connected


@pytest.mark.parametrize("where", ["attribute", "text", "control character", "not text"])
def test_sending_an_unserializable_element_while_connected_fails_with_a_typed_error(where):
    client, __, __ = make_client()
    client.connect()
    xs, transport = stream_up(client)
    element = message("hello")
    if where == "attribute":
        element["to"] = "bob" + LONE_SURROGATE
    elif where == "text":
        element.addElement("subject", content=LONE_SURROGATE)
    elif where == "control character":
        element.addElement("subject", content="nul\x00")
    else:
        element["thread"] = 42
    with pytest.raises(StanzaNotSerializable, match="stanza <message/>.*not sent"):
        client.send(element)
    assert transport.value() == b"" and not transport.disconnecting
    client.send(message("next"))
    assert b">next<" in transport.value()
    assert client.state is ConnectionState.CONNECTED


def test_a_request_that_cant_be_serialized_while_connected_fails_its_deferred():
    client, reactor, __ = make_client()
    client.connect()
    xs, transport = stream_up(client)
    payload = domish.Element(("urn:test", "query"))
    payload["node"] = LONE_SURROGATE
    results = collect(client.request(request("q1", payload)))
    assert results[0].check(StanzaNotSerializable)
    assert client._iqDeferreds == {} and transport.value() == b""
    assert reactor.getDelayedCalls() == []  # no time-out left behind
    fine = collect(client.request(request("q2")))
    assert fine == [] and b"q2" in transport.value()


def test_a_handler_writing_to_the_stream_itself_gets_the_typed_error():
    """Wokkel's handlers answer IQs through ``self.xmlstream.send``."""
    client, __, __ = make_client()
    client.connect()
    xs, transport = stream_up(client)
    with pytest.raises(StanzaNotSerializable):
        xs.send(message(LONE_SURROGATE))
    with pytest.raises(StanzaNotSerializable):
        xs.send("<presence to='" + LONE_SURROGATE + "'/>")
    assert transport.value() == b""


def test_serialized_stanzas_match_what_the_stream_writes():
    element = message("caf\u00e9 \U0001f600")
    assert serialize_stanza(element) == element.toXml().encode()
    assert serialize_stanza(b"<presence/>") == b"<presence/>"
    with pytest.raises(StanzaNotSerializable, match="raw XML data"):
        serialize_stanza(b"\xff")


def test_the_error_never_quotes_the_stanza():
    element = message("secret body" + LONE_SURROGATE)
    element["id"] = "not an id" + LONE_SURROGATE
    with pytest.raises(StanzaNotSerializable) as caught:
        serialize_stanza(element)
    message_text = str(caught.value)
    assert "secret body" not in message_text and LONE_SURROGATE not in message_text
    assert message_text.startswith("stanza <message/> holds the character U+D800")
