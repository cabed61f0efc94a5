"""A backend host with the pubsub cache on a real storage, and a fake service, for the
cache's unit tests (see ``fake_pubsub``)."""

from typing import Any

from twisted.internet import defer, reactor, task
from twisted.words.protocols.jabber.jid import JID

from libervia.backend.bridge.server import Bridge
from libervia.backend.core.config import Config
from libervia.backend.core.exceptions import NotConnected, ProfileNotFound
from libervia.backend.core.triggers import TriggerManager
from libervia.backend.memory.storage import Storage
from libervia.backend.plugins.plugin_xep_0030 import XEP_0030
from libervia.backend.plugins.plugin_xep_0059 import XEP_0059, RSMRequest
from libervia.backend.plugins.plugin_xep_0092 import XEP_0092
from libervia.backend.plugins.pubsub_cache import (
    PubsubCache,
)
from libervia.backend.plugins.xep_0060 import XEP_0060
from libervia.backend.xmpp.profiles import ProfileManager
from tests.unit.plugins.fake_pubsub import (
    NS_ATOM,
    FakePubsubService,
    StubClient,
)

SERVICE = JID("pubsub.example.org")
BLOG = "urn:xmpp:microblog:0"


class RecordingBridge(Bridge):
    """The real bridge registry, remembering the signals emitted."""

    def __init__(self, host: Any) -> None:
        super().__init__(host)
        self.emitted: list[tuple[str, dict[str, Any]]] = []

    def emit_signal(self, name: str, **data: Any) -> int:
        self.emitted.append((name, data))
        return super().emit_signal(name, **data)


class NotifyingClock(task.Clock):
    """A Clock telling when something is scheduled on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waiters: list[defer.Deferred] = []

    def callLater(self, *args: Any, **kwargs: Any) -> Any:  # noqa: N802 (Twisted API)
        call = super().callLater(*args, **kwargs)
        waiters, self.waiters = self.waiters, []
        for d in waiters:
            # not from inside callLater: let the caller finish what it was doing
            reactor.callLater(0, d.callback, None)
        return call

    def next_call(self) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.waiters.append(d)
        return d


class Clients:
    def __init__(self) -> None:
        self.clients: dict[str, StubClient] = {}

    def get(self, name: str) -> StubClient:
        try:
            return self.clients[name]
        except KeyError:
            raise NotConnected(f"profile {name!r} is not connected") from None

    #: the host's profile manager, when it has one: as in the backend, a profile
    #: exists when it is connected or stored (what is cached is read offline)
    profiles: ProfileManager | None = None

    def check_profile(self, name: str) -> defer.Deferred:
        if name in self.clients:
            return defer.succeed(None)
        if self.profiles is not None:
            return defer.ensureDeferred(self.profiles.require(name))
        return defer.fail(ProfileNotFound(name))

    def is_connected(self, name: str) -> bool:
        client = self.clients.get(name)
        return client is not None and getattr(client, "is_connected", True)


class Host:
    """What the plugins use of the backend, with a real storage and trigger manager."""

    def __init__(self, storage: Storage, settings: dict[str, Any] | None = None) -> None:
        self.reactor = NotifyingClock()
        self.storage = storage
        self.config = Config.from_dict({"plugin PUBSUB_CACHE": settings or {}}, env={})
        self.trigger = TriggerManager()
        self.bridge = RecordingBridge(self)
        self.clients = Clients()
        self.profiles = ProfileManager(self)
        self.clients.profiles = self.profiles
        self.plugins: dict[str, Any] = {}
        self.plugins["XEP-0030"] = XEP_0030(self)
        self.plugins["XEP-0059"] = XEP_0059(self)
        self.plugins["XEP-0092"] = XEP_0092(self)
        self.plugins["XEP-0060"] = XEP_0060(self)
        self.plugins["PUBSUB_CACHE"] = PubsubCache(self)


def bridge_method(cache: PubsubCache, name: str) -> Any:
    """The function the bridge calls for the cache's method ``cache_{name}``."""
    return cache.host.bridge.methods[f"cache_{name}"].func


def title_parser(client: Any, item: Any, service: JID, node: str) -> dict[str, Any]:
    return {"title": str(next(item.entry.elements(NS_ATOM, "title"))), "node": node}


