"""A TCP relay on loopback between the backend and a server, to cut the link in tests.

``relay = await Relay.start(server_port)``; give the backend ``127.0.0.1:relay.port``
as the server's address.  ``relay.cut()`` drops the connections going through it and
refuses new ones (the backend sees its stream lost and tries to reconnect), until
``relay.restore()``.
"""

from __future__ import annotations

from twisted.internet import defer, protocol, reactor
from twisted.internet.interfaces import IListeningPort


class _Outgoing(protocol.Protocol):
    """The relay's side of the connection to the server."""

    def __init__(self, incoming: _Incoming) -> None:
        self.incoming = incoming

    def connectionMade(self) -> None:  # noqa: N802 (Twisted API)
        self.incoming.outgoing = self
        if self.incoming.pending:
            self.transport.write(b"".join(self.incoming.pending))
            self.incoming.pending.clear()
        self.incoming.transport.resumeProducing()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted API)
        self.incoming.transport.write(data)

    def connectionLost(self, reason: object) -> None:  # noqa: N802 (Twisted API)
        self.incoming.transport.loseConnection()


class _Incoming(protocol.Protocol):
    """A connection of the backend to the relay."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.outgoing: _Outgoing | None = None
        self.pending: list[bytes] = []

    def connectionMade(self) -> None:  # noqa: N802 (Twisted API)
        if self.relay.is_cut:
            self.transport.abortConnection()
            return
        self.relay.connections.add(self)
        self.transport.pauseProducing()
        factory = protocol.ClientFactory.forProtocol(lambda: _Outgoing(self))
        factory.clientConnectionFailed = lambda *__: self.transport.loseConnection()
        reactor.connectTCP("127.0.0.1", self.relay.target_port, factory)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted API)
        if self.outgoing is None:
            self.pending.append(data)
        else:
            self.outgoing.transport.write(data)

    def connectionLost(self, reason: object) -> None:  # noqa: N802 (Twisted API)
        self.relay.connections.discard(self)
        if self.outgoing is not None:
            self.outgoing.transport.loseConnection()

    def abort(self) -> None:
        self.transport.abortConnection()
        if self.outgoing is not None:
            self.outgoing.transport.abortConnection()


class Relay:
    """Forwards TCP connections from a loopback port to ``target_port``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.connections: set[_Incoming] = set()
        self.is_cut = False
        self._port: IListeningPort | None = None

    @classmethod
    async def start(cls, target_port: int) -> Relay:
        relay = cls(target_port)
        factory = protocol.Factory.forProtocol(lambda: _Incoming(relay))
        relay._port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        return relay

    @property
    def port(self) -> int:
        assert self._port is not None
        return self._port.getHost().port

    def cut(self) -> None:
        """Drop every connection through the relay, and refuse new ones."""
        self.is_cut = True
        for connection in list(self.connections):
            connection.abort()

    def restore(self) -> None:
        """Let connections through again."""
        self.is_cut = False

    def stop(self) -> defer.Deferred:
        self.cut()
        return defer.maybeDeferred(self._port.stopListening) if self._port else defer.succeed(None)
