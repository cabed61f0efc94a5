"""What the pubsub tests and benchmarks share: a publisher, a backend, a reader.

- :class:`Publisher`: an independent client (slixmpp, in a thread with its own event
  loop) creating nodes and publishing, retracting, purging and deleting on the server's
  pubsub service;
- :class:`BackendFactory`: real backends (plugins PRESENCE, XEP-0030, XEP-0059, XEP-0060,
  XEP-0092, PUBSUB_CACHE and XEP-0277) sharing one configuration and database, stopped together
  by ``close()``;
- :class:`Reader`: a backend profile reading one node, with the checks comparing its
  cache with the service;
- :func:`until`: poll a check until it holds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.metadata
import itertools
import secrets
import shutil
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import slixmpp
from twisted.internet import defer, reactor, task, threads
from twisted.words.protocols.jabber.jid import JID

from libervia.backend.app.main import Backend
from libervia.backend.core.config import Config
from libervia.backend.core.constants import C
from libervia.backend.core.exceptions import NotConnected
from libervia.backend.xmpp.profiles import ConnectionOptions

TIMEOUT = 30
PLUGINS = ("PRESENCE", "XEP-0030", "XEP-0059", "XEP-0060", "XEP-0092", "PUBSUB_CACHE", "XEP-0277")
NS_ATOM = "http://www.w3.org/2005/Atom"

_names = itertools.count()


def atom(item_id: str, title: str | None = None) -> ET.Element:
    return ET.fromstring(
        f"<entry xmlns='{NS_ATOM}'><title>{title or 'Post ' + item_id}</title>"
        f"<id>{item_id}</id><published>2024-03-01T10:00:00Z</published>"
        f"<author><name>Admin</name><uri>xmpp:admin@localhost</uri></author>"
        f"<category term='test'/><content type='text'>Body of {item_id} &amp; more"
        "</content></entry>")


async def log_in(xmpp: slixmpp.ClientXMPP, info: Any, who: str) -> None:
    """Connect a slixmpp client to the test server ``info``; return once its session
    started (``who`` names it in the error)."""
    started = xmpp.loop.create_future()
    xmpp.add_event_handler(
        "session_start", lambda _: started.done() or started.set_result(True))
    xmpp.add_event_handler(
        "failed_all_auth",
        lambda _: started.done() or started.set_exception(
            RuntimeError(f"{who} could not log in")))
    xmpp.connect(info.address, info.c2s_port)
    await asyncio.wait_for(started, TIMEOUT)


class Publisher:
    """The independent client: runs pubsub operations with slixmpp, in a thread.

    It logs in as the server's admin, or as ``user`` (a contact of a backend profile),
    with the slixmpp ``plugins`` given.
    """

    def __init__(self, info: Any, user: Any = None,
                 plugins: tuple[str, ...] = ("xep_0004", "xep_0030", "xep_0060")) -> None:
        self.info = info
        self.user = user or info.admin
        self.plugins = plugins
        self.service = info.pubsub_service
        self._kept: tuple[asyncio.AbstractEventLoop, slixmpp.ClientXMPP,
                          threading.Thread] | None = None

    def run(self, body) -> defer.Deferred:
        """``await body(xmpp, pubsub)`` in a thread, in a fresh slixmpp session unless
        one is kept (:meth:`keep_session`)."""
        if self._kept is not None:
            loop, xmpp, __ = self._kept
            future = asyncio.run_coroutine_threadsafe(
                asyncio.wait_for(body(xmpp, xmpp.plugin["xep_0060"]), TIMEOUT * 4), loop)
            return threads.deferToThread(future.result)
        return threads.deferToThread(self._run, body)

    def run_here(self, body) -> Any:
        """``body`` in a fresh session, in the calling thread (blocking): for a process
        of its own, such as the benchmarks' publishers."""
        return self._run(body)

    def _client(self, loop: asyncio.AbstractEventLoop) -> slixmpp.ClientXMPP:
        xmpp = slixmpp.ClientXMPP(self.user.jid, self.user.password)
        xmpp.loop = loop
        for plugin in self.plugins:
            xmpp.register_plugin(plugin)
        xmpp.ca_certs = str(self.info.ca_file)
        return xmpp

    async def _log_in(self, xmpp: slixmpp.ClientXMPP) -> None:
        await log_in(xmpp, self.info, "publisher")

    def _run(self, body) -> Any:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        xmpp = self._client(loop)

        async def session():
            try:
                await self._log_in(xmpp)
                return await asyncio.wait_for(body(xmpp, xmpp.plugin["xep_0060"]),
                                              TIMEOUT * 4)
            finally:
                await asyncio.wait_for(xmpp.disconnect(), TIMEOUT)

        try:
            return loop.run_until_complete(session())
        finally:
            _close_loop(loop)

    def keep_session(self) -> defer.Deferred:
        """Log in once for all the operations that follow, until :meth:`close`.

        Logging in costs more than an operation: a long series of small operations
        (the differential test) would spend most of its time there.
        """
        return threads.deferToThread(self._keep_session)

    def _keep_session(self) -> None:
        loop = asyncio.new_event_loop()
        xmpp = self._client(loop)
        logged_in: concurrent.futures.Future = concurrent.futures.Future()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._log_in(xmpp))
            except BaseException as e:
                logged_in.set_exception(e)
                _close_loop(loop)
                return
            logged_in.set_result(None)
            loop.run_forever()
            _close_loop(loop)

        thread = threading.Thread(target=serve, name="publisher", daemon=True)
        thread.start()
        logged_in.result(TIMEOUT * 2)
        self._kept = (loop, xmpp, thread)

    def close(self) -> defer.Deferred:
        """End the session kept by :meth:`keep_session`, if any."""
        kept, self._kept = self._kept, None
        if kept is None:
            return defer.succeed(None)
        loop, xmpp, thread = kept

        def end() -> None:
            try:
                asyncio.run_coroutine_threadsafe(
                    asyncio.wait_for(xmpp.disconnect(), TIMEOUT), loop).result()
            finally:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(TIMEOUT)

        return threads.deferToThread(end)

    def create(self, node: str, items: list[str], max_items: int = 1000,
               config: dict[str, str] | None = None) -> defer.Deferred:
        """Create ``node`` with ``items``; ``config``: more node configuration fields."""
        async def body(xmpp, pubsub):
            form = xmpp.plugin["xep_0004"].make_form("submit")
            form.add_field(var="FORM_TYPE", ftype="hidden",
                           value="http://jabber.org/protocol/pubsub#node_config")
            for var, value in (("pubsub#max_items", str(max_items)),
                               ("pubsub#access_model", "open"),
                               ("pubsub#notify_retract", "1"),
                               ("pubsub#notify_delete", "1"),
                               ("pubsub#deliver_payloads", "1"),
                               ("pubsub#persist_items", "1"),
                               *(config or {}).items()):
                form.add_field(var=var, value=value)
            await pubsub.create_node(self.service, node, config=form)
            for item_id in items:
                await pubsub.publish(self.service, node, id=item_id, payload=atom(item_id))

        return self.run(body)

    def publish(self, node: str, items: list[tuple[str, str | None]]) -> defer.Deferred:
        async def body(xmpp, pubsub):
            for item_id, title in items:
                await pubsub.publish(self.service, node, id=item_id,
                                     payload=atom(item_id, title))

        return self.run(body)

    def retract(self, node: str, item_ids: list[str]) -> defer.Deferred:
        async def body(xmpp, pubsub):
            for item_id in item_ids:
                await pubsub.retract(self.service, node, item_id, notify=True)

        return self.run(body)

    def purge(self, node: str) -> defer.Deferred:
        return self.run(lambda xmpp, pubsub: pubsub.purge(self.service, node))

    def delete(self, node: str) -> defer.Deferred:
        return self.run(lambda xmpp, pubsub: pubsub.delete_node(self.service, node))




