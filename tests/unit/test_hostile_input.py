"""Hostile XML from the server: a DTD or entity declarations on the XMPP stream.

RFC 6120 §11.1 forbids them; Expat would otherwise read an internal DTD subset and
expand its entities into stanzas.  The client's real Twisted XML stream is fed through
an in-memory transport: the stream must be closed with ``restricted-xml`` before
anything is expanded, the connection attempt must fail with a message saying why, and
no reconnection must be scheduled (the server would only do it again).
"""

import pytest
from twisted.internet import error as net_error
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from libervia.backend.core.profiles import ConnectionOptions, Profile
from libervia.backend.core.xmpp import (
    ConnectionState,
    RestrictedXMLError,
    RestrictedXmlStream,
    XMPPClient,
)

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
