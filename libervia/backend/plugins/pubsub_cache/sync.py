"""Synchronisation: a node's items fetched from its service and stored whole.

A node whose analyser says ``to_sync`` is *synchronised* in the background: the profile
subscribes to it (its events keep the cache up to date afterwards), every item is
fetched (by RSM pages where the service pages) and the node's items are replaced at
once; it is then ``COMPLETED`` and served.  Events of the node that come meanwhile wait
and are applied afterwards, in the order they came.

Events are lost while a profile is disconnected (or the backend stopped): when a
profile connects, each of its synchronised nodes is *verified* (fetched again and
compared with the cache) before it is served again, and refreshed where it differs.
"""

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.internet.error import ConnectionClosed
from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.xish import domish

from libervia.backend.core.exceptions import (
    BackendError,
    ConflictError,
    NotConnected,
    NotFound,
)
from libervia.backend.core.interfaces import Client, Reactor
from libervia.backend.core.jids import parse_jid
from libervia.backend.core.log import getLogger
from libervia.backend.memory.sqla_mapping import PubsubNode, SyncState
from libervia.backend.plugins.pubsub_cache.analysers import Analysers, metadata_type
from libervia.backend.plugins.pubsub_cache.fetch import InconsistentService, NodeFetcher
from libervia.backend.plugins.pubsub_cache.state import (
    CacheError,
    CacheState,
    PendingEvent,
    service_key,
    stream_of,
)
from libervia.backend.plugins.pubsub_cache.store import (
    CacheStore,
    node_state,
    profile_of,
)
from libervia.backend.plugins.pubsub_cache.traits import TraitsFinder, node_traits
from libervia.backend.plugins.xep_0060.operations import Pubsub
from libervia.backend.plugins.xep_0060.stanzas import ItemNotFound, PubsubError

log = getLogger(__name__)

T = TypeVar("T")


