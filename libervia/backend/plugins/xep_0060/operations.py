"""Pubsub operations for the rest of the backend.

Plugins hook in through these trigger points:

``XEP-0060_get_items`` (async return point, :data:`TRIGGER_GET_ITEMS`)
    ``(client, query)`` with an :class:`ItemsQuery`, run *before* the service is asked:
    a callback answering ``(False, ItemsResult)`` answers in place of the service (this
    is how the pubsub cache serves from the database); ``query.use_cache`` is False
    when the caller wants the service itself.
``XEP-0060_publish`` (async point, :data:`TRIGGER_PUBLISH`)
    ``(client, publication)`` with a :class:`Publication`, before publishing; ``False``
    cancels.
``XEP-0060_items``, ``XEP-0060_retract``, ``XEP-0060_purge``, ``XEP-0060_delete``,
``XEP-0060_configuration`` (async points)
    ``(client, event)``: events received from services, see
    :mod:`~libervia.backend.plugins.xep_0060.events`; once the triggers have run, each
    event goes to the frontends as the ``pubsub_event`` bridge signal.

Items are Wokkel/domish ``<item/>`` elements, kept exactly as the service sent them.
The service ``None`` means the profile's own account (PEP).
"""

from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.words.protocols.jabber import error as jabber_error
from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.xish import domish

from libervia.backend.core.interfaces import Client, Host
from libervia.backend.core.jids import parse_jid
from libervia.backend.core.log import getLogger
from libervia.backend.plugins.plugin_xep_0059 import XEP_0059, RSMRequest
from libervia.backend.plugins.xep_0060.events import (
    EVENT_SIGNAL,
    PubsubEvent,
    PubsubHandler,
    burst_event,
    burst_groups,
    parse_events,
    signal_data,
)
from libervia.backend.plugins.xep_0060.stanzas import (
    DEFAULT_TIMEOUT,
    NS_PUBSUB_META_DATA,
    ORDER_BY,
    InvalidRequest,
    ItemsResult,
    PubsubError,
    PubsubRequest,
    check_node,
    form_values,
    parse_configuration,
    parse_created_node,
    parse_items,
    parse_published_id,
    parse_subscription,
    parse_subscriptions,
    pubsub_error,
)

log = getLogger(__name__)

#: a pubsub service: its JID, as a JID or text; ``None`` or ``""`` for the profile's own
#: account (PEP)
ServiceRef = str | jabber_jid.JID | None

TRIGGER_GET_ITEMS = "XEP-0060_get_items"
TRIGGER_PUBLISH = "XEP-0060_publish"


@dataclass(frozen=True)
class ItemsQuery:
    """A get-items request, as the ``XEP-0060_get_items`` trigger sees it.

    :ivar max_items: the service's ``max_items``: the last N published items
    :ivar item_ids: only these items
    :ivar rsm: page to get (XEP-0059)
    :ivar order_by: ``creation`` or ``modification`` (XEP-0413)
    :ivar use_cache: False when the caller wants the service's own answer
    :ivar extra: what the caller passed for other plugins
    """

    service: jabber_jid.JID
    node: str
    max_items: int | None = None
    item_ids: list[str] | None = None
    rsm: RSMRequest | None = None
    order_by: str | None = None
    use_cache: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Publication:
    """Items about to be published, as the ``XEP-0060_publish`` trigger sees them."""

    service: jabber_jid.JID
    node: str
    items: list[domish.Element]
    options: dict[str, Any] | None = None


