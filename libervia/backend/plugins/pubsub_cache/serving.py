"""Get-items requests answered from the database, as the service would answer.

The cache handles the ``XEP-0060_get_items`` trigger before anything else asks the
service.  A node never seen is asked to the service, and analysed in the background
once the service has answered (a refused request leaves nothing in the cache); a
synchronised node verified since its profile connected is answered from the
database, with the semantics of its service (max items, item ids, RSM pages, order) and
a ``cached`` flag.  Everything else goes to the service, as if there were no cache.
"""

from typing import Any

from twisted.words.protocols.jabber import jid as jabber_jid

from libervia.backend.core.exceptions import NotFound
from libervia.backend.core.interfaces import Client
from libervia.backend.core.log import getLogger
from libervia.backend.memory.sqla_mapping import PubsubNode, SyncState
from libervia.backend.plugins.plugin_xep_0059 import RSMRequest
from libervia.backend.plugins.pubsub_cache.state import CacheState
from libervia.backend.plugins.pubsub_cache.store import CacheStore
from libervia.backend.plugins.pubsub_cache.sync import Synchroniser
from libervia.backend.plugins.pubsub_cache.traits import node_traits
from libervia.backend.plugins.xep_0060.operations import ItemsQuery, Pubsub
from libervia.backend.plugins.xep_0060.stanzas import ItemsResult, TextItemsResult

log = getLogger(__name__)


