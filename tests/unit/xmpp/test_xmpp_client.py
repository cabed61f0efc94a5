"""XMPPClient life cycle without network: first attempt, reconnection, fatal failures."""

import types

import pytest
from OpenSSL import SSL
from twisted.internet import error as net_error
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from libervia.backend.core.interfaces import Client
from libervia.backend.xmpp.client import (
    CertificateError,
    ConnectionFailed,
    ConnectionState,
    XMPPClient,
)
from libervia.backend.xmpp.profiles import ConnectionOptions, Profile
from libervia.backend.xmpp.sasl import errors as sasl_errors


class Connector:
    def __init__(self):
        self.attempts = 1
        self.disconnected = False

    def connect(self):
        self.attempts += 1

    def disconnect(self):
        self.disconnected = True

    def stopConnecting(self):  # noqa: N802
        pass


def make_client(options=None, **kwargs):
    reactor = MemoryReactorClock()
    profile = Profile("alice", "alice@example.org",
                      options or ConnectionOptions(host="127.0.0.1", port=5299))
    states = []
    client = XMPPClient(None, profile, "secret password", reactor=reactor,
                        on_state_change=lambda c: states.append(c.state), **kwargs)
    return client, reactor, states


def collect(d):
    results = []
    d.addBoth(results.append)
    return results


def fake_stream():
    return types.SimpleNamespace(addObserver=lambda *a, **k: None, send=lambda o: None,
                                 transport=None)


def next_delay(reactor):
    """Seconds until the reconnection the factory scheduled."""
    return reactor.getDelayedCalls()[0].getTime() - reactor.seconds()


def assert_failed_for_good(results, client, reactor, error_class):
    """The first attempt failed with ``error_class`` and nothing is retried."""
    assert results[0].check(error_class)
    assert client.state is ConnectionState.FAILED
    assert reactor.getDelayedCalls() == []


def connected(client):
    """Simulate a successful stream initialization."""
    client._authd(fake_stream())


def test_connect_uses_the_profile_host_and_port():
    client, reactor, __ = make_client()
    client.connect()
    host, port, factory, timeout, __ = reactor.tcpClients[0]
    assert (host, port) == ("127.0.0.1", 5299)
    assert factory is client.factory


def test_direct_tls_connects_with_tls_to_port_5223_by_default():
    client, reactor, __ = make_client(ConnectionOptions(direct_tls=True))
    client.connect()
    host, port, factory, context, timeout, __ = reactor.sslClients[0]
    assert (host, port) == ("example.org", 5223)
    assert context is client.tls


def test_first_attempt_failure_is_reported_and_not_retried():
    client, reactor, states = make_client()
    results = collect(client.connect())
    connector = Connector()
    client.factory.clientConnectionFailed(
        connector, Failure(net_error.ConnectionRefusedError("refused")))
    assert results[0].check(ConnectionFailed)
    assert "connection was refused" in results[0].getErrorMessage().lower() or \
        "refused" in results[0].getErrorMessage()
    assert client.state is ConnectionState.FAILED
    assert states == [ConnectionState.CONNECTING, ConnectionState.FAILED]
    reactor.advance(3600)
    assert connector.attempts == 1
    assert reactor.getDelayedCalls() == []


def test_lost_connection_reconnects_with_growing_jittered_delays():
    client, reactor, states = make_client()
    results = collect(client.connect())
    connected(client)
    assert results == [client] and client.state is ConnectionState.CONNECTED
    connector = Connector()
    delays = []
    for __ in range(12):
        client.factory.clientConnectionLost(connector, Failure(net_error.ConnectionLost()))
        assert client.state is ConnectionState.RECONNECTING
        calls = reactor.getDelayedCalls()
        assert len(calls) == 1
        delays.append(next_delay(reactor))
        before = connector.attempts
        reactor.advance(delays[-1])
        assert connector.attempts == before + 1
    assert 0.7 <= delays[0] <= 1.0
    assert delays[4] > delays[0] * 4  # exponential growth
    assert max(delays) <= client.factory.maxDelay
    assert delays[-1] >= client.factory.maxDelay * (1 - client.factory.jitter)
    # jitter: the delays are not the exact powers of the factor
    assert any(abs(d - 2 ** i) > 1e-6 for i, d in enumerate(delays))


def test_successful_reconnection_resets_the_delay():
    client, reactor, __ = make_client()
    client.connect()
    connected(client)
    connector = Connector()
    for __ in range(5):
        client.factory.clientConnectionLost(connector, Failure(net_error.ConnectionLost()))
        reactor.advance(next_delay(reactor))
    connected(client)
    client.factory.clientConnectionLost(connector, Failure(net_error.ConnectionLost()))
    delay = next_delay(reactor)
    assert delay <= 1.0


def test_wrong_password_stops_for_good():
    client, reactor, states = make_client()
    results = collect(client.connect())
    client.initializationFailed(Failure(sasl_errors.InvalidCredentials(
        "wrong password or unknown user: check the profile's credentials", "not-authorized")))
    assert results[0].check(sasl_errors.InvalidCredentials)
    assert client.state is ConnectionState.FAILED
    assert "wrong password" in client.error
    connector = Connector()
    client.factory.clientConnectionLost(connector, Failure(net_error.ConnectionDone()))
    reactor.advance(3600)
    assert connector.attempts == 1


