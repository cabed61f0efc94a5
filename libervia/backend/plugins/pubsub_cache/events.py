"""The cache follows its nodes' services through the events they send.

New and updated items, retractions, purges, node deletions and configuration changes
(XEP-0060 triggers) are applied to the cached nodes; events of a node being rewritten
(synchronised or verified) wait for the end of the rewrite.  New items of a node never
seen (a contact's blog pushed by its server, XEP-0163 ``+notify``) have it analysed and
synchronised, as a first get does.  An event the database can't take (it is down, or
busy for too long) is lost: the node is not served any more, and is checked against its
service once the database answers again.
"""

from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet import task
from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.xish import domish

from libervia.backend.core.interfaces import Client
from libervia.backend.core.log import getLogger
from libervia.backend.core.triggers import TriggerManager
from libervia.backend.memory.sqla_mapping import PubsubNode, SyncState
from libervia.backend.memory.storage import StorageError
from libervia.backend.plugins.pubsub_cache.state import CacheState, service_key
from libervia.backend.plugins.pubsub_cache.store import CacheStore, profile_of
from libervia.backend.plugins.pubsub_cache.sync import Synchroniser
from libervia.backend.plugins.xep_0060.events import (
    ConfigurationEvent,
    DeleteEvent,
    ItemsEvent,
    PubsubEvent,
    PurgeEvent,
    RetractEvent,
    as_pubsub_item,
)
from libervia.backend.plugins.xep_0060.operations import Pubsub
from libervia.backend.plugins.xep_0060.stanzas import PubsubError
from libervia.backend.xmpp.profiles import StorageHost

log = getLogger(__name__)

#: longest wait between two checks of a database that could not store an event
MISSED_CHECK_MAX_DELAY = 10.0

EventHandler = Callable[[Any, Any], Awaitable[bool]]


