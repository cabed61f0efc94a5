"""XEP-0060: Publish-Subscribe, the client side, for every profile.

It offers the pubsub operations to the rest of the backend and to frontends (bridge
methods ``pubsub_*``), and lets plugins hook in through triggers:

``XEP-0060_get_items`` (async return point)
    ``(client, service, node, max_items, item_ids, rsm_request, order_by, extra)``,
    run *before* the service is asked: a callback answering ``(False, (items,
    metadata))`` answers in place of the service (this is how the pubsub cache serves
    from the database).  ``extra["use_cache"]`` is False when the caller wants the
    service itself.
``XEP-0060_publish`` (async point)
    ``(client, service, node, items, options)`` before publishing; ``False`` cancels.
``XEP-0060_items``, ``XEP-0060_retract``, ``XEP-0060_purge``, ``XEP-0060_delete``,
``XEP-0060_configuration`` (async points)
    events received from services: ``(client, service, node, ...)``; see
    :class:`PubsubHandler`.  New items of one node notified in a row while the
    previous notifications were being handled come in one ``XEP-0060_items`` call.

Items are Wokkel/domish ``<item/>`` elements, kept exactly as the service sent them.
The service ``None`` means the profile's own account (PEP).
"""

import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.words.protocols.jabber import error as jabber_error
from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.xish import domish
from wokkel import data_form, generic
from wokkel.subprotocols import XMPPHandler

from libervia.backend.core.constants import C
from libervia.backend.core.exceptions import BackendError, NotFound
from libervia.backend.core.interfaces import Client, Host
from libervia.backend.core.log import getLogger
from libervia.backend.core.xml_tools import XMLError, parse_xml
from libervia.backend.plugins.plugin_xep_0059 import (
    XEP_0059,
    RSMError,
    RSMRequest,
    RSMResponse,
    find_set,
)

log = getLogger(__name__)

#: a pubsub service: its JID, as a JID or text; ``None`` or ``""`` for the profile's own
#: account (PEP)
ServiceRef = str | jabber_jid.JID | None

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_PUBSUB_EVENT = NS_PUBSUB + "#event"
NS_PUBSUB_OWNER = NS_PUBSUB + "#owner"
NS_PUBSUB_ERRORS = NS_PUBSUB + "#errors"
NS_PUBSUB_META_DATA = NS_PUBSUB + "#meta-data"
NS_PUBSUB_NODE_CONFIG = NS_PUBSUB + "#node_config"
NS_PUBSUB_PUBLISH_OPTIONS = NS_PUBSUB + "#publish-options"
NS_PUBSUB_SUBSCRIBE_OPTIONS = NS_PUBSUB + "#subscribe_options"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_ORDER_BY = "urn:xmpp:order-by:1"  # XEP-0413

ORDER_BY = ("creation", "modification")
#: seconds to wait for a service's answer
DEFAULT_TIMEOUT = 60

PLUGIN_INFO = {
    "name": "Publish-Subscribe",
    "import_name": "XEP-0060",
    "type": C.PLUG_TYPE_XEP,
    "modes": list(C.PLUG_MODE_BOTH),
    "protocols": ["XEP-0060", "XEP-0413"],
    "dependencies": ["XEP-0059"],
    "recommendations": [],
    "main": "XEP_0060",
    "handler": True,
    "description": "Publish-subscribe: items, nodes, subscriptions and events.",
}


class PubsubError(BackendError):
    """A pubsub request failed; the message carries the service's error condition."""

    def __init__(self, message: str, condition: str | None = None) -> None:
        super().__init__(message)
        self.condition = condition


class InvalidRequest(PubsubError, ValueError):
    """The request is invalid before anything is sent (bad JID, node, XML...)."""


class ItemNotFound(PubsubError, NotFound):
    """The node or the item does not exist on the service."""


