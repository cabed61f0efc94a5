"""Every step of a connection is bounded in time (issue #15, point 1).

The client runs on a fake clock, its stream on a transport that carries what the test
scripts the server to say, then stays silent: at each step, the time-out of that step
(and only it) aborts the attempt, with an error naming the step and the server.
"""

import re

import pytest
from twisted.internet import error as net_error
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.words.protocols.jabber import xmlstream

from libervia.backend.core.config import Config
from libervia.backend.core.exceptions import ConfigError, NotConnected
from libervia.backend.xmpp.client import ConnectionState, ConnectionTimeout
from libervia.backend.xmpp.sasl.channel_binding import StaticChannelBinding
from libervia.backend.xmpp.steps import ConnectionStep
from tests.unit.xmpp.test_xmpp_client import Connector, collect, make_client, next_delay

CONNECT_TIMEOUT = 5.0
STEP_TIMEOUT = 7.0

HEADER = (b"<stream:stream xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams' from='example.org' "
          b"id='s1' version='1.0'>")
FEATURES_TLS = (b"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>"
                b"<required/></starttls></stream:features>")
PROCEED = b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
FEATURES_SASL = (b"<stream:features><mechanisms "
                 b"xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism>"
                 b"</mechanisms></stream:features>")
SUCCESS = b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"
FEATURES_BIND = (b"<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
                 b"</stream:features>")
FEATURES_SESSION = (b"<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
                    b"<session xmlns='urn:ietf:params:xml:ns:xmpp-session'/>"
                    b"</stream:features>")
HANDSHAKE = object()  # the TLS handshake completes
BOUND = object()  # the server answers the bind request


class SilentTransport(StringTransport):
    """What the client writes is kept; the server says only what the test delivers.

    Aborting it loses the connection as TCP does: the stream, then the factory.
    """

    def __init__(self, client):
        super().__init__()
        self.client = client
        self.aborted = False
        self.tls = None

    def startTLS(self, context):  # noqa: N802 (Twisted API)
        self.tls = context

    def abortConnection(self):  # noqa: N802 (Twisted API)
        self.aborted = True
        reason = Failure(net_error.ConnectionAborted())
        self.protocol.connectionLost(reason)
        self.client.factory.clientConnectionLost(Connector(), reason)


def client_with_timeouts(**kwargs):
    return make_client(connect_timeout=CONNECT_TIMEOUT, step_timeout=STEP_TIMEOUT,
                       **kwargs)


def open_stream(client):
    """The TCP connection is made: the client's stream on a silent transport."""
    xs = client.factory.buildProtocol(None)
    transport = SilentTransport(client)
    transport.protocol = xs
    # PLAIN over the (pretended) TLS of the transport
    client.factory.authenticator.sasl_channel_binding_factory = (
        lambda stream: StaticChannelBinding({}, "TLSv1.3"))
    xs.makeConnection(transport)
    return xs, transport


def deliver(xs, transport, script):
    for part in script:
        if part is HANDSHAKE:
            xs.handshakeCompleted()
        elif part is BOUND:
            bind = re.search(rb"<iq [^>]*id=.([^'\"]+)", transport.value())
            xs.dataReceived(
                b"<iq type='result' id='" + bind[1] + b"'><bind "
                b"xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>alice@example.org/r1"
                b"</jid></bind></iq>")
        else:
            xs.dataReceived(part)


#: what the server says before going silent, and the step it is silent in
SCRIPTS = [
    ([], ConnectionStep.STREAM_HEADER),
    ([HEADER], ConnectionStep.STREAM_FEATURES),
    ([HEADER, FEATURES_TLS], ConnectionStep.STARTTLS),
    ([HEADER, FEATURES_TLS, PROCEED], ConnectionStep.TLS_HANDSHAKE),
    ([HEADER, FEATURES_TLS, PROCEED, HANDSHAKE], ConnectionStep.STREAM_HEADER),
    ([HEADER, FEATURES_TLS, PROCEED, HANDSHAKE, HEADER], ConnectionStep.STREAM_FEATURES),
    ([HEADER, FEATURES_TLS, PROCEED, HANDSHAKE, HEADER, FEATURES_SASL],
     ConnectionStep.SASL),
    ([HEADER, FEATURES_TLS, PROCEED, HANDSHAKE, HEADER, FEATURES_SASL, SUCCESS],
     ConnectionStep.STREAM_HEADER),
    ([HEADER, FEATURES_TLS, PROCEED, HANDSHAKE, HEADER, FEATURES_SASL, SUCCESS, HEADER,
      FEATURES_BIND], ConnectionStep.BIND),
    ([HEADER, FEATURES_TLS, PROCEED, HANDSHAKE, HEADER, FEATURES_SASL, SUCCESS, HEADER,
      FEATURES_SESSION, BOUND], ConnectionStep.SESSION),
]