class BackendFactory:
    """Start backends sharing one configuration (and database); ``close()`` stops them.

    ``settings`` are extra configuration sections merged over the defaults (for example
    ``{"plugin PUBSUB_CACHE": {"page_size": 50}}``).
    """

    def __init__(self, local_dir: Path, db_url: Any,
                 settings: dict[str, dict[str, Any]] | None = None,
                 plugins: tuple[str, ...] = PLUGINS) -> None:
        self.entry_points = [ep for ep in importlib.metadata.entry_points(
            group=C.PLUGINS_ENTRY_POINT_GROUP) if ep.name in plugins]
        # a short folder: a UNIX socket path must fit in about 100 bytes
        self.sockets = Path(tempfile.mkdtemp(prefix="li-"))
        sections: dict[str, dict[str, Any]] = {
            "DEFAULT": {"local_dir": local_dir},
            "bridge": {"socket": self.sockets / "bridge.sock"},
            "storage": {"url": db_url},
            "plugin PUBSUB_CACHE": {"page_size": 10},
        }
        for section, values in (settings or {}).items():
            sections.setdefault(section, {}).update(values)
        self.config = Config.from_dict(sections)
        self.backends: list[Backend] = []

    def __call__(self) -> defer.Deferred:
        """Start a new backend; the Deferred fires with it once it is ready."""
        backend = Backend(self.config, reactor=reactor,
                          plugin_entry_points=self.entry_points)
        self.backends.append(backend)
        return backend.startService().addCallback(lambda __: backend)

    def close(self) -> defer.Deferred:
        """Stop the backends still running, then remove the socket folder."""
        running = [b.stopService() for b in self.backends if b.running]
        d = defer.DeferredList(running, consumeErrors=True)
        d.addBoth(lambda __: shutil.rmtree(self.sockets, ignore_errors=True))
        return d