@dataclass
class ItemsResult:
    """Answer of a get-items request.

    :ivar items: ``<item/>`` elements as the service sent them
    :ivar rsm: what the service said about the page (``first``, ``last``, ``index``,
        ``count``), empty without RSM
    :ivar cached: the answer comes from the local cache, not the service
    """

    service: str
    node: str
    items: list[domish.Element] = field(default_factory=list)
    rsm: dict[str, Any] = field(default_factory=dict)
    cached: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def metadata(self) -> dict[str, Any]:
        return {"service": self.service, "node": self.node, "rsm": self.rsm,
                "cached": self.cached, **self.extra}

    def serialise(self) -> dict[str, Any]:
        """JSON form for the bridge: items as XML text.

        :raise PubsubError: an item is nested too deeply to be serialised (domish
            serialises recursively)
        """
        items = []
        for item in self.items:
            try:
                items.append(item.toXml())
            except RecursionError:
                raise PubsubError(
                    f"item {item.getAttribute('id')!r} of node {self.node!r} is nested "
                    "too deeply to be sent to frontends; ask for the other items by id",
                    "too-deep",
                ) from None
        return {"items": items, "metadata": self.metadata}


class IQRequest(generic.Request):
    """An IQ get/set carrying a prepared payload element."""

    def __init__(self, recipient: jabber_jid.JID | None, stanza_type: str,
                 payload: domish.Element, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        super().__init__(recipient=recipient, stanzaType=stanza_type)
        self.payload = payload
        self.timeout = timeout

    def toElement(self) -> domish.Element:  # noqa: N802 (Wokkel API)
        element = super().toElement()
        element.addChild(self.payload)
        return element


def _pubsub_error(exc: BaseException, service: str, node: str | None) -> BaseException:
    """Turn a stanza error into a PubsubError saying which node and why."""
    if not isinstance(exc, jabber_error.StanzaError):
        return exc
    where = f"node {node!r} on {service}" if node else service
    text = f": {exc.text}" if exc.text else ""
    if exc.condition == "item-not-found":
        return ItemNotFound(f"{where} not found{text}", exc.condition)
    return PubsubError(f"pubsub request to {where} failed: {exc.condition}{text}",
                       exc.condition)


#: characters XML 1.0 can't carry: sent in a stanza, they would make the server close
#: the stream (control characters, surrogates, U+FFFE and U+FFFF)
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def check_node(node: Any) -> str:
    """``node`` if it can be a node name.

    :raise InvalidRequest: not a string, empty, too long, or with characters XML can't
        carry
    """
    if (not isinstance(node, str) or not node or len(node) > 1024
            or _NOT_XML_CHAR.search(node)):
        raise InvalidRequest("a node name must be a non-empty string (1024 characters "
                             "max) of characters XML allows (no control character)")
    return node


def form_values(form: data_form.Form) -> dict[str, Any]:
    """Values of a data form as plain data (lists for multi-valued fields)."""
    values: dict[str, Any] = {}
    for name, form_field in form.fields.items():
        if name == "FORM_TYPE":
            continue
        if form_field.fieldType in ("list-multi", "jid-multi", "text-multi"):
            values[name] = [str(v) for v in form_field.values]
        else:
            value = form_field.value
            values[name] = value.full() if isinstance(value, jabber_jid.JID) else value
    return values


def submit_form(namespace: str, options: dict[str, Any]) -> data_form.Form:
    form = data_form.Form("submit", formNamespace=namespace)
    for name, value in options.items():
        if isinstance(value, (list, tuple)):
            form.addField(data_form.Field("list-multi", var=name,
                                          values=[str(v) for v in value]))
        elif isinstance(value, bool):
            form.addField(data_form.Field("boolean", var=name, value=value))
        else:
            form.addField(data_form.Field(var=name, value=str(value)))
    return form


class XEP_0060:  # noqa: N801
    """Pubsub client operations; ``host.plugins["XEP-0060"]``."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.rsm: XEP_0059 = host.plugins["XEP-0059"]
        self._register_bridge()

    def get_handler(self, client: Client) -> "PubsubHandler":
        return PubsubHandler(self, client)

    # helpers

    @staticmethod
    def service_jid(client: Client, service: ServiceRef) -> jabber_jid.JID:
        """JID of a service; ``None`` or ``""`` is the profile's own account (PEP)."""
        if isinstance(service, jabber_jid.JID):
            return service
        if not service:
            return client.jid.userhostJID()
        if not isinstance(service, str):
            raise InvalidRequest(f"invalid service JID {service!r}: a JID is a string")
        try:
            return jabber_jid.JID(service)
        except (jabber_jid.InvalidFormat, TypeError):
            raise InvalidRequest(f"invalid service JID {service!r}") from None

    async def _send(self, client: Client, service: jabber_jid.JID, stanza_type: str,
                    payload: domish.Element, node: str | None) -> domish.Element:
        try:
            return await client.request(IQRequest(service, stanza_type, payload))
        except jabber_error.StanzaError as e:
            raise _pubsub_error(e, service.full(), node) from None

    @staticmethod
    def _pubsub(namespace: str = NS_PUBSUB) -> domish.Element:
        return domish.Element((namespace, "pubsub"))

    # items

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
        service_jid = self.service_jid(client, service)
        check_node(node)
        if max_items is not None and (not isinstance(max_items, int) or max_items < 0):
            raise InvalidRequest(f"max_items must be a positive integer, not {max_items!r}")
        if order_by is not None and order_by not in ORDER_BY:
            raise InvalidRequest(f"order_by must be one of {', '.join(ORDER_BY)}")
        extra = dict(extra or {})
        extra["use_cache"] = use_cache
        go_on, answer = await self.host.trigger.async_return_point(
            "XEP-0060_get_items", client, service_jid, node, max_items, item_ids,
            rsm_request, order_by, extra,
        )
        if not go_on:
            return answer
        return await self.get_items_from_service(
            client, service_jid, node, max_items, item_ids, rsm_request, order_by
        )

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
        pubsub = self._pubsub()
        items_elt = pubsub.addElement("items")
        items_elt["node"] = node
        if max_items is not None:
            items_elt["max_items"] = str(max_items)
        for item_id in item_ids or ():
            items_elt.addElement("item")["id"] = item_id
        if rsm_request is not None:
            pubsub.addChild(rsm_request.to_element())
        if order_by is not None:
            order_elt = pubsub.addElement((NS_ORDER_BY, "order"))
            order_elt["field"] = order_by
        iq = await self._send(client, service, "get", pubsub, node)
        return self.parse_items_answer(iq, service, node)

    @staticmethod
    def parse_items_answer(iq: domish.Element, service: jabber_jid.JID, node: str
                           ) -> ItemsResult:
        result = ItemsResult(service.full(), node)
        pubsub = next(iq.elements(NS_PUBSUB, "pubsub"), None)
        if pubsub is None:
            return result
        items_elt = next(pubsub.elements(NS_PUBSUB, "items"), None)
        if items_elt is not None:
            result.items = list(items_elt.elements(NS_PUBSUB, "item"))
        set_elt = find_set(pubsub)
        if set_elt is not None:
            try:
                result.rsm = RSMResponse.from_element(set_elt).to_dict()
            except RSMError as e:
                log.warn("ignoring invalid RSM answer from {service}: {error}",
                         service=service.full(), error=e)
        return result

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
            "XEP-0060_publish", client, service_jid, node, items, options
        ):
            return []
        ids = []
        for item in items:
            item_id = await self._publish_one(client, service_jid, node, item, options)
            if item_id:
                ids.append(item_id)
        return ids

    async def _publish_one(self, client: Client, service: jabber_jid.JID, node: str,
                           item: domish.Element, options: dict[str, Any] | None
                           ) -> str | None:
        pubsub = self._pubsub()
        publish_elt = pubsub.addElement("publish")
        publish_elt["node"] = node
        item.uri = item.defaultUri = NS_PUBSUB
        publish_elt.addChild(item)
        if options:
            options_elt = pubsub.addElement("publish-options")
            options_elt.addChild(
                submit_form(NS_PUBSUB_PUBLISH_OPTIONS, options).toElement()
            )
        iq = await self._send(client, service, "set", pubsub, node)
        item_id = item.getAttribute("id")
        answer = next(iq.elements(NS_PUBSUB, "pubsub"), None)
        if answer is not None:
            answer_publish = next(answer.elements(NS_PUBSUB, "publish"), None)
            if answer_publish is not None:
                returned = next(answer_publish.elements(NS_PUBSUB, "item"), None)
                if returned is not None and returned.getAttribute("id"):
                    item_id = returned["id"]
        return item_id

    async def retract_items(self, client: Client, service: ServiceRef, node: str,
                            item_ids: list[str], notify: bool = True) -> None:
        service_jid = self.service_jid(client, service)
        check_node(node)
        if not item_ids:
            raise InvalidRequest("no item to retract")
        pubsub = self._pubsub()
        retract_elt = pubsub.addElement("retract")
        retract_elt["node"] = node
        if notify:
            retract_elt["notify"] = "true"
        for item_id in item_ids:
            retract_elt.addElement("item")["id"] = item_id
        await self._send(client, service_jid, "set", pubsub, node)

    # nodes

    async def create_node(self, client: Client, service: ServiceRef, node: str | None,
                          options: dict[str, Any] | None = None) -> str:
        """Create a node (``None``: instant node); return its name."""
        service_jid = self.service_jid(client, service)
        if node is not None:
            check_node(node)
        pubsub = self._pubsub()
        create_elt = pubsub.addElement("create")
        if node:
            create_elt["node"] = node
        if options:
            configure_elt = pubsub.addElement("configure")
            configure_elt.addChild(submit_form(NS_PUBSUB_NODE_CONFIG, options).toElement())
        iq = await self._send(client, service_jid, "set", pubsub, node)
        answer = next(iq.elements(NS_PUBSUB, "pubsub"), None)
        if answer is not None:
            created = next(answer.elements(NS_PUBSUB, "create"), None)
            if created is not None and created.getAttribute("node"):
                return created["node"]
        if node is None:
            raise PubsubError(f"{service_jid.full()} created an instant node without "
                              "telling its name")
        return node

    async def _owner_request(self, client: Client, service: ServiceRef, node: str, verb: str,
                             stanza_type: str = "set",
                             child: domish.Element | None = None) -> domish.Element:
        service_jid = self.service_jid(client, service)
        check_node(node)
        pubsub = self._pubsub(NS_PUBSUB_OWNER)
        verb_elt = pubsub.addElement(verb)
        verb_elt["node"] = node
        if child is not None:
            verb_elt.addChild(child)
        return await self._send(client, service_jid, stanza_type, pubsub, node)

    async def delete_node(self, client: Client, service: ServiceRef, node: str) -> None:
        await self._owner_request(client, service, node, "delete")

    async def purge_node(self, client: Client, service: ServiceRef, node: str) -> None:
        await self._owner_request(client, service, node, "purge")

    async def get_node_configuration(self, client: Client, service: ServiceRef, node: str
                                     ) -> dict[str, Any]:
        iq = await self._owner_request(client, service, node, "configure", "get")
        pubsub = next(iq.elements(NS_PUBSUB_OWNER, "pubsub"), None)
        configure = next(pubsub.elements(NS_PUBSUB_OWNER, "configure"), None) if pubsub else None
        form_elt = next(configure.elements(data_form.NS_X_DATA, "x"), None) if configure else None
        if form_elt is None:
            return {}
        return form_values(data_form.Form.fromElement(form_elt))

    async def configure_node(self, client: Client, service: ServiceRef, node: str,
                             options: dict[str, Any]) -> None:
        await self._owner_request(client, service, node, "configure", "set",
                                  submit_form(NS_PUBSUB_NODE_CONFIG, options).toElement())

    async def get_node_metadata(self, client: Client, service: ServiceRef, node: str
                                ) -> dict[str, Any]:
        """Node metadata from service discovery (``pubsub#meta-data`` form)."""
        service_jid = self.service_jid(client, service)
        check_node(node)
        query = domish.Element((NS_DISCO_INFO, "query"))
        query["node"] = node
        iq = await self._send(client, service_jid, "get", query, node)
        query = next(iq.elements(NS_DISCO_INFO, "query"), None)
        metadata: dict[str, Any] = {"identities": [], "features": []}
        if query is None:
            return metadata
        for identity in query.elements(NS_DISCO_INFO, "identity"):
            metadata["identities"].append({
                "category": identity.getAttribute("category"),
                "type": identity.getAttribute("type"),
            })
        metadata["features"] = [f.getAttribute("var") for f in
                                query.elements(NS_DISCO_INFO, "feature")]
        for form_elt in query.elements(data_form.NS_X_DATA, "x"):
            form = data_form.Form.fromElement(form_elt)
            if form.formNamespace == NS_PUBSUB_META_DATA:
                metadata["meta_data"] = form_values(form)
        return metadata

    # subscriptions

    async def subscribe(self, client: Client, service: ServiceRef, node: str,
                        options: dict[str, Any] | None = None) -> dict[str, Any]:
        service_jid = self.service_jid(client, service)
        check_node(node)
        pubsub = self._pubsub()
        subscribe_elt = pubsub.addElement("subscribe")
        subscribe_elt["node"] = node
        subscribe_elt["jid"] = client.jid.userhost()
        if options:
            options_elt = pubsub.addElement("options")
            options_elt.addChild(submit_form(NS_PUBSUB_SUBSCRIBE_OPTIONS, options).toElement())
        iq = await self._send(client, service_jid, "set", pubsub, node)
        answer = next(iq.elements(NS_PUBSUB, "pubsub"), None)
        subscription = (next(answer.elements(NS_PUBSUB, "subscription"), None)
                        if answer is not None else None)
        if subscription is None:
            return {"node": node, "state": "subscribed", "subid": None}
        return {"node": subscription.getAttribute("node", node),
                "state": subscription.getAttribute("subscription", "subscribed"),
                "subid": subscription.getAttribute("subid")}

    async def unsubscribe(self, client: Client, service: ServiceRef, node: str,
                          subid: str | None = None) -> None:
        service_jid = self.service_jid(client, service)
        check_node(node)
        pubsub = self._pubsub()
        unsubscribe_elt = pubsub.addElement("unsubscribe")
        unsubscribe_elt["node"] = node
        unsubscribe_elt["jid"] = client.jid.userhost()
        if subid:
            unsubscribe_elt["subid"] = subid
        await self._send(client, service_jid, "set", pubsub, node)

    async def subscriptions(self, client: Client, service: ServiceRef, node: str | None = None
                            ) -> list[dict[str, Any]]:
        service_jid = self.service_jid(client, service)
        pubsub = self._pubsub()
        subscriptions_elt = pubsub.addElement("subscriptions")
        if node:
            subscriptions_elt["node"] = check_node(node)
        iq = await self._send(client, service_jid, "get", pubsub, node)
        answer = next(iq.elements(NS_PUBSUB, "pubsub"), None)
        result = []
        if answer is not None:
            for container in answer.elements(NS_PUBSUB, "subscriptions"):
                for sub in container.elements(NS_PUBSUB, "subscription"):
                    result.append({"node": sub.getAttribute("node"),
                                   "jid": sub.getAttribute("jid"),
                                   "state": sub.getAttribute("subscription"),
                                   "subid": sub.getAttribute("subid")})
        return result

    # events (called by the handler)

    @staticmethod
    def _event_service(client: Client, message: domish.Element) -> jabber_jid.JID | None:
        sender = message.getAttribute("from")
        try:
            return jabber_jid.JID(sender) if sender else client.jid.userhostJID()
        except jabber_jid.InvalidFormat:
            log.warn("ignoring a pubsub event from an invalid JID")
            return None

    async def on_event(self, client: Client, message: domish.Element) -> None:
        """Dispatch a pubsub event notification to the trigger points."""
        service = self._event_service(client, message)
        if service is None:
            return
        for action in _event_actions(message):
            node = action.getAttribute("node")
            if not node:
                log.warn("ignoring a pubsub {kind} event without node from {service}",
                         kind=action.name, service=service.full())
                continue
            trigger = self.host.trigger
            if action.name == "items":
                items = list(action.elements(NS_PUBSUB_EVENT, "item"))
                retracted = [r.getAttribute("id") for r in
                             action.elements(NS_PUBSUB_EVENT, "retract")]
                if items:
                    await trigger.async_point("XEP-0060_items", client, service, node,
                                              items, message)
                if retracted:
                    await trigger.async_point("XEP-0060_retract", client, service, node,
                                              [i for i in retracted if i], message)
            elif action.name == "purge":
                await trigger.async_point("XEP-0060_purge", client, service, node, message)
            elif action.name == "delete":
                await trigger.async_point("XEP-0060_delete", client, service, node, message)
            elif action.name == "configuration":
                form_elt = next(action.elements(data_form.NS_X_DATA, "x"), None)
                options = (form_values(data_form.Form.fromElement(form_elt))
                           if form_elt is not None else None)
                await trigger.async_point("XEP-0060_configuration", client, service, node,
                                          options, message)

    async def on_items_burst(self, client: Client, messages: list[domish.Element]) -> None:
        """Dispatch notifications of new items of one node as one ``XEP-0060_items``.

        ``messages`` are plain item notifications (see :func:`items_notification`) of
        the same service and node, in the order they came, no item id repeated; the
        trigger gets all their items, and the last message.  A burst of notifications
        then costs the cache one database transaction, not one each.
        """
        service = self._event_service(client, messages[0])
        if service is None:
            return
        items: list[domish.Element] = []
        for message in messages:
            action = _event_actions(message)[0]
            items.extend(action.elements(NS_PUBSUB_EVENT, "item"))
        node = _event_actions(messages[0])[0].getAttribute("node")
        await self.host.trigger.async_point("XEP-0060_items", client, service, node,
                                            items, messages[-1])

    # bridge

    def _register_bridge(self) -> None:
        bridge = self.host.bridge
        for name in ("get", "publish", "retract", "node_create", "node_delete",
                     "node_purge", "node_info", "node_configure", "subscribe",
                     "unsubscribe", "subscriptions"):
            bridge.register_method(f"pubsub_{name}", getattr(self, f"_bridge_{name}"))

    def _client(self, profile: str) -> Client:
        return self.host.clients.get(profile)

    async def _bridge_get(
        self, profile: str, service: str | None, node: str, max_items: int | None = None,
        item_ids: list[str] | None = None, rsm: dict[str, Any] | None = None,
        order_by: str | None = None, use_cache: bool = True,
    ) -> dict[str, Any]:
        """Get items of a node (from the cache when it is synchronised)."""
        try:
            rsm_request = RSMRequest.from_dict(rsm) if rsm else None
        except RSMError as e:
            raise InvalidRequest(str(e)) from None
        result = await self.get_items(self._client(profile), service, node, max_items,
                                      item_ids, rsm_request, order_by, use_cache)
        return result.serialise()

    async def _bridge_publish(self, profile: str, service: str | None, node: str,
                              items: list[str], options: dict[str, Any] | None = None
                              ) -> list[str]:
        """Publish items given as XML text (``<item/>`` or a bare payload)."""
        if not isinstance(items, list) or not all(isinstance(t, str) for t in items):
            raise InvalidRequest("items must be a list of XML texts")
        elements = []
        for text in items:
            try:
                element = parse_xml(text)
            except XMLError as e:
                raise InvalidRequest(str(e)) from None
            if element.name != "item":
                item = domish.Element((NS_PUBSUB, "item"))
                item.addChild(element)
                element = item
            elements.append(element)
        return await self.publish(self._client(profile), service, node, elements, options)

    async def _bridge_retract(self, profile: str, service: str | None, node: str,
                              item_ids: list[str], notify: bool = True) -> None:
        """Retract items."""
        await self.retract_items(self._client(profile), service, node, item_ids, notify)

    async def _bridge_node_create(self, profile: str, service: str | None,
                                  node: str | None = None,
                                  options: dict[str, Any] | None = None) -> str:
        """Create a node."""
        return await self.create_node(self._client(profile), service, node, options)

    async def _bridge_node_delete(self, profile: str, service: str | None, node: str) -> None:
        """Delete a node."""
        await self.delete_node(self._client(profile), service, node)

    async def _bridge_node_purge(self, profile: str, service: str | None, node: str) -> None:
        """Retract every item of a node."""
        await self.purge_node(self._client(profile), service, node)

    async def _bridge_node_info(self, profile: str, service: str | None, node: str
                                ) -> dict[str, Any]:
        """Node metadata (service discovery) and, if allowed, its configuration."""
        client = self._client(profile)
        info = await self.get_node_metadata(client, service, node)
        try:
            info["configuration"] = await self.get_node_configuration(client, service, node)
        except PubsubError as e:
            info["configuration"] = None
            info["configuration_error"] = e.condition
        return info

    async def _bridge_node_configure(self, profile: str, service: str | None, node: str,
                                     options: dict[str, Any]) -> None:
        """Change a node's configuration."""
        await self.configure_node(self._client(profile), service, node, options)

    async def _bridge_subscribe(self, profile: str, service: str | None, node: str,
                                options: dict[str, Any] | None = None) -> dict[str, Any]:
        """Subscribe the profile to a node."""
        return await self.subscribe(self._client(profile), service, node, options)

    async def _bridge_unsubscribe(self, profile: str, service: str | None, node: str,
                                  subid: str | None = None) -> None:
        """Unsubscribe the profile from a node."""
        await self.unsubscribe(self._client(profile), service, node, subid)

    async def _bridge_subscriptions(self, profile: str, service: str | None,
                                    node: str | None = None) -> list[dict[str, Any]]:
        """The profile's subscriptions on a service."""
        return await self.subscriptions(self._client(profile), service, node)


