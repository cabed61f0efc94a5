"""A host and a profile's client over a stub XML stream, for the presence and roster
unit tests."""

from types import SimpleNamespace
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.words.protocols.jabber import error as jabber_error
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
        #: the stream features the server offers, by (namespace, name)
        self.features: dict[tuple[str, str], Any] = {}
        self._waiting: dict[str, defer.Deferred] = {}

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
        self.xmlstream.features = dict(self.features)
        self._waiting = {}
        self.xmlstream.addObserver('/iq[@type="result"]', self._on_answer)
        self.xmlstream.addObserver('/iq[@type="error"]', self._on_answer)
        for handler in self.handlers:
            handler.makeConnection(self.xmlstream)
            handler.connectionInitialized()
        return self.stub

    def lose_stream(self) -> None:
        self.xmlstream = None
        waiting, self._waiting = self._waiting, {}
        for d in waiting.values():
            d.errback(ConnectionError("stream lost"))
        for handler in self.handlers:
            handler.connectionLost(None)

    def send(self, obj: Any) -> None:
        self.xmlstream.send(obj)

    def request(self, request: Any) -> defer.Deferred:
        """Send an IQ request on the stream; its Deferred fires with the answer the
        test gives with :meth:`receive` (as Wokkel's stream manager does)."""
        element = request.toElement()
        d: defer.Deferred = defer.Deferred()
        self._waiting[element["id"]] = d
        self.xmlstream.send(element)
        return d

    def _on_answer(self, iq: Any) -> None:
        d = self._waiting.pop(iq.getAttribute("id"), None)
        if d is None:
            return
        if iq.getAttribute("type") == "result":
            d.callback(iq)
        else:
            d.errback(jabber_error.exceptionFromStanza(iq))

    def sent_requests(self) -> list[Any]:
        """The IQ requests sent and not answered yet, oldest first."""
        return [e for e in self.output if e.name == "iq"
                and e.getAttribute("id") in self._waiting]

    def answer(self, request: Any, content: str = "", type_: str = "result") -> None:
        """Answer an IQ request the client sent."""
        self.receive(f"<iq xmlns='jabber:client' type='{type_}' id='{request['id']}'>"
                     f"{content}</iq>")

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


async def until(check: Any, timeout: float = 5.0) -> Any:
    """Poll ``check`` (the storage answers from its threads) until it gives a truthy
    value, and give it."""
    for __ in range(int(timeout / 0.005)):
        value = check()
        if value:
            return value
        await task.deferLater(reactor, 0.005, lambda: None)
    raise AssertionError(f"{check} never held")
