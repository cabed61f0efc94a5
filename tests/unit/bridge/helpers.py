"""Helpers of the bridge tests."""

import json

from twisted.internet.testing import StringTransport

from libervia.backend.bridge.protocol import BridgeFactory


class Client:
    """A frontend connected through a StringTransport: what it sends, what it got."""

    def __init__(self, factory: BridgeFactory) -> None:
        self.transport = StringTransport()
        self.protocol = factory.buildProtocol(None)
        self.protocol.makeConnection(self.transport)

    def send_raw(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def send(self, message) -> None:
        self.send_raw(json.dumps(message).encode() + b"\n")

    def call(self, method: str, request_id=1, **params) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params, "id": request_id})

    def received(self) -> list:
        """Every message received since the last call, decoded; checks the framing."""
        data = self.transport.value()
        self.transport.clear()
        assert data == b"" or data.endswith(b"\n")
        # every frame must be valid UTF-8 and compact (one line)
        return [json.loads(line.decode("utf-8")) for line in data.splitlines()]

    def answer(self) -> dict:
        """The single message received; fails if there is not exactly one."""
        messages = self.received()
        assert len(messages) == 1, messages
        return messages[0]

    @property
    def closed(self) -> bool:
        return self.transport.disconnecting
