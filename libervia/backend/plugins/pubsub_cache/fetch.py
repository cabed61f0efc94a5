"""Fetching a node whole from its service, and holding the service to what it says.

A synchronisation (and the check after a connection) asks for every item of a node,
by RSM pages where the service pages.  Services can get this wrong, by bug or by
malice: announce a count they do not give, ignore the ``after`` cursor and send the
first page again, move their cursor backwards, repeat an item with another payload, or
honour ``max`` without saying it paged.  What a fetch gives is checked against
everything the service said; when they contradict each other the fetch fails with
:class:`InconsistentService` (the node is then not served, and the reason is in its
state) instead of leaving a truncated or mixed node marked complete.

The rules:

* paging ends on an empty page, a page shorter than asked, or a page without RSM data;
  never on the announced count alone (a count may be under-reported);
* a full page bringing no new item, or a cursor already given by an earlier page,
  means the service does not move forward;
* an id met twice keeps its first copy (and its place) when both copies are equal, and
  fails the fetch when they differ, wherever the repeat is (in one page or across
  pages);
* at the end, the items fetched must be as many as the last count the service
  announced;
* a first answer without RSM data holding exactly as many items as asked may have been
  cut: the node is asked again without paging, and that whole answer is used.
"""

from collections.abc import AsyncIterator
from contextlib import aclosing

from twisted.internet import defer
from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.xish import domish

from libervia.backend.core.interfaces import Client, Reactor
from libervia.backend.core.log import getLogger
from libervia.backend.memory.sqla_mapping import PubsubNode, SyncState
from libervia.backend.plugins.plugin_xep_0059 import RSMRequest
from libervia.backend.plugins.pubsub_cache.state import CacheError
from libervia.backend.plugins.pubsub_cache.store import CacheStore, Row
from libervia.backend.plugins.xep_0060.operations import Pubsub
from libervia.backend.plugins.xep_0060.stanzas import ItemsResult

log = getLogger(__name__)


class InconsistentService(CacheError):
    """What a service answered contradicts what it said before; the message says how."""