class PubsubHandler(XMPPHandler):
    """Receives pubsub event notifications for one profile."""

    def __init__(self, plugin: XEP_0060, client: Client) -> None:
        super().__init__()
        self.plugin = plugin
        self.client = client
        # events are handled one after the other, in the order they came: a retraction
        # must not overtake the publication it retracts
        self._queue: deque[domish.Element] = deque()
        self._draining = False
        # reading from the server held while the queue is long (see MAX_BACKLOG)
        self._holding = False

    def connectionInitialized(self) -> None:  # noqa: N802 (Wokkel API)
        self.xmlstream.addObserver(
            f'/message/event[@xmlns="{NS_PUBSUB_EVENT}"]', self._on_event
        )
        # services send notifications to the subscribed bare JID, which servers
        # deliver only to available resources: without an initial presence, no event
        # would ever arrive (measured on Prosody and ejabberd)
        self.send(domish.Element((None, "presence")))

    def _on_event(self, message: domish.Element) -> None:
        if message.getAttribute("type") == "error":
            return
        message.handled = True
        self._queue.append(message)
        if len(self._queue) >= MAX_BACKLOG:
            self._hold_reading(True)
        if not self._draining:
            self._draining = True
            d = defer.ensureDeferred(self._drain())
            d.addErrback(lambda f: log.failure("error while handling pubsub events", f))

    async def _drain(self) -> None:
        """Handle the queued events; new items of a node queued in a row go together."""
        try:
            while self._queue:
                burst = self._next_burst()
                if len(self._queue) <= MAX_BACKLOG // 2:
                    self._hold_reading(False)
                try:
                    if len(burst) == 1:
                        await self.plugin.on_event(self.client, burst[0])
                    else:
                        await self.plugin.on_items_burst(self.client, burst)
                except Exception:
                    log.failure("error while handling a pubsub event")
        finally:
            self._draining = False
            self._hold_reading(False)

    def _hold_reading(self, hold: bool) -> None:
        """Stop or resume reading the stream (a client without flow control reads on)."""
        hold_reading = getattr(self.client, "hold_reading", None)
        if hold != self._holding and hold_reading is not None:
            self._holding = hold
            hold_reading(hold)

    def _next_burst(self) -> list[domish.Element]:
        first = self._queue.popleft()
        key = items_notification(first)
        burst = [first]
        if key is None:
            return burst
        source, seen = key[:2], set(key[2])
        while self._queue and len(burst) < MAX_BURST:
            following = items_notification(self._queue[0])
            # an id seen again ends the burst: each notification of it is handled on
            # its own, as the first one sets the item's creation time
            if following is None or following[:2] != source or seen & following[2]:
                break
            seen.update(following[2])
            burst.append(self._queue.popleft())
        return burst