class Synchroniser:
    """Analyses nodes, synchronises and verifies them."""

    def __init__(self, pubsub: Pubsub, state: CacheState, store: CacheStore,
                 analysers: Analysers, traits: TraitsFinder, *, max_items_per_node: int,
                 page_size: int, sync_concurrency: int, sync_timeout: float,
                 reactor: Reactor) -> None:
        #: the XEP-0060 plugin, which asks the services
        self.pubsub = pubsub
        self.state = state
        self.store = store
        self.analysers = analysers
        self.traits = traits
        self.fetcher = NodeFetcher(pubsub, store, page_size=page_size,
                                   max_items_per_node=max_items_per_node, reactor=reactor)
        self._slots = SyncSlots(sync_concurrency)
        self.sync_timeout = sync_timeout
        self.reactor = reactor

    # analysis

    async def analyse_node(self, client: Client, service: jabber_jid.JID, node: str,
                           item: domish.Element | None = None,
                           metadata: dict[str, Any] | None = None
                           ) -> dict[str, Any] | None:
        """Find the analyser of a node (see
        :meth:`~libervia.backend.plugins.pubsub_cache.analysers.Analysers.analyse`)."""
        return await self.analysers.analyse(
            client, service, node, item, metadata,
            lambda: self._sample(client, service, node))

    async def _sample(self, client: Client, service: jabber_jid.JID, node: str
                      ) -> tuple[domish.Element | None, dict[str, Any]]:
        """One item (the last) and the metadata of a node, as far as they can be had."""
        try:
            result = await self.pubsub.get_items_from_service(client, service, node,
                                                              max_items=1)
            item = result.items[-1] if result.items else None
        except PubsubError as e:
            log.debug("no sample item for {node}: {error}", node=node, error=e)
            item = None
        try:
            metadata = await self.pubsub.get_node_metadata(client, service, node)
        except PubsubError:
            metadata = None
        return item, metadata or {}

    async def analyse_and_sync(self, client: Client, service: jabber_jid.JID, node: str
                               ) -> None:
        """Analyse a node never seen, and synchronise it if its analyser says so."""
        key = (profile_of(client), service_key(service), node)
        pending = self.state.analysing.get(key)
        if pending is not None:
            # another request is analysing the node: its result will do
            await defer.DeferredList([pending], consumeErrors=True)
            return
        d = defer.ensureDeferred(self.analyse_and_record(client, service, node))
        self.state.analysing[key] = d
        try:
            pubsub_node = await d
        finally:
            del self.state.analysing[key]
        if pubsub_node is not None and pubsub_node.sync_state is None:
            await self.sync_in_background(client, service, node, pubsub_node)

    async def sync_in_background(self, client: Client, service: jabber_jid.JID, node: str,
                                 pubsub_node: PubsubNode | None = None) -> None:
        """Synchronise a node, unless that is being done already."""
        try:
            await self.synchronise(client, service, node, pubsub_node=pubsub_node)
        except ConflictError:
            pass  # another request started it meanwhile

    async def analyse_and_record(self, client: Client, service: jabber_jid.JID, node: str
                                 ) -> PubsubNode | None:
        """Analyse a node and record the result; ``None`` if it can't be decided yet."""
        existing = await self.store.node(client, service, node)
        if existing is not None:
            return existing
        item: domish.Element | None = None
        metadata: dict[str, Any] = {}
        needs_payload = self.analysers.need_payload(node)
        if needs_payload:
            item, metadata = await self._sample(client, service, node)
        analyse = await self.analyse_node(client, service, node, item, metadata)
        if analyse is None:
            if needs_payload and item is None and not metadata_type(metadata):
                # an empty node says nothing of what it will hold: decide once it
                # has items (the service answers meanwhile)
                log.debug("node {node} is empty: its analysis waits", node=node)
                return None
            return await self.store.record(client, service, node, analyser=None,
                                           sync_state=SyncState.NO_SYNC)
        return await self.store.record(
            client, service, node,
            analyser=analyse["analyser"], type_=analyse["type"],
            subtype=analyse["subtype"],
            sync_state=None if analyse["to_sync"] else SyncState.NO_SYNC,
        )

    # synchronisation

    async def synchronise(self, client: Client, service: jabber_jid.JID, node: str,
                          force: bool = False, pubsub_node: PubsubNode | None = None
                          ) -> dict[str, Any]:
        """Synchronise a node now: subscribe, fetch every item, store them.

        :param force: also for a node already synchronised (its items are replaced),
            or whose analysis said not to synchronise it
        :param pubsub_node: the node's row, when the caller has just read it
        :return: the node's state afterwards (see
            :func:`~libervia.backend.plugins.pubsub_cache.store.node_state`)
        :raise ConflictError: the node is being synchronised already
        :raise CacheError: the node can't be analysed (it is empty)
        :raise PubsubError: a node the cache did not know, which the service refused
            to give (it does not exist, it may not be read): nothing is recorded
        :raise NotFound: the node was deleted meanwhile (it left the cache)
        """
        if pubsub_node is None:
            pubsub_node = await self.store.node(client, service, node)
        if pubsub_node is None:
            # a node enters the cache only once its service let it be read: one it
            # refuses (it does not exist, it may not be read) leaves nothing behind
            await self.pubsub.get_items_from_service(client, service, node, max_items=1)
            pubsub_node = await self.analyse_and_record(client, service, node)
            if pubsub_node is None:
                raise CacheError(f"node {node!r} of {service_key(service)} is empty: "
                                 "nothing tells what it holds yet, try again once it "
                                 "has items")
        if pubsub_node.sync_state is SyncState.NO_SYNC and not force:
            return node_state(pubsub_node)
        if pubsub_node.id in self.state.rewriting:
            raise ConflictError(f"node {node!r} of {service_key(service)} is being "
                                "synchronised")
        await self._rewriting(
            client, service, pubsub_node,
            lambda: self._slots.run(service, lambda: self._sync(client, service,
                                                                 pubsub_node)),
        )
        synchronised = await self.store.node(client, service, node)
        if synchronised is None:
            raise NotFound(f"node {node!r} of {service_key(service)} does not exist any "
                           "more: it left the cache")
        return node_state(synchronised)

    async def _rewriting(self, client: Client, service: jabber_jid.JID,
                         pubsub_node: PubsubNode, work: Callable[[], Any]) -> None:
        """Run ``work`` (which rewrites the node's items) while events wait.

        Events of the node received meanwhile are kept, then applied in the order they
        came once the items are written, so that nothing the service sent during the
        work is lost.  Events coming while those are applied wait their turn too.
        """
        pending: list[PendingEvent] = []
        self.state.rewriting[pubsub_node.id] = pending
        try:
            await work()
        finally:
            try:
                await self._replay(client, service, pubsub_node, pending)
            finally:
                del self.state.rewriting[pubsub_node.id]

    async def _replay(self, client: Client, service: jabber_jid.JID,
                      pubsub_node: PubsubNode, pending: list[PendingEvent]) -> None:
        """Apply the events received while the node was being rewritten."""
        if not pending:
            return
        fresh = await self.store.node(client, service, pubsub_node.name)
        if fresh is None or fresh.id != pubsub_node.id:
            pending.clear()
            return
        if fresh.sync_state is not SyncState.COMPLETED:
            # the work failed: the node is not served, its item events don't matter,
            # but a deletion or a new configuration does
            node_events = [e for e in pending if e[0] in ("delete", "configuration")]
            pending[:] = node_events[-1:]
        while pending:
            kind, data = pending.pop(0)
            if kind == "items":
                await self.store.upsert(client, service, fresh, data)
            elif kind == "retract":
                await self.store.delete_items(fresh, data)
            elif kind == "purge":
                await self.store.delete_items(fresh, None)
            elif kind in ("delete", "configuration"):
                pending.clear()
                await self.store.forget(client, fresh)
                if kind == "configuration":
                    self.state.spawn(self.analyse_and_sync(client, service, fresh.name))

    async def _sync(self, client: Client, service: jabber_jid.JID, pubsub_node: PubsubNode
                    ) -> None:
        node = pubsub_node.name
        node_id = pubsub_node.id
        self.state.unverify(node_id)
        await self.store.storage.pubsub.update_pubsub_node_sync_state(
            node_id, SyncState.IN_PROGRESS, items_done=0)
        self.store.emit_progress(client, pubsub_node, SyncState.IN_PROGRESS, 0, None)
        started = self.state.stamp()
        stream = stream_of(client)
        try:
            traits = await self.traits.traits(client, service)
            if not pubsub_node.subscribed:
                await self._subscribe(client, service, pubsub_node)
                await self.store.record(client, service, node, subscribed=True)
            deadline = self._deadline()
            rows, learnt = await self._consistent(
                node, lambda: self.fetcher.rows(client, service, pubsub_node, deadline))
            await self.store.store_fetched(client, service, pubsub_node, rows, started,
                                           traits.learnt(**learnt))
        except ItemNotFound:
            # deleted meanwhile: forgotten, it will be analysed again if asked for
            log.info("node {node} does not exist any more", node=node)
            await self.store.forget(client, pubsub_node)
            return
        except Exception as e:
            reason = str(e) if isinstance(e, BackendError) else f"{type(e).__name__}: {e}"
            if not getattr(client, "is_connected", True) or isinstance(
                    e, (ConnectionClosed, NotConnected)):
                # interrupted (disconnection, backend stopping), not failed: the node
                # stays IN_PROGRESS and is synchronised again at the next connection.
                # The requests of a lost stream fail (NotConnected) before the client
                # knows it is disconnected: their error tells it too
                log.info("synchronisation of node {node} interrupted ({reason}), it "
                         "will be done again", node=node, reason=reason)
                return
            log.error("synchronisation of node {node} failed: {reason}", node=node,
                      reason=reason)
            await self.store.give_up(client, service, pubsub_node, reason)
            return
        self.state.mark_verified(node_id, stream)
        log.info("node {node} of {service} synchronised ({count} item{s})", node=node,
                 service=service.full(), count=len(rows), s="" if len(rows) == 1 else "s")

    def _deadline(self) -> float:
        """When a fetch starting now must be over (``sync_timeout``)."""
        return self.reactor.seconds() + self.sync_timeout

    @staticmethod
    async def _consistent(node: str, fetch: Callable[[], Awaitable[T]]) -> T:
        """``fetch()``, done a second time if the service contradicted itself the first
        time (a node changing during a fetch can make an honest service look so).

        :raise InconsistentService: it did both times
        """
        try:
            return await fetch()
        except InconsistentService as e:
            log.info("{reason}; fetching node {node} again", reason=e, node=node)
        return await fetch()

    # verification after (re)connection

    async def profile_connected(self, client: Client) -> None:
        """Check the profile's synchronised nodes against the services.

        Until a node is checked, requests about it go to the service.  Nodes whose
        synchronisation was interrupted (backend stopped) are synchronised again.
        """
        nodes = await self.store.storage.pubsub.get_pubsub_nodes(
            profile_of(client),
            sync_states=[SyncState.COMPLETED, SyncState.IN_PROGRESS, None])
        for pubsub_node in nodes:
            self.state.unverify(pubsub_node.id)
        for pubsub_node in nodes:
            if pubsub_node.id in self.state.rewriting:
                continue
            service = parse_jid(pubsub_node.service)
            if pubsub_node.sync_state is SyncState.COMPLETED:
                self.state.spawn(self.verify(client, service, pubsub_node))
            elif pubsub_node.analyser is not None:
                # interrupted (backend stopped) or never started: do it from the start
                self.state.spawn(self.synchronise(client, service, pubsub_node.name,
                                                  force=True))

    async def profile_disconnected(self, client: Client) -> None:
        """Events will be missed: the profile's nodes are not served until checked."""
        for pubsub_node in await self.store.storage.pubsub.get_pubsub_nodes(profile_of(client)):
            self.state.unverify(pubsub_node.id)

    async def verify(self, client: Client, service: jabber_jid.JID, pubsub_node: PubsubNode
                     ) -> None:
        """Compare a node's cache with the service; refresh it if they differ."""
        if pubsub_node.id in self.state.rewriting:
            return  # a synchronisation is already rewriting it
        verified = []
        stream = stream_of(client)

        async def compare() -> None:
            started = self.state.stamp()
            await self._subscribe(client, service, pubsub_node)
            deadline = self._deadline()
            remote, learnt = await self._slots.run(service, lambda: self._consistent(
                pubsub_node.name,
                lambda: self.fetcher.items(client, service, pubsub_node, deadline)))
            traits = node_traits(pubsub_node)
            cached, __ = await self.store.storage.pubsub.get_items(
                pubsub_node.id, order_by=traits.item_order)
            remote_view = [(i["id"], i.toXml()) for i in remote]
            cached_view = [(i.name, i.data) for i in cached]
            if remote_view != cached_view or learnt["rsm"] != traits.rsm:
                log.info("node {node} changed while we were away: refreshing its cache",
                         node=pubsub_node.name)
                rows = [await self.store.row(client, service, pubsub_node, item)
                        for item in remote]
                await self.store.store_fetched(client, service, pubsub_node, rows,
                                               started, traits.learnt(**learnt))
            verified.append(True)

        try:
            await self._rewriting(client, service, pubsub_node, compare)
        except ItemNotFound:
            log.info("node {node} was deleted while we were away", node=pubsub_node.name)
            await self.node_deleted(client, service, pubsub_node.name)
            return
        except InconsistentService as e:
            log.warn("node {node} can't be checked: {reason}; the service answers for "
                     "it from now on", node=pubsub_node.name, reason=e)
            await self.store.give_up(client, service, pubsub_node, str(e))
            return
        except Exception as e:
            log.warn("can't verify node {node}: {error}; it stays unserved until the "
                     "next connection", node=pubsub_node.name, error=e)
            return
        if verified:
            self.state.mark_verified(pubsub_node.id, stream)

    async def node_deleted(self, client: Client, service: jabber_jid.JID, node: str
                           ) -> None:
        """A node was deleted on its service: forget it (once its rewrite is over)."""
        pubsub_node = await self.store.node(client, service, node)
        if pubsub_node is not None and not self.state.defer_event(
            pubsub_node.id, "delete", None
        ):
            await self.store.forget(client, pubsub_node)

    async def _subscribe(self, client: Client, service: jabber_jid.JID,
                         pubsub_node: PubsubNode) -> None:
        """Subscribe to the node (again: servers take it as a no-op when subscribed).

        A node deleted and created again while the profile was away has the same name,
        maybe the same items, but not its former subscribers: without a new
        subscription its events would never come, and the cache, served once verified,
        would stay behind.  Asking first is no help: Prosody goes on listing the
        subscriptions to the deleted node.

        :raise ItemNotFound: the node does not exist (any more)
        :raise CacheError: the service refused: events won't come, the node can't be
            kept in sync
        """
        try:
            await self.pubsub.subscribe(client, service, pubsub_node.name)
        except ItemNotFound:
            raise
        except PubsubError as e:
            raise CacheError(f"can't subscribe to {pubsub_node.name!r}: {e}") from None


class SyncSlots:
    """Where synchronisations and checks wait their turn.

    At most ``concurrency`` run at once, backend-wide, and one per service domain at a
    time: a slow service holds one slot at most, and the nodes of other services go on
    being synchronised meanwhile.  The service's own turn is awaited before a
    backend-wide slot is taken, so waiting for a busy service holds no slot.
    """

    def __init__(self, concurrency: int) -> None:
        self._backend = defer.DeferredSemaphore(concurrency)
        self._services: dict[str, defer.DeferredSemaphore] = {}

    async def run(self, service: jabber_jid.JID, work: Callable[[], Awaitable[T]]) -> T:
        """``work()``, once it has a slot of the service and of the backend."""
        domain = service.host
        own = self._services.get(domain)
        if own is None:
            own = self._services[domain] = defer.DeferredSemaphore(1)
        await own.acquire()
        try:
            await self._backend.acquire()
            try:
                return await work()
            finally:
                self._backend.release()
        finally:
            own.release()
            if not own.waiting and own.tokens == own.limit:
                self._services.pop(domain, None)