class CachedAnswers:
    """Answers get-items requests from the cache where it may."""

    def __init__(self, pubsub: Pubsub, state: CacheState, store: CacheStore,
                 sync: Synchroniser) -> None:
        self.pubsub = pubsub
        self.state = state
        self.store = store
        self.sync = sync

    async def on_get_items(self, client: Client, query: ItemsQuery
                           ) -> tuple[bool, ItemsResult | None]:
        """The ``XEP-0060_get_items`` trigger: ``(False, answer)`` when the cache
        answers, ``(True, None)`` to let the service answer."""
        if not query.use_cache:
            return True, None
        service, node, rsm_request = query.service, query.node, query.rsm
        try:
            pubsub_node = await self.store.node(client, service, node)
        except Exception:
            return _service_answers(node)
        if pubsub_node is None:
            return False, await self._first_read(client, query)
        try:
            if pubsub_node.sync_state is None and pubsub_node.analyser is not None:
                # analysed, but its synchronisation never started (backend stopped)
                self.state.spawn(self.sync.sync_in_background(client, service, node,
                                                              pubsub_node))
                return True, None
            if not self.servable(pubsub_node, client):
                translated = await self._service_cursor(pubsub_node, rsm_request)
                if translated is None:
                    return True, None
                result = await self.pubsub.get_items_from_service(
                    client, service, node, query.max_items, query.item_ids, translated,
                    query.order_by)
                return False, result
            result = await self.get_cached_items(
                pubsub_node, service, query.max_items, query.item_ids, rsm_request,
                query.order_by)
        except NotFound:
            # an RSM cursor we don't know: let the service deal with it
            return True, None
        except Exception:
            return _service_answers(node)
        return False, result

    async def _first_read(self, client: Client, query: ItemsQuery) -> ItemsResult:
        """The service's answer for a node the cache does not know.

        Only once the service has answered (the node exists, and may be read) is the
        node analysed, in the background: a request the service refuses
        (item-not-found, forbidden...) leaves nothing in the cache, and the node stays
        as unknown to it as a node never asked for.

        :raise PubsubError: the service's refusal, as it would without the cache
        """
        result = await self.pubsub.get_items_from_service(
            client, query.service, query.node, query.max_items, query.item_ids,
            query.rsm, query.order_by)
        self.state.spawn(self.sync.analyse_and_sync(client, query.service, query.node))
        return result

    def servable(self, pubsub_node: PubsubNode, client: Client) -> bool:
        """Whether the node may be answered from the database now, for ``client``."""
        return (pubsub_node.sync_state is SyncState.COMPLETED
                and self.state.is_servable(pubsub_node.id, pubsub_node.service,
                                           pubsub_node.name, client))

    def freshness(self, pubsub_node: PubsubNode, client: Client | None) -> str | None:
        """How far what the cache holds of a node can be trusted now, for a
        synchronised node (``None`` for others: nothing whole is held):

        ``live``
            checked against the service on the client's current stream, nothing
            pending: kept equal to the service by its events, and served;
        ``unchecked``
            connected, but not checked since the connection (the check is pending or
            failed, or events were lost): it may be behind the service;
        ``offline``
            the profile is disconnected: the items as they were when it last followed
            the node, maybe behind the service.

        :param client: the profile's client, ``None`` while it is disconnected
        """
        if pubsub_node.sync_state is not SyncState.COMPLETED:
            return None
        if client is None or not getattr(client, "is_connected", True):
            return "offline"
        return "live" if self.servable(pubsub_node, client) else "unchecked"

    async def _service_cursor(self, pubsub_node: PubsubNode,
                              rsm_request: RSMRequest | None) -> RSMRequest | None:
        """A cursor the cache gave, turned into a request the service understands.

        The cache's RSM cursors are item ids; a caller paging with them goes on doing
        so when the node stops being served (while it is checked after a connection,
        for instance).  A service whose cursors are something else (ejabberd: time
        stamps) would answer nothing: the cursor becomes a position (RSM ``index``)
        in the cached node.  ``None`` when there is nothing to translate.
        """
        if (rsm_request is None or not (rsm_request.after or rsm_request.before)
                or pubsub_node.sync_state is not SyncState.COMPLETED):
            return None
        traits = node_traits(pubsub_node)
        if not traits.rsm or traits.id_cursors:
            return None
        storage = self.store.storage
        try:
            if rsm_request.after:
                following, page = await storage.pubsub.get_items(
                    pubsub_node.id, max_items=1, after=rsm_request.after,
                    order_by=traits.item_order)
                index = page.index if following else page.count
                return RSMRequest(max=rsm_request.max, index=index)
            preceding, page = await storage.pubsub.get_items(
                pubsub_node.id, max_items=rsm_request.max, before=rsm_request.before,
                order_by=traits.item_order)
        except NotFound:
            return None  # not one of ours: the service's own cursor
        return RSMRequest(max=len(preceding), index=page.index or 0)

    async def get_cached_items(
        self, pubsub_node: PubsubNode, service: jabber_jid.JID,
        max_items: int | None = None, item_ids: list[str] | None = None,
        rsm_request: RSMRequest | None = None, order_by: str | None = None,
    ) -> ItemsResult:
        """Answer a get-items request from the database, as the service would.

        The node's service traits (stored with the node when it was synchronised)
        decide: the order of the items (by creation, or by last publication for
        services moving a re-published item to the end; ``order_by`` only if the
        service supports it), whether RSM is honoured (a service ignoring it answers
        the whole node, without RSM data) and the order of items asked by id.

        :raise NotFound: an RSM ``after`` or ``before`` cursor unknown to the cache
        """
        traits = node_traits(pubsub_node)
        order = (order_by or traits.item_order) if traits.order_by else traits.item_order
        if not traits.rsm:
            rsm_request = None
        # the id and XML of each item are all an answer needs
        kwargs: dict[str, Any] = {"order_by": order}
        if item_ids:
            kwargs["item_ids"] = item_ids
        if rsm_request is not None:
            kwargs["max_items"] = rsm_request.max
            if rsm_request.after is not None:
                kwargs["after"] = rsm_request.after
            elif rsm_request.before is not None:
                kwargs["before"] = rsm_request.before
            elif rsm_request.index is not None:
                kwargs["index"] = rsm_request.index
        elif max_items is not None:
            # the last N published items, oldest first, as services answer
            kwargs["max_items"] = max_items
            kwargs["before"] = ""
        items, page = await self.store.storage.pubsub.get_items(pubsub_node.id, **kwargs)
        if item_ids and traits.ids_in_request_order:
            by_name = {item.name: item for item in items}
            items = [by_name.pop(i) for i in item_ids if i in by_name]
        # the texts as stored: a frontend gets them as they are, a plugin reading the
        # items gets them parsed
        result = TextItemsResult(service.full(), pubsub_node.name,
                                 [item.data for item in items], cached=True)
        if traits.rsm and (rsm_request is not None or max_items is not None) and (
            not item_ids
        ):
            result.rsm = {k: v for k, v in (("first", page.first), ("last", page.last),
                                            ("index", page.index), ("count", page.count))
                          if v is not None}
        return result


def _service_answers(node: str) -> tuple[bool, None]:
    """What the trigger returns when the cache fails (called in an ``except`` block):
    the cache is an optimisation, whatever goes wrong the service answers."""
    log.failure("pubsub cache can't answer for node {node}, asking the service",
                node=node)
    return True, None