BLOG_ANALYSER = {"name": "test_blog", "type": "blog", "node": BLOG,
                 "namespace": NS_ATOM, "to_sync": True, "parser": title_parser}


class Env:
    """A backend host, a client of profile ``name`` and a fake service."""

    def __init__(self, storage: Storage, service: FakePubsubService, name: str = "alice",
                 settings: dict[str, Any] | None = None,
                 analysers: tuple[dict[str, Any], ...] = (BLOG_ANALYSER,)) -> None:
        self.storage = storage
        self.service = service
        self.host = Host(storage, settings)
        self.cache: PubsubCache = self.host.plugins["PUBSUB_CACHE"]
        self.xep_0060: XEP_0060 = self.host.plugins["XEP-0060"]
        for analyser in analysers:
            self.cache.register_analyser(dict(analyser))
        self.client = StubClient(name, service)
        self.host.clients.clients[name] = self.client

    def restart(self, **kwargs: Any) -> "Env":
        """The same database and service, a new backend (nothing kept in memory)."""
        return Env(self.storage, self.service, self.client.profile.name, **kwargs)

    async def get(self, node: str = BLOG, **kwargs: Any) -> Any:
        rsm = kwargs.pop("rsm", None)
        if rsm is not None:
            kwargs["rsm_request"] = RSMRequest.from_dict(rsm)
        return await self.xep_0060.get_items(self.client, SERVICE, node, **kwargs)

    async def event(self, message: Any) -> None:
        await self.xep_0060.dispatch(self.client, [message])

    async def node(self, node: str = BLOG) -> Any:
        return await self.storage.pubsub.get_pubsub_node(self.client.profile.name,
                                                  SERVICE.full(), node)

    async def state(self, node: str = BLOG) -> str | None:
        pubsub_node = await self.node(node)
        return None if pubsub_node is None else self.cache.node_state(pubsub_node)["state"]

    async def cached_rows(self, node: str = BLOG) -> list[Any]:
        pubsub_node = await self.node(node)
        items, __ = await self.storage.pubsub.get_items(pubsub_node.id, details=True)
        return items

    def fill(self, node: str = BLOG, count: int = 12) -> None:
        """Create the node on the service with items ``i00``, ``i01``..."""
        self.service.create(node)
        for n in range(count):
            self.service.publish(node, f"i{n:02}")

    async def sync(self, node: str = BLOG, count: int = 12) -> None:
        """Fill the node, ask for it, wait until it is synchronised."""
        self.fill(node, count)
        first = await self.get(node)
        assert first.cached is False
        await self.cache.wait_background()
        assert await self.state(node) == "completed"


async def from_cache_and_service(env: Env, node: str = BLOG, **kwargs: Any
                                 ) -> tuple[Any, Any]:
    """The same request answered by the cache (nothing sent) and by the service."""
    sent = len(env.client.sent)
    cached = await env.get(node, **dict(kwargs))
    assert len(env.client.sent) == sent, "the cache asked the service"
    remote = await env.get(node, use_cache=False, **dict(kwargs))
    return cached, remote


def assert_same_answer(service: FakePubsubService, cached: Any, remote: Any) -> None:
    assert cached.cached is True and remote.cached is False
    # as a frontend gets them (the cache's texts, unparsed), then as plugins read them
    assert cached.serialise()["items"] == remote.serialise()["items"]
    assert [i.toXml() for i in cached.items] == [i.toXml() for i in remote.items]
    # the service's cursors (ejabberd: time stamps) stand for items: the cache gives
    # the ids of the same items, which it accepts back as cursors
    expected = dict(remote.rsm)
    for key in ("first", "last"):
        if key in expected:
            expected[key] = service.id_of_cursor(expected[key])
    assert cached.rsm == expected


async def assert_cache_is_service(env: Env, node: str = BLOG) -> None:
    """The cache holds exactly the service's items and answers as it does."""
    rows = await env.cached_rows(node)
    assert sorted(r.name for r in rows) == sorted(env.service.ids(node))
    for kwargs in ({}, {"max_items": 3}, {"item_ids": env.service.ids(node)[:2]},
                   {"rsm": {"max": 4}}):
        assert_same_answer(env.service, *await from_cache_and_service(env, node, **kwargs))