@pytest.mark.parametrize(("script", "silent_step"), SCRIPTS,
                         ids=[f"{n}-{s.name}" for n, (__, s) in enumerate(SCRIPTS)])
def test_a_server_silent_at_a_step_fails_the_first_attempt_naming_the_step(
    script, silent_step
):
    client, reactor, states = client_with_timeouts()
    results = collect(client.connect())
    xs, transport = open_stream(client)
    deliver(xs, transport, script)
    assert client._steps.step is silent_step
    reactor.advance(STEP_TIMEOUT - 0.01)
    assert results == [] and not transport.aborted
    reactor.advance(0.01)
    assert transport.aborted
    error = results[0].value
    assert isinstance(error, ConnectionTimeout)
    assert (error.step, error.server, error.timeout) == (
        silent_step, "127.0.0.1:5299", STEP_TIMEOUT)
    assert str(error).startswith(
        f"the server 127.0.0.1:5299 did not answer during {silent_step.value} within 7 s")
    assert "[xmpp] step_timeout" in str(error)
    # the profile is not left connecting, and nothing is retried
    assert client.state is ConnectionState.FAILED and client.error == str(error)
    assert states == [ConnectionState.CONNECTING, ConnectionState.FAILED]
    assert reactor.getDelayedCalls() == []


def test_direct_tls_times_the_handshake_first():
    from libervia.backend.xmpp.profiles import ConnectionOptions

    client, reactor, __ = make_client(
        ConnectionOptions(host="127.0.0.1", port=5300, direct_tls=True),
        connect_timeout=CONNECT_TIMEOUT, step_timeout=STEP_TIMEOUT)
    results = collect(client.connect())
    xs, transport = open_stream(client)
    assert client._steps.step is ConnectionStep.TLS_HANDSHAKE
    xs.handshakeCompleted()
    assert client._steps.step is ConnectionStep.STREAM_HEADER
    reactor.advance(STEP_TIMEOUT)
    assert results[0].value.server == "127.0.0.1:5300"
    assert results[0].value.step is ConnectionStep.STREAM_HEADER


def test_a_tcp_connection_never_made_fails_after_the_connect_timeout():
    client, reactor, states = client_with_timeouts()
    results = collect(client.connect())
    assert reactor.tcpClients[0][3] == CONNECT_TIMEOUT  # the reactor's own limit too
    reactor.advance(CONNECT_TIMEOUT - 0.01)
    assert results == [] and client.state is ConnectionState.CONNECTING
    reactor.advance(0.01)
    error = results[0].value
    assert isinstance(error, ConnectionTimeout) and error.step is ConnectionStep.TCP
    assert str(error).startswith(
        "the server 127.0.0.1:5299 did not answer during the TCP connection within 5 s")
    assert "[xmpp] connect_timeout" in str(error)
    assert states == [ConnectionState.CONNECTING, ConnectionState.FAILED]
    assert reactor.getDelayedCalls() == []


def test_the_reactors_own_connect_timeout_is_reported_the_same_way():
    client, reactor, __ = client_with_timeouts()
    results = collect(client.connect())
    client.factory.clientConnectionFailed(Connector(), Failure(net_error.TimeoutError()))
    assert results[0].check(ConnectionTimeout)
    assert results[0].value.step is ConnectionStep.TCP
    # reported once: a late report of the same attempt changes nothing
    client.factory.clientConnectionFailed(Connector(), Failure(net_error.UserError()))
    assert client.state is ConnectionState.FAILED and "TCP connection" in client.error


def test_each_step_gets_its_own_time_not_what_the_previous_left():
    client, reactor, __ = client_with_timeouts()
    results = collect(client.connect())
    reactor.advance(CONNECT_TIMEOUT - 1)
    xs, transport = open_stream(client)
    reactor.advance(STEP_TIMEOUT - 1)
    deliver(xs, transport, [HEADER])
    reactor.advance(STEP_TIMEOUT - 1)
    deliver(xs, transport, [FEATURES_TLS])
    reactor.advance(STEP_TIMEOUT - 1)
    assert results == [] and not transport.aborted
    reactor.advance(1)
    assert results[0].value.step is ConnectionStep.STARTTLS