async def until(check, what: str, timeout: float = TIMEOUT) -> Any:
    """Poll ``await check()`` until it is truthy; fail saying ``what`` otherwise.

    A check failing with ``NotConnected`` is tried again: a request made while the
    profile reconnects fails at once, and the profile may be back at the next try.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = await check()
        except NotConnected:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await task.deferLater(reactor, 0.1, lambda: None)


class Reader:
    """A backend profile reading the node."""

    def __init__(self, backend: Backend, name: str, info: Any, node: str) -> None:
        self.backend = backend
        self.name = name
        self.service = JID(info.pubsub_service)
        self.node = node
        self.xep_0060 = backend.plugins["XEP-0060"]
        self.cache = backend.plugins["PUBSUB_CACHE"]

    @classmethod
    async def connect(cls, backend: Backend, info: Any, node: str,
                      name: str | None = None) -> Reader:
        if name is None:
            name = f"reader{next(_names)}"
            user = info.user(0)
            await backend.profiles.create(name, user.jid, user.password, ConnectionOptions(
                host=info.address, port=info.c2s_port, ca_file=str(info.ca_file)))
        await defer.ensureDeferred(backend.clients.connect(name)).addTimeout(TIMEOUT,
                                                                             reactor)
        return cls(backend, name, info, node)

    @property
    def client(self) -> Any:
        return self.backend.clients.get(self.name)

    async def get(self, **kwargs: Any) -> Any:
        return await self.xep_0060.get_items(self.client, self.service, self.node,
                                             **kwargs)

    async def pubsub_node(self) -> Any:
        return await self.backend.storage.pubsub.get_pubsub_node(self.name, self.service.full(),
                                                                 self.node)

    async def state(self) -> str | None:
        node = await self.pubsub_node()
        return None if node is None else self.cache.node_state(node)["state"]

    async def cached(self) -> list[tuple[str, str]]:
        node = await self.pubsub_node()
        if node is None:
            return []
        items, __ = await self.backend.storage.pubsub.get_items(node.id)
        return sorted((i.name, i.data) for i in items)

    async def remote(self) -> list[tuple[str, str]]:
        result = await self.get(use_cache=False)
        return sorted((i["id"], i.toXml()) for i in result.items)

    async def mirrors_service(self) -> bool:
        return await self.cached() == await self.remote()

    async def wait_synchronised(self) -> None:
        await until(lambda: self._is("completed"), f"node {self.node} synchronised")

    async def _is(self, state: str) -> bool:
        return await self.state() == state



def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    for pending in asyncio.all_tasks(loop):
        pending.cancel()
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    asyncio.set_event_loop(None)


def new_node() -> str:
    return f"urn:xmpp:microblog:0:test-{secrets.token_hex(4)}"