#: item notifications handled together at most (bounds a transaction and a delay)
MAX_BURST = 500
#: notifications waiting to be handled beyond which the stream is not read any more,
#: until half of them are handled: a server notifying faster than the backend handles
#: makes its own queue grow, not the backend's memory
MAX_BACKLOG = MAX_BURST


def _event_actions(message: domish.Element) -> list[domish.Element]:
    event = next(message.elements(NS_PUBSUB_EVENT, "event"), None)
    if event is None:
        return []
    return [a for a in event.elements() if a.uri == NS_PUBSUB_EVENT]


def items_notification(message: domish.Element
                       ) -> tuple[str | None, str, frozenset[str]] | None:
    """``(sender, node, item ids)`` of a plain notification of new items, else None.

    Plain: one ``<items/>`` of a named node holding ``<item/>`` elements only, each
    with its own id (no retraction, nothing else in the event).
    """
    actions = _event_actions(message)
    if len(actions) != 1 or actions[0].name != "items":
        return None
    node = actions[0].getAttribute("node")
    ids = []
    for child in actions[0].elements():
        if child.uri != NS_PUBSUB_EVENT or child.name != "item":
            return None
        ids.append(child.getAttribute("id"))
    if not node or not ids or None in ids or len(set(ids)) < len(ids):
        return None
    return message.getAttribute("from"), node, frozenset(ids)