def test_a_step_timing_out_in_a_reconnection_is_retried_with_the_back_off():
    client, reactor, states = client_with_timeouts()
    collect(client.connect())
    xs, transport = open_stream(client)
    deliver(xs, transport, [HEADER, FEATURES_TLS, PROCEED, HANDSHAKE, HEADER,
                            FEATURES_SASL, SUCCESS, HEADER, FEATURES_BIND, BOUND])
    # a server without the (obsolete) session step: the stream is up
    assert client.state is ConnectionState.CONNECTED, client.error
    assert client._steps.step is None and reactor.getDelayedCalls() == []
    transport.abortConnection()  # the connection is lost
    assert client.state is ConnectionState.RECONNECTING
    reactor.advance(next_delay(reactor))
    client.factory.startedConnecting(Connector())  # the reconnection attempt
    xs, transport = open_stream(client)
    reactor.advance(STEP_TIMEOUT)
    assert transport.aborted
    assert client.state is ConnectionState.RECONNECTING
    assert "did not answer during the stream header" in client.error
    assert len(reactor.getDelayedCalls()) == 1  # the next attempt, scheduled


def test_a_request_waits_for_a_running_attempt_and_fails_typed_when_it_times_out():
    from twisted.words.xish import domish

    from libervia.backend.xmpp.iq import IQRequest

    client, reactor, __ = client_with_timeouts()
    collect(client.connect())
    waiting = collect(client.request(IQRequest(None, "get", domish.Element(("q", "q")))))
    assert waiting == []
    reactor.advance(CONNECT_TIMEOUT)
    assert waiting[0].check(NotConnected)
    assert "did not answer during the TCP connection" in waiting[0].getErrorMessage()
    assert client._packetQueue == []
    # failed: a new request fails at once, saying why
    later = collect(client.request(IQRequest(None, "get", domish.Element(("q", "q")))))
    assert later[0].check(NotConnected)
    assert "is not connected (failed: the server 127.0.0.1:5299" in (
        later[0].getErrorMessage())


def test_disconnect_during_a_step_stops_its_timer():
    client, reactor, states = client_with_timeouts()
    collect(client.connect())
    xs, __ = open_stream(client)
    xs.transport = None  # nothing to close politely in this test
    client.xmlstream = None
    collect(client.disconnect())
    assert client._steps.step is None
    reactor.advance(3600)
    assert states[-1] is ConnectionState.DISCONNECTED


def test_a_deliberate_stop_never_logs_nor_schedules_a_reconnection():
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        client, reactor, states = client_with_timeouts()
        collect(client.connect())
        xs, transport = open_stream(client)
        deliver(xs, transport, [HEADER, FEATURES_TLS, PROCEED, HANDSHAKE, HEADER,
                                FEATURES_SASL, SUCCESS, HEADER, FEATURES_BIND, BOUND])
        stopped = collect(client.disconnect())
        assert b"</stream:stream>" in transport.value()
        # the server closes its side
        reason = Failure(net_error.ConnectionDone())
        xs.connectionLost(reason)
        client.factory.clientConnectionLost(Connector(), reason)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert stopped == [None]
    assert states[-2:] == [ConnectionState.CONNECTED, ConnectionState.DISCONNECTED]
    lines = [formatEvent(e) for e in events
             if e.get("log_namespace") == "libervia.backend.xmpp.client"]
    assert not any("reconnecting" in line for line in lines), lines
    assert reactor.getDelayedCalls() == []


@pytest.mark.parametrize("value", ["0", "-3", "soon", "nan"])
def test_step_timeouts_are_checked_settings(value):
    for key in ("connect_timeout", "step_timeout"):
        with pytest.raises(ConfigError, match=f"'{key}' of section \\[xmpp\\]"):
            Config.from_dict({"xmpp": {key: value}}, env={})


def test_step_timeouts_default_below_lis_own_deadline():
    config = Config.from_dict({}, env={})
    assert config.get("xmpp", "connect_timeout") == 20.0
    assert config.get("xmpp", "step_timeout") == 20.0
    custom = Config.from_dict({"xmpp": {"step_timeout": "2.5"}}, env={})
    assert custom.get("xmpp", "step_timeout") == 2.5


def test_the_stream_reports_tls_handshakes_to_its_observers():
    client, __, __ = client_with_timeouts()
    xs = client.factory.buildProtocol(None)
    seen = []
    xs.addObserver("//event/libervia/tls-handshake-done", seen.append)
    xs.handshakeCompleted()
    assert seen == [xs]
    assert xmlstream.STREAM_START_EVENT  # the other event the client times the steps by


def test_a_request_that_cant_be_serialized_says_so_even_when_not_connected():
    from twisted.words.xish import domish

    from libervia.backend.xmpp.client import StanzaNotSerializable
    from libervia.backend.xmpp.iq import IQRequest

    client, __, __ = client_with_timeouts()
    payload = domish.Element(("urn:test", "query"))
    payload["node"] = "bad\ud800"
    refused = collect(client.request(IQRequest(None, "get", payload)))
    assert refused[0].check(StanzaNotSerializable)
    fine = collect(client.request(IQRequest(None, "get", domish.Element(("q", "q")))))
    assert fine[0].check(NotConnected)
    assert "is not connected (disconnected)" in fine[0].getErrorMessage()