class Pubsub:
    """Pubsub client operations (the XEP-0060 plugin, ``host.plugins["XEP-0060"]``,
    is one)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.rsm: XEP_0059 = host.plugins["XEP-0059"]
        self.disco = host.plugins["XEP-0030"]

    def get_handler(self, client: Client) -> PubsubHandler:
        return PubsubHandler(self.dispatch, client)

    # helpers

    @staticmethod
    def service_jid(client: Client | None, service: ServiceRef) -> jabber_jid.JID:
        """JID of a service; ``None`` or ``""`` is the profile's own account (PEP).

        :param client: ``None`` for a profile not connected (the cache reads what it
            stored): the service must then be given
        """
        if isinstance(service, jabber_jid.JID):
            return service
        if not service:
            if client is None:
                raise InvalidRequest("no service given, and no connection to tell the "
                                     "profile's own account")
            return client.jid.userhostJID()
        if not isinstance(service, str):
            raise InvalidRequest(f"invalid service JID {service!r}: a JID is a string")
        try:
            return parse_jid(service)
        except (jabber_jid.InvalidFormat, TypeError):
            raise InvalidRequest(f"invalid service JID {service!r}") from None

    async def _send(self, client: Client, request: PubsubRequest) -> domish.Element:
        try:
            return await client.request(request.iq_request())
        except jabber_error.StanzaError as e:
            raise pubsub_error(e, request.service.full(), request.node) from None

    def _request(self, client: Client | None, verb: str, service: ServiceRef, node: str | None,
                 **fields: Any) -> PubsubRequest:
        """A request to a service given as the API takes it, its node checked."""
        if node is not None or verb not in ("create", "subscriptions"):
            check_node(node)
        return PubsubRequest(verb, self.service_jid(client, service), node, **fields)

    # items

    def items_request(
        self,
        client: Client | None,
        service: ServiceRef,
        node: str,
        max_items: int | None = None,
        item_ids: list[str] | None = None,
        rsm_request: RSMRequest | None = None,
        order_by: str | None = None,
    ) -> PubsubRequest:
        """The request for items of a node, every part checked (see :meth:`get_items`).

        Whoever answers it (the service or the cache), it is one a service takes.

        :raise InvalidRequest: a part a service would not take
        """
        if max_items is not None and (isinstance(max_items, bool)
                                      or not isinstance(max_items, int) or max_items < 0):
            raise InvalidRequest(f"max_items must be a positive integer, not {max_items!r}")
        if order_by is not None and order_by not in ORDER_BY:
            raise InvalidRequest(f"order_by must be one of {', '.join(ORDER_BY)}")
        return self._request(client, "items", service, node, item_ids=item_ids or [],
                             max_items=max_items, rsm=rsm_request, order_by=order_by)

    async def get_items(
        self,
        client: Client,
        service: ServiceRef,
        node: str,
        max_items: int | None = None,
        item_ids: list[str] | None = None,
        rsm_request: RSMRequest | None = None,
        order_by: str | None = None,
        use_cache: bool = True,
        extra: dict[str, Any] | None = None,
    ) -> ItemsResult:
        """Get items of a node, from the cache when it can answer, else the service.

        :param max_items: the service's ``max_items``: the last N published items
        :param item_ids: only these items
        :param rsm_request: page to get (XEP-0059)
        :param order_by: ``creation`` or ``modification`` (XEP-0413)
        :param use_cache: ``False`` to ask the service even if the node is cached
        """
        # built (and checked) first: whoever answers, the request is one a service takes
        request = self.items_request(client, service, node, max_items, item_ids,
                                     rsm_request, order_by)
        query = ItemsQuery(request.service, node, max_items, request.item_ids or None,
                           rsm_request, order_by, use_cache, dict(extra or {}))
        go_on, answer = await self.host.trigger.async_return_point(
            TRIGGER_GET_ITEMS, client, query)
        if not go_on:
            return answer
        return parse_items(await self._send(client, request), request.service, node)

    async def get_items_from_service(
        self,
        client: Client,
        service: jabber_jid.JID,
        node: str,
        max_items: int | None = None,
        item_ids: list[str] | None = None,
        rsm_request: RSMRequest | None = None,
        order_by: str | None = None,
    ) -> ItemsResult:
        """Ask the service, never the cache (used by the cache to synchronise)."""
        iq = await self._send(client, PubsubRequest(
            "items", service, node, item_ids=item_ids or [], max_items=max_items,
            rsm=rsm_request, order_by=order_by))
        return parse_items(iq, service, node)

    async def publish(
        self,
        client: Client,
        service: ServiceRef,
        node: str,
        items: list[domish.Element],
        options: dict[str, Any] | None = None,
    ) -> list[str]:
        """Publish items (``<item/>`` elements, ids optional); return their ids.

        XEP-0060 allows one item per publish request (services keep only the first
        otherwise): several items are published one after the other, in order.
        """
        service_jid = self.service_jid(client, service)
        check_node(node)
        for item in items:
            if item.name != "item":
                raise InvalidRequest(f"can only publish <item/> elements, not <{item.name}/>")
        if not await self.host.trigger.async_point(
            TRIGGER_PUBLISH, client, Publication(service_jid, node, items, options)
        ):
            return []
        ids = []
        for item in items:
            iq = await self._send(client, PubsubRequest(
                "publish", service_jid, node, item=item, options=options))
            item_id = parse_published_id(iq) or item.getAttribute("id")
            if item_id:
                ids.append(item_id)
        return ids

    async def retract_items(self, client: Client, service: ServiceRef, node: str,
                            item_ids: list[str], notify: bool = True) -> None:
        """Retract items of a node (subscribers are told, unless ``notify`` is False)."""
        request = self._request(client, "retract", service, node,
                                item_ids=item_ids, notify=notify)
        if not request.item_ids:
            raise InvalidRequest("no item to retract")
        await self._send(client, request)

    # nodes

    async def create_node(self, client: Client, service: ServiceRef, node: str | None,
                          options: dict[str, Any] | None = None) -> str:
        """Create a node (``None``: instant node); return its name."""
        request = self._request(client, "create", service, node, options=options)
        created = parse_created_node(await self._send(client, request))
        if created:
            return created
        if node is None:
            raise PubsubError(f"{request.service.full()} created an instant node without "
                              "telling its name")
        return node

    async def delete_node(self, client: Client, service: ServiceRef, node: str) -> None:
        """Delete a node (owner)."""
        await self._send(client, self._request(client, "delete", service, node))

    async def purge_node(self, client: Client, service: ServiceRef, node: str) -> None:
        """Retract every item of a node (owner)."""
        await self._send(client, self._request(client, "purge", service, node))

    async def get_node_configuration(self, client: Client, service: ServiceRef, node: str
                                     ) -> dict[str, Any]:
        """A node's configuration (owner)."""
        iq = await self._send(client, self._request(client, "configure_get", service, node))
        return parse_configuration(iq)

    async def configure_node(self, client: Client, service: ServiceRef, node: str,
                             options: dict[str, Any]) -> None:
        """Change a node's configuration (owner)."""
        await self._send(client, self._request(client, "configure_set", service, node,
                                               options=options))

    async def get_node_metadata(self, client: Client, service: ServiceRef, node: str
                                ) -> dict[str, Any]:
        """Node metadata from service discovery (``pubsub#meta-data`` form)."""
        service_jid = self.service_jid(client, service)
        check_node(node)
        try:
            # metadata change with the node (its item count...): always asked
            info = await self.disco.get_info(client, service_jid, node,
                                            timeout=DEFAULT_TIMEOUT, use_cache=False)
        except jabber_error.StanzaError as e:
            raise pubsub_error(e, service_jid.full(), node) from None
        metadata: dict[str, Any] = {
            "identities": [{"category": i.category, "type": i.type}
                           for i in info.identities],
            "features": list(info.features),
        }
        form = info.forms.get(NS_PUBSUB_META_DATA)
        if form is not None:
            metadata["meta_data"] = form_values(form)
        return metadata

    async def list_nodes(self, client: Client, service: ServiceRef) -> list[dict[str, Any]]:
        """The nodes a service lists (disco#items), in its order: ``node``, ``name``
        (or ``None``) and ``jid`` (the entity holding the node, ``None`` if it gave an
        invalid one).

        :raise PubsubError: the service answered an error, or did not answer in time
        """
        service_jid = self.service_jid(client, service)
        try:
            items = await self.disco.get_items(client, service_jid,
                                               timeout=DEFAULT_TIMEOUT)
        except jabber_error.StanzaError as e:
            raise pubsub_error(e, service_jid.full(), None) from None
        except defer.TimeoutError:
            raise PubsubError(f"{service_jid.full()} did not answer within "
                              f"{DEFAULT_TIMEOUT} s", "remote-server-timeout") from None
        return [{"node": item.node, "name": item.name,
                 "jid": item.jid.full() if item.jid is not None else None}
                for item in items if item.node]

    # subscriptions

    async def subscribe(self, client: Client, service: ServiceRef, node: str,
                        options: dict[str, Any] | None = None) -> dict[str, Any]:
        """Subscribe the profile (its bare JID) to a node."""
        request = self._request(client, "subscribe", service, node, options=options,
                                subscriber=client.jid.userhost())
        return parse_subscription(await self._send(client, request), node)

    async def unsubscribe(self, client: Client, service: ServiceRef, node: str,
                          subid: str | None = None) -> None:
        """Unsubscribe the profile from a node."""
        await self._send(client, self._request(
            client, "unsubscribe", service, node, subscriber=client.jid.userhost(),
            subid=subid))

    async def subscriptions(self, client: Client, service: ServiceRef, node: str | None = None
                            ) -> list[dict[str, Any]]:
        """The profile's subscriptions on a service (to one node, if given)."""
        request = self._request(client, "subscriptions", service, node or None)
        return parse_subscriptions(await self._send(client, request))

    # events (called by the handler)

    @staticmethod
    def _event_service(client: Client, message: domish.Element) -> jabber_jid.JID | None:
        sender = message.getAttribute("from")
        try:
            return parse_jid(sender) if sender else client.jid.userhostJID()
        except jabber_jid.InvalidFormat:
            log.warn("ignoring a pubsub event from an invalid JID")
            return None

    async def dispatch(self, client: Client, messages: list[domish.Element]) -> None:
        """Hand notifications to the trigger points: one notification (each of its
        actions in order), or a burst of plain item notifications (see
        :func:`~.events.items_notification`): one ``XEP-0060_items`` event per node,
        the nodes' events handled at the same time.  A burst costs the cache a
        database transaction, not one per notification (the writes of the nodes
        share it: see the storage's group commit).

        :raise Exception: what a trigger raised (the first one, for a burst: the
            others are logged), once every event of the burst was handled
        """
        if len(messages) == 1:
            service = self._event_service(client, messages[0])
            if service is None:
                return
            for event in parse_events(service, messages[0]):
                await self._dispatch_event(client, event)
            return
        bursts = []
        for group in burst_groups(messages):
            service = self._event_service(client, group[0])
            if service is not None:
                bursts.append(defer.ensureDeferred(
                    self._dispatch_event(client, burst_event(service, group))))
        results = await defer.DeferredList(bursts, consumeErrors=True)
        failures = [result for ok, result in results if not ok]
        for failure in failures[1:]:
            log.failure("error while handling a pubsub event", failure)
        if failures:
            failures[0].raiseException()

    async def _dispatch_event(self, client: Client, event: PubsubEvent) -> None:
        bridge = self.host.bridge
        try:
            await self.host.trigger.async_point(event.TRIGGER, client, event)
        finally:
            # after the triggers (a frontend told of new items finds them cached),
            # and even when one failed: the service did send the event
            if bridge.is_wanted(EVENT_SIGNAL):
                bridge.emit_signal(EVENT_SIGNAL,
                                   **signal_data(client.profile.name, event))