def test_wrong_password_after_a_reconnection_also_stops():
    client, reactor, __ = make_client()
    client.connect()
    connected(client)
    connector = Connector()
    client.factory.clientConnectionLost(connector, Failure(net_error.ConnectionLost()))
    reactor.advance(next_delay(reactor))
    # the password was changed on the server meanwhile
    client.initializationFailed(Failure(sasl_errors.InvalidCredentials("wrong password")))
    client.factory.clientConnectionLost(connector, Failure(net_error.ConnectionDone()))
    assert client.state is ConnectionState.FAILED
    assert reactor.getDelayedCalls() == []


def test_temporary_auth_failure_is_retried_after_a_connection():
    client, reactor, __ = make_client()
    client.connect()
    connected(client)
    connector = Connector()
    client.factory.clientConnectionLost(connector, Failure(net_error.ConnectionLost()))
    reactor.advance(next_delay(reactor))
    client.initializationFailed(Failure(sasl_errors.TemporaryAuthFailure("try later")))
    assert client.state is ConnectionState.RECONNECTING
    client.factory.clientConnectionLost(connector, Failure(net_error.ConnectionDone()))
    assert len(reactor.getDelayedCalls()) == 1


def test_certificate_failure_is_fatal_and_explained():
    client, reactor, __ = make_client()
    results = collect(client.connect())
    ssl_error = SSL.Error([("SSL routines", "", "certificate verify failed")])
    client.factory.clientConnectionLost(Connector(), Failure(ssl_error))
    assert_failed_for_good(results, client, reactor, CertificateError)
    assert "CA file" in results[0].getErrorMessage()


def test_host_name_mismatch_is_told_from_the_stream_not_the_connector():
    from service_identity import VerificationError

    client, reactor, __ = make_client()
    results = collect(client.connect())
    # TLS aborts the TCP connection: the connector only sees the abort, the stream
    # gets service_identity's verdict first
    client._disconnected(Failure(VerificationError(errors=[])))
    client.factory.clientConnectionLost(Connector(), Failure(net_error.ConnectionAborted()))
    assert_failed_for_good(results, client, reactor, CertificateError)
    assert "not valid for example.org" in results[0].getErrorMessage()


def test_disconnect_stops_reconnection():
    client, reactor, states = make_client()
    client.connect()
    connected(client)
    client.xmlstream = None  # no stream to close politely in this test
    results = collect(client.disconnect())
    assert results == [None]
    assert client.state is ConnectionState.DISCONNECTED
    client.factory.clientConnectionLost(Connector(), Failure(net_error.ConnectionDone()))
    assert reactor.getDelayedCalls() == []


def test_info_reports_the_negotiation():
    client, __, __ = make_client()
    info = client.info()
    assert info["state"] == "disconnected" and info["sasl_mechanism"] is None
    assert info["jid"] == "alice@example.org"


@pytest.mark.parametrize("secret", ["secret password"])
def test_client_never_logs_traffic(secret):
    client, __, __ = make_client()
    assert client.logTraffic is False


class Transport:
    """Records whether the stream is read."""

    def __init__(self):
        self.calls = []

    def pauseProducing(self):  # noqa: N802 (Twisted API)
        self.calls.append("pause")

    def resumeProducing(self):  # noqa: N802 (Twisted API)
        self.calls.append("resume")


def reading_stream(client):
    """A stream up and initialized, with a recording transport; it keeps what is sent."""
    stream = types.SimpleNamespace(addObserver=lambda *a, **k: None, sent=[],
                                   transport=Transport())
    stream.send = stream.sent.append
    client._connected(stream)
    client._authd(stream)
    return stream


def test_held_reading_pauses_the_stream_until_released():
    client, __, __ = make_client()
    stream = reading_stream(client)
    client.hold_reading(True)
    client.hold_reading(True)
    assert stream.transport.calls == ["pause"]
    client.hold_reading(False)
    assert stream.transport.calls == ["pause", "resume"]


def test_held_reading_goes_on_while_an_iq_answer_is_awaited():
    """What holds the reading may be waiting for that answer: no deadlock."""
    from twisted.words.xish import domish

    from libervia.backend.xmpp.iq import IQRequest

    client, __, __ = make_client()
    stream = reading_stream(client)
    client.hold_reading(True)
    answer = collect(client.request(IQRequest(None, "get", domish.Element(("q", "q")))))
    assert stream.transport.calls == ["pause", "resume"]
    iq = domish.Element((None, "iq"))
    iq["type"], iq["id"] = "result", stream.sent[0]["id"]
    client._onIQResponse(iq)
    assert answer == [iq]
    assert stream.transport.calls == ["pause", "resume", "pause"]


def test_a_new_stream_is_read_whatever_the_previous_one_was():
    client, __, __ = make_client()
    stream = reading_stream(client)
    client.hold_reading(True)
    client._disconnected(Failure(net_error.ConnectionLost()))
    client.hold_reading(False)
    assert stream.transport.calls == ["pause"]
    new = reading_stream(client)
    client.hold_reading(True)
    assert new.transport.calls == ["pause"]


def test_the_client_fits_the_protocol_plugins_use():
    client, __, __ = make_client()
    assert isinstance(client, Client)
    assert client.profile.name == "alice"
    assert client.jid.userhost() == "alice@example.org"
    assert not client.is_connected
