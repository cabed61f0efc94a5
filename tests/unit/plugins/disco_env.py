"""A host and a profile's client on a stub XML stream, for the service discovery and
entity capabilities unit tests: what handlers send is recorded, what a test passes to
``receive`` is dispatched as if read from the server, IQ requests are answered from
canned XML (or never, to reach their time-out on the clock)."""

from types import SimpleNamespace
from typing import Any

from twisted.internet import defer, task
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from wokkel.test.helpers import XmlStreamStub

from libervia.backend.bridge.server import Bridge
from libervia.backend.core.config import Config
from libervia.backend.core.plugins import PluginInfo
from libervia.backend.core.triggers import TriggerManager
from libervia.backend.core.xml_tools import parse_xml
from tests.unit.plugins.cache_env import Clients

ACCOUNT = JID("alice@example.org")
BOUND = JID("alice@example.org/libervia")


class LoadedPlugins:
    """The plugin loader, as far as service discovery reads it."""

    def __init__(self, infos: list[dict[str, Any]]) -> None:
        self.infos = [PluginInfo.from_dict(i) for i in infos]

    def loaded_infos(self) -> list[PluginInfo]:
        return list(self.infos)


class DiscoHost:
    """The backend, as the XEP-0030 and XEP-0115 plugins use it."""

    def __init__(self, settings: dict[str, dict[str, Any]] | None = None,
                 plugin_infos: list[dict[str, Any]] = (), storage: Any = None) -> None:
        self.reactor = task.Clock()
        self.config = Config.from_dict(settings or {}, env={})
        self.trigger = TriggerManager()
        self.bridge = Bridge(self)
        self.clients = Clients()
        self.plugin_manager = LoadedPlugins(list(plugin_infos))
        self.storage = storage
        self.plugins: dict[str, Any] = {}

    def call(self, method: str, **params: Any) -> defer.Deferred:
        """Call a bridge method as a frontend does (parameters checked)."""
        return self.bridge.call(method, params)


class StreamClient:
    """A connected profile on a stub stream.

    :ivar output: stanzas the handlers sent, in order
    :ivar sent: IQ requests sent through :meth:`request`, as elements
    :ivar answers: what the next requests get: XML text of the answer, or an exception;
        when it is empty, a request waits (see ``waiting``) until its time-out
    """

    def __init__(self, host: DiscoHost, name: str = "alice") -> None:
        self.host = host
        self.profile = SimpleNamespace(name=name, jid=ACCOUNT.full())
        self.jid = ACCOUNT
        self.bound_jid = BOUND
        self.is_connected = True
        self.stub = XmlStreamStub()
        self.output = self.stub.output
        self.sent: list[domish.Element] = []
        self.answers: list[Any] = []
        #: requests sent without a canned answer, in order: a test may answer them
        self.waiting: list[defer.Deferred] = []
        host.clients.clients[name] = self

    def attach(self, handler: Any) -> Any:
        """Attach a plugin's handler as the stream manager does, stream initialized."""
        handler.parent = self
        handler.makeConnection(self.stub.xmlstream)
        handler.connectionInitialized()
        return handler

    def send(self, obj: domish.Element) -> None:
        self.output.append(obj)

    def receive(self, xml: str) -> domish.Element:
        """Dispatch ``xml`` as a stanza from the server; return its element."""
        element = parse_xml(xml)
        self.stub.send(element)
        return element

    async def requests_sent(self, count: int) -> None:
        """Wait until ``count`` requests were sent (the database answers in its
        threads before a request goes)."""
        from twisted.internet import reactor

        for __ in range(10_000):
            if len(self.sent) >= count:
                return
            await task.deferLater(reactor, 0.001, lambda: None)
        raise AssertionError(f"{count} request(s) expected, {len(self.sent)} sent")

    def request(self, request: Any) -> defer.Deferred:
        self.sent.append(request.toElement())
        if not self.answers:
            d: defer.Deferred = defer.Deferred()
            if request.timeout:
                d.addTimeout(request.timeout, self.host.reactor)
            self.waiting.append(d)
            return d
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            return defer.fail(answer)
        return defer.succeed(parse_xml(answer))