class EventHandlers:
    """The cache's handlers of the XEP-0060 event triggers."""

    def __init__(self, host: StorageHost, pubsub: Pubsub, state: CacheState, store: CacheStore,
                 sync: Synchroniser) -> None:
        self.host = host
        self.pubsub = pubsub
        self.state = state
        self.store = store
        self.sync = sync

    def register(self, trigger: TriggerManager) -> None:
        """Add the handlers to the trigger manager."""
        trigger.add(ItemsEvent.TRIGGER, self._storing(self.on_items))
        trigger.add(RetractEvent.TRIGGER, self._storing(self.on_retract))
        trigger.add(PurgeEvent.TRIGGER, self._storing(self.on_purge))
        trigger.add(DeleteEvent.TRIGGER, self._storing(self.on_delete))
        trigger.add(ConfigurationEvent.TRIGGER, self._storing(self.on_configuration))

    def _storing(self, handler: EventHandler) -> EventHandler:
        """``handler`` of a node's events, whose storage failures lose no event."""
        async def on_event(client: Client, event: PubsubEvent) -> bool:
            service, node = event.service, event.node
            try:
                return await handler(client, event)
            except StorageError as e:
                key = (service_key(service), node)
                log.warn("an event of node {node} could not be stored ({error}); the "
                         "node is checked against the service once the database "
                         "answers", node=node, error=e)
                if key not in self.state.missed:
                    self.state.missed.add(key)
                    self.state.spawn(self._check_missed(client, service, node))
                return True

        return on_event

    async def _check_missed(self, client: Client, service: jabber_jid.JID, node: str
                            ) -> None:
        """Wait for the database, then verify a node whose events were lost."""
        key = (service_key(service), node)
        delay = 0.5
        try:
            while True:
                try:
                    # from the database itself: a node row remembered would answer
                    # while the database still can't
                    pubsub_node = await self.store.storage.pubsub.get_pubsub_node(
                        profile_of(client), service_key(service), node,
                        from_memory=False)
                    break
                except StorageError:
                    await task.deferLater(self.host.reactor, delay, lambda: None)
                    delay = min(delay * 2, MISSED_CHECK_MAX_DELAY)
            if pubsub_node is None or pubsub_node.sync_state is not SyncState.COMPLETED:
                return
            self.state.unverify(pubsub_node.id)
            await self.sync.verify(client, service, pubsub_node)
        finally:
            self.state.missed.discard(key)

    async def _followed_node(self, client: Client, service: jabber_jid.JID, node: str
                             ) -> PubsubNode | None:
        """The cached node whose items events change, if the cache holds them."""
        pubsub_node = await self.store.node(client, service, node)
        if pubsub_node is None or pubsub_node.sync_state not in (
            SyncState.COMPLETED, SyncState.IN_PROGRESS
        ):
            return None
        return pubsub_node

    async def on_items(self, client: Client, event: ItemsEvent) -> bool:
        """New or updated items."""
        service, node, items = event.service, event.node, event.items
        pubsub_node = await self._followed_node(client, service, node)
        if pubsub_node is None:
            await self._first_seen(client, service, node)
            return True
        with_payload = [i for i in items if i.getAttribute("id") and _has_payload(i)]
        without = [i.getAttribute("id") for i in items
                   if i.getAttribute("id") and not _has_payload(i)]
        if len(with_payload) + len(without) < len(items):
            log.warn("ignoring {n} item(s) without id in an event of {node}",
                     n=len(items) - len(with_payload) - len(without), node=node)
        converted = [as_pubsub_item(i) for i in with_payload]
        if without:
            # notification without payload: fetch the items it names
            try:
                fetched = await self.pubsub.get_items_from_service(
                    client, service, node, item_ids=without)
            except PubsubError as e:
                log.warn("can't fetch notified items of {node}: {error}; the node will "
                         "be checked against the service", node=node, error=e)
                self.state.unverify(pubsub_node.id)
                self.state.spawn(self.sync.verify(client, service, pubsub_node))
                return True
            wanted = set(without)
            converted += [i for i in fetched.items if i.getAttribute("id") in wanted]
        if not converted:
            return True
        if self.state.defer_event(pubsub_node.id, "items", converted):
            return True
        await self.store.upsert(client, service, pubsub_node, converted)
        return True

    async def _first_seen(self, client: Client, service: jabber_jid.JID, node: str
                          ) -> None:
        """A node first seen through a notification is analysed like one first seen
        by a get (and synchronised if its analyser says so)."""
        if service.resource is not None:
            # PEP services and pubsub components notify from a bare JID, which servers
            # stamp: a full JID is a client sending what it likes
            return
        if not await self._may_introduce(client, service):
            log.info("profile {profile}: notification of node {node} from {service} "
                     "ignored: only the PEP nodes of the account and of the contacts "
                     "whose presence it sees are analysed when first notified",
                     profile=profile_of(client), node=node[:200],
                     service=service.full()[:200])
            return
        if await self.store.node(client, service, node) is None:
            self.state.spawn(self.sync.analyse_and_sync(client, service, node))

    async def _may_introduce(self, client: Client, service: jabber_jid.JID) -> bool:
        """Whether a notification from ``service`` may have a node never seen analysed
        (requests to ``service``, and a row of the database): PEP nodes of the
        profile's own account and of the contacts whose presence it sees (those whose
        notifications ``+notify`` brings, RFC 6121 subscription ``to`` or ``both``).
        Anyone else, whose notifications are stamped by a server of their own, could
        have the backend ask and record nodes at will; and a pubsub service notifies
        the nodes the account subscribed to, from any client and at any time (ejabberd
        replays their last items at each login): a profile caches those when a get
        asks for them."""
        if service.user is None:
            return False
        if service.userhost() == client.jid.userhost():
            return True
        stored = await self.host.storage.roster.get_roster(profile_of(client))
        return any(e.jid == service.userhost() and e.subscription in ("to", "both")
                   for e in stored.items)

    async def on_retract(self, client: Client, event: RetractEvent) -> bool:
        """Items retracted."""
        await self._delete_items(client, event, "retract", event.item_ids)
        return True

    async def on_purge(self, client: Client, event: PurgeEvent) -> bool:
        """Every item of the node retracted."""
        await self._delete_items(client, event, "purge", None)
        return True

    async def _delete_items(self, client: Client, event: PubsubEvent, kind: str,
                            item_ids: list[str] | None) -> None:
        pubsub_node = await self._followed_node(client, event.service, event.node)
        if pubsub_node is not None and not self.state.defer_event(
            pubsub_node.id, kind, item_ids
        ):
            await self.store.delete_items(pubsub_node, item_ids)

    async def on_delete(self, client: Client, event: DeleteEvent) -> bool:
        """The node was deleted."""
        await self.sync.node_deleted(client, event.service, event.node)
        return True

    async def on_configuration(self, client: Client, event: ConfigurationEvent) -> bool:
        """The node's configuration changed: what it holds may have changed too, so it
        is forgotten and analysed again."""
        service, node = event.service, event.node
        pubsub_node = await self.store.node(client, service, node)
        if pubsub_node is None or self.state.defer_event(pubsub_node.id, "configuration",
                                                         event.options):
            return True
        await self.store.forget(client, pubsub_node)
        self.state.spawn(self.sync.analyse_and_sync(client, service, node))
        return True


def _has_payload(item: domish.Element) -> bool:
    return any(True for __ in item.elements())
