"""A host and a profile's client over a stub XML stream, for the presence and roster
unit tests."""

from types import SimpleNamespace
from typing import Any

from twisted.internet import task
from twisted.words.protocols.jabber.jid import JID
from wokkel.test.helpers import XmlStreamStub

from libervia.backend.core.triggers import TriggerManager
from libervia.backend.core.xml_tools import parse_xml
from libervia.backend.memory.storage import Storage
from tests.unit.plugins.cache_env import Clients, RecordingBridge


class StreamClient:
    """A profile's client whose stream is a Wokkel ``XmlStreamStub``: what it sends is
    in ``output``, what the server sends is given to :meth:`receive`."""

    def __init__(self, name: str = "alice") -> None:
        self.profile = SimpleNamespace(name=name)
        self.jid = JID(f"{name}@example.org/res")
        self.handlers: list[Any] = []
        self.stub: XmlStreamStub | None = None
        self.xmlstream: Any = None
        self.requests: list[Any] = []

    @property
    def is_connected(self) -> bool:
        return self.xmlstream is not None

    @property
    def output(self) -> list[Any]:
        return self.stub.output if self.stub is not None else []

    def add(self, handler: Any) -> None:
        handler.parent = self
        self.handlers.append(handler)

    def start_stream(self) -> XmlStreamStub:
        """A new stream, initialized: each handler is told, as Wokkel's manager does."""
        self.stub = XmlStreamStub()
        self.xmlstream = self.stub.xmlstream
        for handler in self.handlers:
            handler.makeConnection(self.xmlstream)
            handler.connectionInitialized()
        return self.stub

    def lose_stream(self) -> None:
        self.xmlstream = None
        for handler in self.handlers:
            handler.connectionLost(None)

    def send(self, obj: Any) -> None:
        self.xmlstream.send(obj)

    def request(self, request: Any) -> Any:
        """IQ requests go through the stream like Wokkel's: the answer is read back."""
        return request.send(self.xmlstream)

    def receive(self, xml: str) -> None:
        self.stub.send(parse_xml(xml))


class Host:
    """The parts of the backend the presence and roster plugins use."""

    def __init__(self, storage: Storage) -> None:
        self.reactor = task.Clock()
        self.storage = storage
        self.trigger = TriggerManager()
        self.bridge = RecordingBridge(self)
        self.clients = Clients()
        self.plugins: dict[str, Any] = {}

    def signals(self, name: str) -> list[dict[str, Any]]:
        return [data for signal, data in self.bridge.emitted if signal == name]

    async def call(self, method: str, **params: Any) -> Any:
        """A bridge method, called as a frontend does (parameters checked)."""
        return await self.bridge.call(method, params)