class NodeFetcher:
    """Fetches every item of a node (see the module documentation).

    :param pubsub: the XEP-0060 plugin
    """

    def __init__(self, pubsub: Pubsub, store: CacheStore, *, page_size: int,
                 max_items_per_node: int, reactor: Reactor) -> None:
        self.pubsub = pubsub
        self.store = store
        self.page_size = page_size
        self.max_items_per_node = max_items_per_node
        self.reactor = reactor

    async def _answer(self, pending: defer.Deferred, node: str, deadline: float
                      ) -> ItemsResult:
        """The answer to a page request, if it comes before ``deadline``.

        :raise CacheError: it did not (the service is too slow to be cached)
        """
        pending.addTimeout(max(deadline - self.reactor.seconds(), 0), self.reactor)
        try:
            return await pending
        except defer.TimeoutError:
            raise CacheError(
                f"the service took too long to give node {node!r} whole "
                "(sync_timeout): it is not cached") from None

    async def _pages(self, client: Client, service: jabber_jid.JID, pubsub_node: PubsubNode,
                     learnt: dict[str, bool], record_progress: bool, deadline: float
                     ) -> AsyncIterator[list[domish.Element]]:
        """Every item of the node, in the service's order, by RSM pages if it pages.

        The request for the next page is sent before a page is given: the service
        prepares it while the caller handles this one (a synchronisation would
        otherwise wait for the service, then the service for it, at every page).

        :param learnt: filled with the traits learnt from the answers: ``rsm`` (the
            service answered with RSM data; a service ignoring RSM answers the whole
            node at once) and ``id_cursors`` (its RSM cursors are item ids)
        :param record_progress: record the items fetched as the progress of the node's
            synchronisation (a verification leaves the node's state alone)
        :param deadline: when (reactor time) the whole node must have come
        :raise InconsistentService: the service contradicted itself
        :raise CacheError: the node did not come whole before the deadline
        """
        name = pubsub_node.name
        seen: dict[str, domish.Element] = {}
        cursors: set[str] = set()
        expected: int | None = None
        pending: defer.Deferred | None = self._request(
            client, service, name, RSMRequest(max=self.page_size))
        try:
            while pending is not None:
                result = await self._answer(pending, name, deadline)
                pending = None
                if not learnt:
                    if not result.rsm and len(result.items) == self.page_size:
                        # as many items as asked, and nothing said of paging: maybe cut
                        result = await self._answer(
                            self._request(client, service, name, None), name, deadline)
                    learnt["rsm"] = bool(result.rsm)
                    learnt["id_cursors"] = not result.items or result.rsm.get(
                        "first", result.items[0].getAttribute("id")
                    ) == result.items[0].getAttribute("id")
                new = _new_items(result.items, seen, name)
                count = result.rsm.get("count")
                if count is not None:
                    expected = count
                if len(seen) > self.max_items_per_node or (
                    expected or 0
                ) > self.max_items_per_node:
                    raise CacheError(
                        f"node {name!r} has more than {self.max_items_per_node} items "
                        "(max_items_per_node): it is not cached")
                if record_progress:
                    await self.store.storage.pubsub.update_pubsub_node_sync_state(
                        pubsub_node.id, SyncState.IN_PROGRESS, items_done=len(seen),
                        items_expected=expected)
                    self.store.emit_progress(client, pubsub_node, SyncState.IN_PROGRESS,
                                             len(seen), expected)
                last = result.rsm.get("last")
                full = len(result.items) >= self.page_size
                if result.rsm and full and last is not None:
                    if not new:
                        raise InconsistentService(
                            f"{service.full()} answered the same items of {name!r} "
                            "again: it does not page forward")
                    if last in cursors:
                        raise InconsistentService(
                            f"{service.full()} gave a cursor of {name!r} it had given "
                            "before: its pages go backwards")
                    cursors.update(c for c in (result.rsm.get("first"), last) if c)
                    pending = self._request(client, service, name,
                                            RSMRequest(max=self.page_size, after=last))
                elif expected is not None and expected != len(seen):
                    raise InconsistentService(
                        f"{service.full()} announced {expected} items in {name!r} and "
                        f"gave {len(seen)}")
                yield new
        finally:
            if pending is not None:
                # the caller stopped early: nobody waits for that page any more
                pending.addErrback(lambda __: None)

    def _request(self, client: Client, service: jabber_jid.JID, node: str,
                 request: RSMRequest | None) -> defer.Deferred:
        return defer.ensureDeferred(self.pubsub.get_items_from_service(
            client, service, node, rsm_request=request))

    async def items(self, client: Client, service: jabber_jid.JID, pubsub_node: PubsubNode,
                    deadline: float) -> tuple[list[domish.Element], dict[str, bool]]:
        """Every item of the node, and the traits learnt (see :meth:`_pages`)."""
        items: list[domish.Element] = []
        learnt: dict[str, bool] = {}
        async with aclosing(self._pages(client, service, pubsub_node, learnt,
                                        record_progress=False, deadline=deadline)) as pages:
            async for page in pages:
                items.extend(page)
        return items, learnt

    async def rows(self, client: Client, service: jabber_jid.JID, pubsub_node: PubsubNode,
                   deadline: float) -> tuple[list[Row], dict[str, bool]]:
        """Every item of the node as rows to store, recording the sync's progress.

        Each page is serialised and parsed while the service prepares the next one.
        """
        rows: list[Row] = []
        learnt: dict[str, bool] = {}
        async with aclosing(self._pages(client, service, pubsub_node, learnt,
                                        record_progress=True, deadline=deadline)) as pages:
            async for page in pages:
                for item in page:
                    rows.append(await self.store.row(client, service, pubsub_node, item))
        return rows, learnt


def _new_items(items: list[domish.Element], seen: dict[str, domish.Element], node: str
               ) -> list[domish.Element]:
    """The items not seen before, recorded in ``seen``; an id met again must come with
    the same item (the first copy is kept).

    :raise InconsistentService: an id came with two different payloads
    """
    new = []
    without_id = 0
    for item in items:
        item_id = item.getAttribute("id")
        if not item_id:
            without_id += 1
            continue
        first = seen.get(item_id)
        if first is None:
            seen[item_id] = item
            new.append(item)
        elif first is not item and first.toXml() != item.toXml():
            raise InconsistentService(
                f"item {item_id!r} of {node!r} came twice with two different payloads")
    if without_id:
        log.debug("{n} item(s) of {node} without id, skipped", n=without_id, node=node)
    return new
